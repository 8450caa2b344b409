"""The quadratic model's ``--problem-file``: L (n,d,d) and b (n,d) from an .npz or an .h5
(top level, or ``/problem`` as every ist run file stores it), checked before a run starts.

Shapes and dtypes are checked from the file's headers before a byte of the arrays is read,
so a file that declares a huge array is refused without allocating it."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ist_cli.data.files import existing_file
from ist_cli.errors import UserError, shown

EXPECTS = "an .npz or .h5 file with arrays L (n,d,d) and b (n,d)"


def _declared_shapes(L_shape: tuple[int, ...], b_shape: tuple[int, ...], n_clients: int, dim: int, where: str) -> None:
    """Refuse wrong shapes from the file's headers, before the arrays are read."""
    if len(L_shape) != 3 or L_shape[1] != L_shape[2] or tuple(b_shape) != tuple(L_shape[:2]):
        raise UserError(f"{where} has L{tuple(L_shape)}, b{tuple(b_shape)}; expected L (n,d,d) and b (n,d)")
    if L_shape[0] != n_clients:
        raise UserError(f"{where} holds {L_shape[0]} clients; expected --workers {L_shape[0]}")
    if L_shape[1] != dim:
        raise UserError(f"--dim: {dim} does not match the problem file's dimension {L_shape[1]}; "
                        f"expected --dim {L_shape[1]}")


def _read_h5(path: Path, n_clients: int, dim: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as handle:
        group: Any = handle["problem"] if "problem" in handle else handle
        L, b = group["L"], group["b"]
        for name, node in (("L", L), ("b", b)):
            if not isinstance(node, h5py.Dataset) or node.dtype.kind not in "biuf":
                raise UserError(f"{where}: {name!r} is not a numeric array; expected {EXPECTS}")
        _declared_shapes(L.shape, b.shape, n_clients, dim, where)
        return np.asarray(L[()], dtype=np.float64), np.asarray(b[()], dtype=np.float64)


def _npz_member_shape(archive: Any, name: str, where: str) -> tuple[int, ...]:
    """Shape of ``name`` in an .npz from its .npy header, without reading the array."""
    with archive.zip.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(member)
    if dtype.kind not in "biuf":
        raise UserError(f"{where}: {name!r} has dtype {dtype}; expected {EXPECTS}")
    return shape


def _read_npz(path: Path, n_clients: int, dim: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    loaded = np.load(path, allow_pickle=False, mmap_mode="r")
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise UserError(f"{where} is a single array, not an archive; expected {EXPECTS}")
    with loaded as data:
        if "L" not in data.files or "b" not in data.files:
            raise KeyError("L")
        _declared_shapes(_npz_member_shape(data, "L", where), _npz_member_shape(data, "b", where), n_clients, dim,
                         where)
        return np.asarray(data["L"], dtype=np.float64), np.asarray(data["b"], dtype=np.float64)


def load_problem_file(text: str | Path, n_clients: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """L (n,d,d) and b (n,d), float64, C order, checked (symmetric L_i, positive definite mean)."""
    path = existing_file(str(text), "--problem-file", EXPECTS)
    where = f"--problem-file: {shown(str(path))}"
    try:
        if path.suffix in (".h5", ".hdf5"):
            L, b = _read_h5(path, n_clients, dim, where)
        else:
            L, b = _read_npz(path, n_clients, dim, where)
    except KeyError:
        raise UserError(f"{where} has no arrays 'L' and 'b'; expected {EXPECTS}") from None
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{where} cannot be read ({shown(reason)[1:-1]}); expected {EXPECTS}") from None
    if not (np.isfinite(L).all() and np.isfinite(b).all()):
        raise UserError(f"{where} contains NaN or inf")
    if not np.allclose(L, np.transpose(L, (0, 2, 1)), atol=1e-10):
        raise UserError(f"{where} has non-symmetric L_i; expected symmetric matrices")
    try:
        np.linalg.cholesky(L.mean(axis=0))
    except np.linalg.LinAlgError:
        raise UserError(f"{where} has a singular mean L; expected it positive definite") from None
    return np.ascontiguousarray(L), np.ascontiguousarray(b)
