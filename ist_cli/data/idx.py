"""MNIST-style IDX files (raw or gzip), the format of MNIST, Fashion-MNIST and KMNIST.

An IDX file is a big-endian header ``0 0 TYPE NDIM`` followed by NDIM uint32 sizes and
the data; see http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ist_cli.data.dataset import Dataset, build, check_dtype
from ist_cli.data.files import existing_dir
from ist_cli.errors import UserError

# IDX type code -> big-endian numpy dtype.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EXPECTS = "a directory with " + ", ".join(FILES.values()) + " (each raw or .gz)"


def idx_bytes(path: Path, where: str) -> bytes:
    """The content of IDX file ``path``, decompressed if it ends in ``.gz``."""
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(f"{where}: cannot read {str(path)!r} ({exc}); expected an IDX file, raw or gzip") from None


def read_idx(path: Path, ndim: int, where: str, raw: bytes | None = None) -> np.ndarray:
    """The array stored in IDX file ``path`` (or in its already read content ``raw``); its
    rank must be ``ndim``."""
    if raw is None:
        raw = idx_bytes(path, where)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        magic = raw[:4].hex() or "empty"
        raise UserError(f"{where}: {str(path)!r} has IDX magic {magic}; expected 0000TTNN with type TT in 08..0e")
    if raw[3] != ndim:
        raise UserError(f"{where}: {str(path)!r} has {raw[3]} dimensions (magic {raw[:4].hex()}); expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{where}: {str(path)!r} is truncated inside its header; expected {header} header bytes")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise UserError(f"{where}: {str(path)!r} holds {len(raw)} bytes but its header {shape} implies {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def find(directory: Path, stem: str, where: str) -> Path:
    """``stem`` in ``directory``, raw or ``.gz``, also under the ``train-images.idx3-ubyte`` spelling."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise UserError(f"{where}: {str(directory / stem)!r} (or .gz) does not exist; expected {EXPECTS}")


def load_idx_dir(directory: str, *, dtype: str = "float32") -> Dataset:
    """The four MNIST files of ``directory``: pixels scaled to [0, 1], then standardised."""
    where = f"dataset {'mnist:' + directory!r}"
    folder = existing_dir(directory, where, EXPECTS)
    arrays = {key: read_idx(find(folder, stem, where), 1 if "labels" in key else 3, where) for key, stem in FILES.items()}
    return idx_dataset(f"mnist:{folder.name}", arrays, where=where, dtype=dtype)


def idx_dataset(name: str, arrays: dict[str, np.ndarray], *, where: str, dtype: str,
                n_classes: int | None = None) -> Dataset:
    """A Dataset of the four IDX arrays (keys of ``FILES``): uint8 pixels scaled to [0, 1],
    grey images of shape (1, H, W), standardised with the training set's one pixel mean/std."""
    np_dtype = check_dtype(dtype)
    images = {}
    for key in ("train_images", "test_images"):
        pixels = arrays[key]
        images[key] = pixels.astype(np_dtype)  # cast first: no float64 copy of a float32 run's data
        if pixels.dtype == np.uint8:
            images[key] /= 255.0
    height, width = (int(size) for size in arrays["train_images"].shape[1:])
    if arrays["test_images"].shape[1:] != (height, width):
        raise UserError(f"{where}: training images are {height}x{width} but test images are "
                        f"{'x'.join(map(str, arrays['test_images'].shape[1:]))}; expected the same size")
    return build(name, images["train_images"], arrays["train_labels"], images["test_images"], arrays["test_labels"],
                 where=where, dtype=dtype, n_classes=n_classes, image_shape=(1, height, width))
