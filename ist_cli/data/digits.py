"""scikit-learn's bundled 8x8 handwritten digits: a small real dataset that needs no network."""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np

from ist_cli.data.dataset import Dataset, build, stratified_split

#: (samples, features, classes) of the data set
SHAPE = (1797, 64, 10)

BUNDLED = ("datasets", "data", "digits.csv.gz")  # where scikit-learn ships the digits, inside its package


def bundled_digits_file() -> Path | None:
    """scikit-learn's own copy of the digits, found without importing scikit-learn (which
    takes longer than a whole default run's rounds); None if this scikit-learn has none."""
    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root).joinpath(*BUNDLED)
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(X float64 (1797, 64), y int (1797,)), read-only: what ``sklearn.datasets.load_digits``
    returns, read from the same file the same way (``tests/test_data.py`` compares them).
    Parsed once per process: a sweep's warm trial process parses it before it forks trials."""
    path = bundled_digits_file()
    if path is None:
        from sklearn.datasets import load_digits  # a scikit-learn that stores its digits elsewhere

        bunch = load_digits()
        X, y = bunch.data, bunch.target
    else:
        with gzip.open(path, "rt", encoding="utf-8") as text:
            table = np.loadtxt(text, delimiter=",")
        X, y = table[:, :-1], table[:, -1].astype(int, copy=False)
    for array in (X, y):
        array.setflags(write=False)
    return X, y


def load_digits_dataset(*, dtype: str = "float32") -> Dataset:
    """``SHAPE``: 1797 samples, 64 features, 10 classes; a fixed stratified 80/20 split (seed-independent)."""
    X, y = digits_arrays()
    train, test = stratified_split(y)
    return build("digits", X[train], y[train], X[test], y[test], where="dataset 'digits'", dtype=dtype, n_classes=SHAPE[2])
