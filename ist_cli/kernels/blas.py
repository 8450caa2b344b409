"""The BLAS ``?gemm`` the kernels call: numpy's own OpenBLAS where numpy bundles one.

Kernels call two symbols by name, ``ist_sgemm64`` and ``ist_dgemm64``, with the Fortran
``?gemm`` ABI and 64-bit integers: every argument a pointer (transa, transb, m, n, k, alpha,
a, lda, b, ldb, beta, c, ldc), column-major. A name, not an address, is what a compiled
kernel holds, so the kernels stay in numba's on-disk cache; importing this module binds the
names for the process.

Which library answers: the OpenBLAS inside numpy's wheel (``scipy_sgemm_64_``, numpy 2;
``sgemm_64_`` is tried for numpy 1's, untested here) when there is one, since it is what
``np.matmul`` uses and at this project's shapes it was the faster of the two
(docs/performance.md); otherwise SciPy's BLAS through numba's ``numba_xxgemm`` (its wrapper
of ``scipy.linalg.cython_blas``), behind a compiled shim with the same ABI. ``BACKEND`` says
which one this process uses.
"""

from __future__ import annotations

import ctypes
import glob
import os

import llvmlite.binding as llvm
import numpy as np
from numba import cfunc, types

SYMBOLS = ("ist_sgemm64", "ist_dgemm64")
_NUMPY_NAMES = (("scipy_sgemm_64_", "scipy_dgemm_64_"), ("sgemm_64_", "dgemm_64_"))  # numpy 2, numpy 1 wheels


def _numpy_openblas() -> tuple[int, int] | None:
    """Addresses of sgemm/dgemm (64-bit integers) in the OpenBLAS numpy's wheel ships, or None."""
    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "*openblas64*"))):
        try:
            lib = ctypes.CDLL(path)  # numpy has loaded it already: the same handle
        except OSError:
            continue
        for single, double in _NUMPY_NAMES:
            if hasattr(lib, single) and hasattr(lib, double):
                return (ctypes.cast(getattr(lib, single), ctypes.c_void_p).value,
                        ctypes.cast(getattr(lib, double), ctypes.c_void_p).value)
    return None


# numba's wrapper of scipy.linalg.cython_blas ?gemm: (kind, transa, transb, m, n, k, &alpha, a,
# lda, b, ldb, &beta, c, ldc), integers by value.
_XXGEMM = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp, types.voidptr, types.voidptr,
    types.intp, types.voidptr, types.intp, types.voidptr, types.voidptr, types.intp))
_CHAR, _INT, _PTR = types.CPointer(types.uint8), types.CPointer(types.int64), types.voidptr
_FORTRAN_GEMM = types.void(_CHAR, _CHAR, _INT, _INT, _INT, _PTR, _PTR, _INT, _PTR, _INT, _PTR, _PTR, _INT)


def _shim(kind: int):
    """A C function with the Fortran ?gemm ABI (64-bit integers) that calls ``numba_xxgemm``."""

    def gemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        _XXGEMM(kind, transa[0], transb[0], m[0], n[0], k[0], alpha, a, lda[0], b, ldb[0], beta, c, ldc[0])

    return cfunc(_FORTRAN_GEMM, cache=False)(gemm)


_SHIMS: list = []  # compiled shims, kept alive: symbols point into them


def scipy_gemm() -> tuple[int, int]:
    """Addresses of the shims over SciPy's sgemm and dgemm (compiled on first call)."""
    if not _SHIMS:
        _SHIMS.extend((_shim(115), _shim(100)))  # 's', 'd'
    return _SHIMS[0].address, _SHIMS[1].address


def _bind() -> str:
    found = _numpy_openblas()
    backend = "numpy's OpenBLAS"
    if found is None:
        found, backend = scipy_gemm(), "SciPy's BLAS (numba_xxgemm)"
    for name, address in zip(SYMBOLS, found, strict=True):
        llvm.add_symbol(name, address)
    return backend


BACKEND = _bind()
