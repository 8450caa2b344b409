"""A data set a warm trial process loads ahead (``data.load.keep_dataset``): the runs it forks get
the same bytes as a run that loads, splits and standardises it itself, in arrays of their own."""

from __future__ import annotations

import numpy as np
import pytest

from ist_cli.config import resolve_config, settings_from_config
from ist_cli.data import load
from ist_cli.data.dataset import with_validation
from ist_cli.data.digits import digits_arrays

ARRAYS = ("X_train", "y_train", "X_test", "y_test", "X_val", "y_val")


@pytest.fixture
def kept(monkeypatch):
    monkeypatch.setattr(load, "_KEPT", {})
    return load._KEPT


def settings(**config):
    return settings_from_config(resolve_config({"model": "mlp", "dataset": "digits", **config}))


@pytest.mark.parametrize("what, config", [("digits", {}), ("digits,float32,0.1", {"validation_fraction": 0.1}),
                                          ("digits,float64,0.25", {"validation_fraction": 0.25, "dtype": "float64"})])
def test_a_kept_data_set_is_the_same_bytes_as_one_loaded_by_the_run(kept, what, config):
    loaded = load.dataset_from_settings(settings(**config))  # nothing kept yet: the run's own load
    assert not kept
    load.keep_dataset(what)
    assert len(kept) == 1
    copied = load.dataset_from_settings(settings(**config))
    for name in ARRAYS:
        a, b = getattr(loaded, name), getattr(copied, name)
        if a is None:
            assert b is None and config.get("validation_fraction", 0) == 0
            continue
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), name
        assert b.flags.writeable and b.flags.c_contiguous
    assert (copied.n_classes, copied.name, copied.image_shape) == (loaded.n_classes, loaded.name, loaded.image_shape)
    # standardised with the training rows' statistics, as a numpy reference computes them
    X, y = digits_arrays()
    assert copied.X_train.shape[0] + copied.X_test.shape[0] + (copied.n_val if copied.X_val is not None else 0) == len(y)
    trained = copied.X_train.astype(np.float64)
    spread = trained.std(axis=0)
    np.testing.assert_allclose(trained.mean(axis=0)[spread > 0], 0, atol=1e-5)
    np.testing.assert_allclose(spread[spread > 0], 1, rtol=1e-4)


def test_a_run_cannot_change_the_kept_arrays_and_other_settings_still_load(kept):
    load.keep_dataset("digits,float32,0.1")
    first = load.dataset_from_settings(settings(validation_fraction=0.1))
    before = first.X_train.copy()
    first.X_train[:] = 7.0
    first.X_val[:] = 7.0
    again = load.dataset_from_settings(settings(validation_fraction=0.1))
    assert again.X_train.tobytes() == before.tobytes()
    assert not np.shares_memory(again.X_train, first.X_train)
    other = load.dataset_from_settings(settings(validation_fraction=0.2))  # not kept: loaded as before
    reference = with_validation(load.load_dataset("digits", seed=0), 0.2)
    assert other.X_val.tobytes() == reference.X_val.tobytes()


def test_only_a_seed_independent_source_can_be_kept(kept):
    with pytest.raises(ValueError, match="depends on the seed"):
        load.keep_dataset("synthetic")
    assert not kept
