"""A seeded teacher-network classification problem of any size.

Labels are the argmax of a random two-layer ReLU network applied to Gaussian inputs, so the
task is exactly learnable by an MLP at least as wide as the teacher, but not by a linear
model: a controlled stand-in for real data when studying scaling.
"""

from __future__ import annotations

import numpy as np

from ist_cli.data.dataset import TEST_FRACTION, Dataset, build, check_dtype, chunk_rows
from ist_cli.errors import UserError
from ist_cli.seeding import stream

TEACHER_HIDDEN = 128
# Samples used to centre and scale the teacher's logits so classes come out roughly balanced.
CALIBRATION_SAMPLES = 4096


def teacher(features: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weights (W1, b1, W2, b2) of the random teacher, float64, calibrated for balanced classes.

    Raw argmax labels of a random net are often dominated by one or two classes; the output
    bias and scale are set so that every logit has mean 0 and std 1 on fresh Gaussian inputs.
    """
    rng = stream(seed, "data-synthetic", 0)
    W1 = rng.standard_normal((features, TEACHER_HIDDEN)) / np.sqrt(features)
    b1 = 0.1 * rng.standard_normal(TEACHER_HIDDEN)
    W2 = rng.standard_normal((TEACHER_HIDDEN, classes)) / np.sqrt(TEACHER_HIDDEN)
    probe = np.maximum(rng.standard_normal((CALIBRATION_SAMPLES, features)) @ W1 + b1, 0.0) @ W2
    scale = 1.0 / np.maximum(probe.std(axis=0), 1e-12)
    return W1, b1, W2 * scale, -probe.mean(axis=0) * scale


SAMPLES, FEATURES, CLASSES = 20000, 64, 10  # the defaults of --synthetic-samples/-features/-classes


def make_synthetic(samples: int, features: int, classes: int, seed: int, *, dtype: str = "float32",
                   label_noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Raw inputs X ~ N(0, I) of ``dtype`` and teacher labels; ``label_noise`` of them redrawn uniformly.

    Generated in row chunks straight into the output array, so 400k x 128 float32 (200 MB)
    needs no full-size temporaries.
    """
    np_dtype = check_dtype(dtype)
    W1, b1, W2, b2 = teacher(features, classes, seed)
    rng = stream(seed, "data-synthetic", 1)
    X = np.empty((samples, features), dtype=np_dtype)
    y = np.empty(samples, dtype=np.int64)
    # Drawn and labelled in float64 whatever the dtype, so float32 and float64 runs share a problem.
    rows = chunk_rows(max(features, TEACHER_HIDDEN))
    for start in range(0, samples, rows):
        block = rng.standard_normal((min(rows, samples - start), features))
        X[start : start + block.shape[0]] = block
        y[start : start + block.shape[0]] = np.argmax(np.maximum(block @ W1 + b1, 0) @ W2 + b2, axis=1)
    if label_noise > 0:
        noise = stream(seed, "data-synthetic", 2)
        flip = np.flatnonzero(noise.random(samples) < label_noise)
        y[flip] = noise.integers(0, classes, size=flip.size)
    return X, y


def load_synthetic(*, seed: int, dtype: str = "float32", samples: int = SAMPLES, features: int = FEATURES,
                   classes: int = CLASSES, label_noise: float = 0.0) -> Dataset:
    """The synthetic dataset of ``seed``: the first 80% of rows train, the last 20% test.

    Rows are i.i.d., so a prefix split is as good as a shuffled one and needs no copy.
    """
    where = "dataset 'synthetic'"
    if samples < 2 or features < 1 or classes < 2:
        raise UserError(
            f"{where}: samples={samples}, features={features}, classes={classes}; "
            "expected samples >= 2, features >= 1, classes >= 2"
        )
    if not 0.0 <= label_noise <= 1.0:
        raise UserError(f"{where}: label_noise={label_noise}; expected a number in [0, 1]")
    X, y = make_synthetic(samples, features, classes, seed, dtype=dtype, label_noise=label_noise)
    n_test = max(1, int(round(TEST_FRACTION * samples)))
    n_train = samples - n_test
    return build("synthetic", X[:n_train], y[:n_train], X[n_train:], y[n_train:], where=where, dtype=dtype,
                 n_classes=classes)
