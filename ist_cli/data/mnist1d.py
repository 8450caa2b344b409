"""MNIST-1D (Greydanus 2020): ten 1-D digit templates, padded, translated, scaled, sheared and
noised into 40-point signals by the ``mnist1d`` package's own generator, offline.

``make_dataset`` seeds Python's and NumPy's *global* generators; their state is restored
afterwards so generating the data does not perturb anything else in the process.
"""

from __future__ import annotations

import random

import numpy as np

from ist_cli.data.dataset import Dataset, build
from ist_cli.errors import UserError, install_hint

DEFAULT_SAMPLES = 5000  # the package's default: 4000 train / 1000 test
GENERATOR_SEED = 42  # the package's default seed: ``mnist1d`` is the published dataset's recipe
MIN_SAMPLES = 100
MAX_SAMPLES = 1_000_000  # about 0.5 ms per sample to generate; 320 MB of float64 at the cap
EXPECTS = f"mnist1d or mnist1d:N with N an integer in {MIN_SAMPLES}..{MAX_SAMPLES}"


def parse_samples(arg: str) -> int:
    """N of ``mnist1d:N`` (total samples, 80% train) or a UserError."""
    if not arg:
        return DEFAULT_SAMPLES
    try:
        samples = int(arg)
    except ValueError:
        samples = -1
    if not MIN_SAMPLES <= samples <= MAX_SAMPLES:
        raise UserError(f"--dataset: 'mnist1d:{arg}' is not allowed; expected {EXPECTS}")
    return samples


def load_mnist1d(samples: int = DEFAULT_SAMPLES, *, dtype: str = "float32") -> Dataset:
    """``samples`` signals of 40 points, 10 classes, split 80/20 by the generator itself."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise UserError(f"--dataset mnist1d: the mnist1d package is not installed; expected the data extra: "
                        f"{install_hint('data')}") from None

    args = get_dataset_args()
    args.num_samples = int(samples)
    args.seed = GENERATOR_SEED
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    name = "mnist1d" if samples == DEFAULT_SAMPLES else f"mnist1d:{samples}"
    return build(name, data["x"], data["y"], data["x_test"], data["y_test"], where=f"dataset {name!r}",
                 dtype=dtype, n_classes=10)
