"""Workers compute with one BLAS/numba thread each: the environment that says so.

Kept free of numpy imports: it must be applied before numpy is first imported.
"""

SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
}
