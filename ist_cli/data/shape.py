"""The shape of a data set named by a config, known before it is loaded (memory estimates)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ist_cli.data import cifar10, digits, fashion_mnist, mnist1d

#: (features, classes) of mnist1d (its samples are ``mnist1d:N``)
MNIST1D_SHAPE = (40, 10)


def dataset_shape(config: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(samples, features, classes, bytes of the raw source) as far as the config tells.

    A data set read from a file is counted at the size of its file on disk: its real shape is
    known only once it is read (samples 0, features 1, classes 2 stand in)."""
    spec = str(config.get("dataset", "digits"))
    if spec == "digits":
        return (*digits.SHAPE, 0)
    if spec == "synthetic":
        return int(config["synthetic_samples"]), int(config["synthetic_features"]), int(config["synthetic_classes"]), 0
    if spec.split(":")[0] == "mnist1d":
        _, _, count = spec.partition(":")
        samples = int(count) if count.isdigit() else mnist1d.DEFAULT_SAMPLES
        return samples, *MNIST1D_SHAPE, 8 * samples * MNIST1D_SHAPE[0]  # generated in float64
    kind, _, argument = spec.partition(":")
    if kind == "fashion-mnist":
        return (*fashion_mnist.SHAPE, fashion_mnist.RAW_BYTES)  # checked files: their size is known
    if kind == "cifar10":
        return (*cifar10.SHAPE, cifar10.SHAPE[0] * cifar10.RECORD)
    if not argument:
        return 0, 1, 2, 0  # a plug-in's data set (ist_cli.data.plugins): its shape is known once loaded
    return 0, 1, 2, _size_on_disk(Path(argument).expanduser())


def _size_on_disk(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0
