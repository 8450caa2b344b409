"""The quadratic model's ``--problem-file``: L (n,d,d) and b (n,d) from an .npz or an .h5
(top level, or ``/problem`` as every ist run file stores it), checked before a run starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ist_cli.data.files import existing_file
from ist_cli.errors import UserError

EXPECTS = "an .npz or .h5 file with L and b"


def load_problem_file(text: str | Path, n_clients: int) -> tuple[np.ndarray, np.ndarray]:
    """L (n,d,d) and b (n,d), float64, C order, checked (symmetric L_i, positive definite mean)."""
    path = existing_file(str(text), "--problem-file", EXPECTS)
    try:
        if path.suffix in (".h5", ".hdf5"):
            with h5py.File(path, "r") as handle:
                group: Any = handle["problem"] if "problem" in handle else handle
                L, b = np.asarray(group["L"][()], dtype=np.float64), np.asarray(group["b"][()], dtype=np.float64)
        else:
            with np.load(path) as data:
                L, b = np.asarray(data["L"], dtype=np.float64), np.asarray(data["b"], dtype=np.float64)
    except KeyError:
        raise UserError(f"--problem-file: {str(path)!r} has no arrays 'L' and 'b'") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"--problem-file: {str(path)!r} cannot be read ({exc})") from None
    if L.ndim != 3 or L.shape[1] != L.shape[2] or b.shape != L.shape[:2]:
        raise UserError(f"--problem-file: {str(path)!r} has L{L.shape}, b{b.shape}; expected L (n,d,d) and b (n,d)")
    if L.shape[0] != n_clients:
        raise UserError(f"--problem-file: {str(path)!r} holds {L.shape[0]} clients; expected --workers {L.shape[0]}")
    if not (np.isfinite(L).all() and np.isfinite(b).all()):
        raise UserError(f"--problem-file: {str(path)!r} contains NaN or inf")
    if not np.allclose(L, np.transpose(L, (0, 2, 1)), atol=1e-10):
        raise UserError(f"--problem-file: {str(path)!r} has non-symmetric L_i; expected symmetric matrices")
    try:
        np.linalg.cholesky(L.mean(axis=0))
    except np.linalg.LinAlgError:
        raise UserError(f"--problem-file: {str(path)!r} has a singular mean L; expected it positive definite") from None
    return np.ascontiguousarray(L), np.ascontiguousarray(b)
