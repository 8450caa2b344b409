"""Pre-split data from a NumPy ``.npz`` archive: the simplest way to bring your own data."""

from __future__ import annotations

import zipfile

import numpy as np

from ist_cli.data.dataset import Dataset, build
from ist_cli.data.files import existing_file
from ist_cli.errors import UserError

KEYS = ("X_train", "y_train", "X_test", "y_test")
EXPECTS = "an .npz with arrays X_train, y_train, X_test, y_test (optional n_classes)"


def load_npz(path: str, *, dtype: str = "float32") -> Dataset:
    """Arrays ``X_train (n, ...)``, ``y_train (n,)``, ``X_test``, ``y_test``; extra axes of X are flattened.

    An optional scalar ``n_classes`` declares K when the largest class is absent from the data.
    """
    where = f"dataset {'npz:' + path!r}"
    file = existing_file(path, where, EXPECTS)
    try:
        loaded = np.load(file, allow_pickle=False, mmap_mode="r")
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise UserError(f"{where}: a single array, not an archive; expected {EXPECTS}")
        with loaded as archive:
            missing = [key for key in KEYS if key not in archive.files]
            if missing:
                raise UserError(f"{where}: the archive lacks {', '.join(missing)}; expected {EXPECTS}")
            arrays = {key: archive[key] for key in KEYS}
            declared = archive["n_classes"] if "n_classes" in archive.files else None
    except UserError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{where}: not a readable .npz ({reason}); expected {EXPECTS}") from None
    n_classes = None
    if declared is not None:
        if declared.ndim != 0 or not np.issubdtype(declared.dtype, np.integer):
            raise UserError(f"{where}: n_classes is {declared!r}; expected an integer scalar")
        n_classes = int(declared)
        limit = max(2, int(arrays["y_train"].shape[0]))
        if n_classes > limit:  # it sizes the output layer: an absurd one is refused, not allocated
            raise UserError(f"{where}: n_classes = {n_classes} exceeds the {limit} training samples; "
                            f"expected 2..{limit}")
    return build(f"npz:{file.name}", arrays["X_train"], arrays["y_train"], arrays["X_test"], arrays["y_test"],
                 where=where, dtype=dtype, n_classes=n_classes)
