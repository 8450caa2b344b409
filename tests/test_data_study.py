"""Data for the batch-size study: MNIST-1D generated offline, and the validation split."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ist_cli.data import dataset_from_config, load_dataset
from ist_cli.data.dataset import SPLIT_SEED, stratified_split
from ist_cli.errors import UserError


def test_mnist1d_is_generated_offline_deterministically_and_leaves_global_rngs_alone():
    np.random.seed(123)
    random.seed(123)
    before = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    first = load_dataset("mnist1d:500", seed=0, dtype="float64")
    assert (np.random.random(), random.random()) == before  # the generator's global seeding was undone
    second = load_dataset("mnist1d:500", seed=7, dtype="float64")  # the run's seed does not change the data
    np.testing.assert_array_equal(first.X_train, second.X_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert (first.n_train, first.n_test, first.n_features, first.n_classes) == (400, 100, 40, 10)
    assert set(np.unique(first.y_train)) == set(range(10))
    np.testing.assert_allclose(first.X_train.mean(axis=0), 0.0, atol=1e-12)


def test_mnist1d_default_size_is_the_packages_4000_1000_split():
    data = load_dataset("mnist1d", seed=0, dtype="float32")
    assert (data.n_train, data.n_test, data.n_features) == (4000, 1000, 40)
    assert np.bincount(data.y_train).min() > 300  # roughly balanced


@pytest.mark.parametrize("spec", ["mnist1d:5", "mnist1d:x", "mnist1d:99999999"])
def test_mnist1d_bad_size(spec):
    with pytest.raises(UserError) as info:
        load_dataset(spec, seed=0)
    assert spec in str(info.value) and "100..1000000" in str(info.value)


def config(**extra):
    return {"model": "mlp", "algorithm": "ist", "dataset": "digits", "seed": 0, "dtype": "float64", "workers": 2,
            **extra}


def test_validation_split_is_stratified_seeded_and_standardised_on_the_rest():
    plain = dataset_from_config(config())
    data = dataset_from_config(config(validation_fraction=0.1))
    again = dataset_from_config(config(validation_fraction=0.1, seed=5))  # fixed split seed: same rows
    np.testing.assert_array_equal(data.X_val, again.X_val)
    assert data.n_train + data.n_val == plain.n_train and data.n_test == plain.n_test
    counts = np.bincount(plain.y_train)
    np.testing.assert_array_equal(np.bincount(data.y_val, minlength=10), np.round(0.1 * counts).astype(int))
    # the same rows as the seeded split, re-standardised with the remaining rows' statistics
    train, val = stratified_split(plain.y_train, 0.1, SPLIT_SEED, purpose="validation-split")
    np.testing.assert_array_equal(data.y_val, plain.y_train[val])
    np.testing.assert_array_equal(data.y_train, plain.y_train[train])
    mean, std = plain.X_train[train].mean(axis=0), plain.X_train[train].std(axis=0)
    std = np.where(std > 1e-7, std, np.inf)  # constant columns become 0
    np.testing.assert_allclose(data.X_val, (plain.X_train[val] - mean) / std, atol=1e-10)
    np.testing.assert_allclose(data.X_test, (plain.X_test - mean) / std, atol=1e-10)
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0.0, atol=1e-10)


def test_validation_fraction_zero_changes_nothing():
    plain = dataset_from_config(config())
    zero = dataset_from_config(config(validation_fraction=0.0))
    np.testing.assert_array_equal(plain.X_train, zero.X_train)
    np.testing.assert_array_equal(plain.X_test, zero.X_test)
    assert zero.X_val is None and zero.n_val == 0


@pytest.mark.parametrize("fraction, side", [(0.001, "validation"), (0.999, "training")])
def test_validation_fraction_that_empties_a_class(fraction, side):
    with pytest.raises(UserError) as info:
        dataset_from_config(config(validation_fraction=fraction))
    message = str(info.value)
    assert "--validation-fraction" in message and str(fraction) in message and f"empty {side} part" in message
