"""Small generated image sets in MNIST's IDX format (``--dataset mnist:DIR``) for convnet runs:
each class a bright block at its own place on noise, so a few steps already learn something."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.test_data import idx_bytes


def images(count: int, side: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(count) % 10
    pixels = rng.integers(0, 90, size=(count, side, side))
    step = max(1, (side - 4) // 3)
    for k, label in enumerate(labels):
        top, left = (label // 4) * step, (label % 4) * step
        pixels[k, top : top + 4, left : left + 4] += 160
    return pixels.clip(0, 255), labels


def write_image_set(directory: Path, *, train: int = 240, test: int = 60, side: int = 16, seed: int = 0) -> str:
    """Write the four IDX files into ``directory``; returns the ``--dataset`` spec."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = images(train, side, rng)
    test_x, test_y = images(test, side, rng)
    for name, array in (("train-images-idx3-ubyte", train_x), ("train-labels-idx1-ubyte", train_y),
                        ("t10k-images-idx3-ubyte", test_x), ("t10k-labels-idx1-ubyte", test_y)):
        (directory / name).write_bytes(idx_bytes(array))
    return f"mnist:{directory}"
