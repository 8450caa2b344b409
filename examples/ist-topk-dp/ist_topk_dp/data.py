"""A data set plug-in: Gaussian blobs, one per class, drawn from the run's seed (numpy only)."""

from __future__ import annotations

import numpy as np

from ist_cli.data import Dataset

CLASSES, FEATURES, TRAIN, TEST = 4, 16, 512, 256


def blobs(*, seed: int, dtype: str) -> Dataset:
    """``CLASSES`` unit-variance blobs in ``FEATURES`` dimensions, centres 3 apart on average."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3 / np.sqrt(2 * FEATURES), size=(CLASSES, FEATURES)) * np.sqrt(FEATURES)
    y = rng.integers(CLASSES, size=TRAIN + TEST)
    X = (centres[y] + rng.normal(size=(TRAIN + TEST, FEATURES))).astype(dtype)
    return Dataset(name="blobs", X_train=X[:TRAIN], y_train=y[:TRAIN].astype(np.int64), X_test=X[TRAIN:],
                   y_test=y[TRAIN:].astype(np.int64), n_classes=CLASSES)
