"""scikit-learn's bundled 8x8 handwritten digits: a small real dataset that needs no network."""

from __future__ import annotations

from ist_cli.data.dataset import Dataset, build, stratified_split


def load_digits_dataset(*, dtype: str = "float32") -> Dataset:
    """1797 samples, 64 features, 10 classes; a fixed stratified 80/20 split (seed-independent)."""
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

    bunch = load_digits()
    X, y = bunch.data, bunch.target
    train, test = stratified_split(y)
    return build("digits", X[train], y[train], X[test], y[test], where="dataset 'digits'", dtype=dtype, n_classes=10)
