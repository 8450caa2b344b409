"""Turn a dataset spec (``digits``, ``synthetic``, ``mnist1d[:N]``, ``npz:PATH``, ``mnist:DIR``, ``libsvm:PATH``,
``fashion-mnist[:DIR]``, ``cifar10:DIR``) into a Dataset: the one entry point the run and sweep code need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ist_cli.data import synthetic
from ist_cli.data.dataset import Dataset, with_validation
from ist_cli.data.plugins import load_plugin_dataset, plugin_datasets
from ist_cli.errors import UserError

if TYPE_CHECKING:
    from ist_cli.settings import MLPSettings

EXPECTS = "digits, synthetic, npz:PATH, mnist:DIR, libsvm:PATH, mnist1d[:N], fashion-mnist[:DIR] or cifar10:DIR"


def load_dataset(spec: str, *, seed: int, dtype: str = "float32", synthetic_samples: int = synthetic.SAMPLES,
                 synthetic_features: int = synthetic.FEATURES, synthetic_classes: int = synthetic.CLASSES) -> Dataset:
    """Load and standardise the dataset named by ``spec``.

    Only ``synthetic`` depends on ``seed`` (its teacher and samples); every other source,
    including its train/test split, is the same for all seeds.
    """
    spec = str(spec).strip()
    kind, colon, arg = spec.partition(":")
    if spec in plugin_datasets():
        return load_plugin_dataset(spec, seed=seed, dtype=dtype)
    if spec == "digits":
        from ist_cli.data.digits import load_digits_dataset

        return load_digits_dataset(dtype=dtype)
    if spec == "synthetic":
        from ist_cli.data.synthetic import load_synthetic

        return load_synthetic(seed=seed, dtype=dtype, samples=synthetic_samples, features=synthetic_features,
                              classes=synthetic_classes)
    if kind == "mnist1d":
        from ist_cli.data.mnist1d import load_mnist1d, parse_samples

        return load_mnist1d(parse_samples(arg.strip()), dtype=dtype)
    if spec == "fashion-mnist":
        from ist_cli.data.fashion_mnist import load_fashion_mnist

        return load_fashion_mnist(dtype=dtype)
    if colon and arg.strip():
        if kind == "npz":
            from ist_cli.data.npz import load_npz

            return load_npz(arg, dtype=dtype)
        if kind == "mnist":
            from ist_cli.data.idx import load_idx_dir

            return load_idx_dir(arg, dtype=dtype)
        if kind == "fashion-mnist":
            from ist_cli.data.fashion_mnist import load_fashion_mnist

            return load_fashion_mnist(arg, dtype=dtype)
        if kind == "cifar10":
            from ist_cli.data.cifar10 import load_cifar10

            return load_cifar10(arg, dtype=dtype)
        if kind == "libsvm":
            from ist_cli.data.libsvm import load_libsvm

            return load_libsvm(arg, dtype=dtype)
    raise UserError(f"--dataset: {spec!r} is not allowed; expected {EXPECTS}")


#: (spec, dtype, validation fraction) -> a data set loaded ahead by ``keep_dataset``
_KEPT: dict[tuple[str, str, float], Dataset] = {}
#: sources whose data and splits do not depend on the seed (a plug-in's loader is given one)
SEED_FREE = ("digits",)


def keep_dataset(what: str) -> None:
    """Load ``SPEC[,DTYPE[,FRACTION]]`` (float32, no validation set unless named) now and keep it:
    the runs a warm trial process forks copy it instead of loading, splitting and standardising
    it again (and the copy is the same bytes). Only a source that ``SEED_FREE`` names."""
    parts = what.split(",")
    spec, dtype, fraction = parts[0], parts[1] if len(parts) > 1 else "float32", parts[2] if len(parts) > 2 else "0"
    if spec not in SEED_FREE:
        raise ValueError(f"{spec!r} depends on the seed; only {', '.join(SEED_FREE)} can be kept")
    data = with_validation(load_dataset(spec, seed=0, dtype=dtype), float(fraction))
    _KEPT[spec, dtype, float(fraction)] = data


def _copy(data: Dataset) -> Dataset:
    """``data`` with its own copies of the arrays (a run may not change the kept ones)."""
    return replace(data, **{f.name: getattr(data, f.name).copy() for f in fields(data)
                            if isinstance(getattr(data, f.name), np.ndarray)})


def dataset_from_settings(settings: MLPSettings) -> Dataset:
    """The dataset of a run's settings, with its validation split if one is asked for; also
    checks every worker can get a training sample."""
    kept = _KEPT.get((settings.dataset, settings.dtype, float(settings.validation_fraction)))
    if kept is not None:
        data = _copy(kept)
    else:
        data = load_dataset(
            settings.dataset,
            seed=settings.seed,
            dtype=settings.dtype,
            synthetic_samples=settings.synthetic_samples,
            synthetic_features=settings.synthetic_features,
            synthetic_classes=settings.synthetic_classes,
        )
        data = with_validation(data, settings.validation_fraction)
    if data.n_train < settings.workers:
        raise UserError(
            f"--workers: {settings.workers} workers but dataset {settings.dataset!r} has only {data.n_train} "
            f"training samples; expected at most {data.n_train} workers"
        )
    return data


def dataset_from_config(config: Mapping[str, Any]) -> Dataset:
    """The dataset of a resolved MLP config (see ``dataset_from_settings``)."""
    from ist_cli.config import settings_from_config

    return dataset_from_settings(settings_from_config(config))  # type: ignore[arg-type]
