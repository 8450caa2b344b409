"""The in-memory dataset every MLP run trains on, and the rules all loaders share:
label checks, the fixed train/test split and standardisation with training statistics.

Keeping these in one place means every source (digits, synthetic, npz, IDX, LIBSVM) gives
the model the same guarantees: C-contiguous features of the run's dtype, finite values,
int64 labels in ``[0, n_classes)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ist_cli.errors import UserError
from ist_cli.seeding import stream

DTYPES = ("float32", "float64")
TEST_FRACTION = 0.2
# The train/test split of single-file sources uses this seed, not the run's, so that runs
# with different --seed values are scored on one and the same test set.
SPLIT_SEED = 0
# Elements (8 MB of float64) handled at once by the chunked passes, so big arrays need no
# full-size temporaries.
CHUNK_ELEMENTS = 1 << 20


def chunk_rows(features: int) -> int:
    """Rows per chunk for arrays of ``features`` columns."""
    return max(1, CHUNK_ELEMENTS // max(1, features))


@dataclass
class Dataset:
    """Standardised training and test data of one classification problem."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    X_val: np.ndarray | None = None  # carved out of training by ``with_validation``; None without
    y_val: np.ndarray | None = None
    # (channels, height, width) of an image source, whose rows are its images flattened in that
    # (C-order) order: ``X.reshape(-1, *image_shape)`` is the NCHW batch a convnet reads, while an
    # MLP reads the rows as they are. None for sources that are not images.
    image_shape: tuple[int, int, int] | None = None

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.X_test.shape[0])

    @property
    def n_val(self) -> int:
        return 0 if self.X_val is None else int(self.X_val.shape[0])

    @property
    def channels(self) -> int:
        """Image channels (standardised as groups of pixels), 0 when the rows are not images."""
        return 0 if self.image_shape is None else int(self.image_shape[0])


def check_dtype(dtype: str) -> np.dtype:
    """The numpy dtype of ``float32``/``float64`` or a UserError."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype: {dtype!r} is not allowed; expected one of {', '.join(DTYPES)}")
    return np.dtype(dtype)


def as_features(X: np.ndarray, where: str, what: str, dtype: np.dtype) -> np.ndarray:
    """``X`` as a finite 2-D C-contiguous array of ``dtype`` (extra axes are flattened)."""
    X = np.asarray(X)
    if X.ndim < 2 or X.shape[0] == 0:
        raise UserError(f"{where}: {what} has shape {X.shape}; expected (samples, features) with samples >= 1")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_) or np.iscomplexobj(X):
        raise UserError(f"{where}: {what} has dtype {X.dtype}; expected real numbers")
    X = np.ascontiguousarray(X.reshape(X.shape[0], -1), dtype=dtype)
    if X.shape[1] == 0:
        raise UserError(f"{where}: {what} has no features (shape {X.shape})")
    rows = chunk_rows(X.shape[1])
    for start in range(0, X.shape[0], rows):
        block = X[start : start + rows]
        if not np.isfinite(block).all():
            row = start + int(np.argwhere(~np.isfinite(block))[0][0])
            raise UserError(f"{where}: {what} row {row} holds NaN or inf; expected finite features")
    return X


def as_labels(y: np.ndarray, where: str, what: str) -> np.ndarray:
    """``y`` as a 1-D int64 array of non-negative whole numbers, or a UserError."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise UserError(f"{where}: {what} has shape {y.shape}; expected a 1-D label vector")
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y):
        raise UserError(f"{where}: {what} has dtype {y.dtype}; expected integer class labels")
    if not np.issubdtype(y.dtype, np.integer):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise UserError(f"{where}: {what}[{i}] = {y[i]!r} is not an integer; expected class labels 0..K-1")
    if y.size and y.min() < 0:
        i = int(np.argmin(y))
        raise UserError(f"{where}: {what}[{i}] = {y[i]} is negative; expected class labels 0..K-1")
    return y.astype(np.int64)


def check_lengths(X: np.ndarray, y: np.ndarray, where: str, part: str) -> None:
    if X.shape[0] != y.shape[0]:
        raise UserError(
            f"{where}: X_{part} has {X.shape[0]} rows but y_{part} has {y.shape[0]} labels; expected equal lengths"
        )


def count_classes(y_train: np.ndarray, y_test: np.ndarray, where: str, declared: int | None = None) -> int:
    """The number of classes K: ``declared`` if given, else the largest label + 1.

    Labels must lie in ``[0, K)``; without a declared K, an absurd K (more classes than
    training samples) is taken as a sign of wrong labels rather than honoured.
    """
    top = int(max(y_train.max(initial=0), y_test.max(initial=0)))
    if declared is not None:
        if declared < 2:
            raise UserError(f"{where}: n_classes = {declared}; expected an integer >= 2")
        if top >= declared:
            raise UserError(f"{where}: label {top} is out of range; expected labels 0..{declared - 1} (n_classes = {declared})")
        return int(declared)
    classes = top + 1
    if classes < 2:
        raise UserError(f"{where}: every label is 0; expected at least 2 classes")
    if classes > max(2, y_train.shape[0]):
        raise UserError(
            f"{where}: label {top} is out of range for {y_train.shape[0]} training samples; "
            "expected class indices 0..K-1 (store n_classes to declare K)"
        )
    return classes


def _class_counts(y: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, their sizes and round(fraction x size) per label (the stratified split's rule)."""
    labels, sizes = np.unique(y, return_counts=True)
    return labels, sizes, np.round(fraction * sizes).astype(np.int64)


def stratified_split(y: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED,
                     purpose: str = "data-split") -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) row indices with about ``test_fraction`` of each class in test.

    Each class keeps at least one training sample, so a class seen in test is never unseen
    in training. ``purpose`` names the random stream, so different splits do not correlate.
    """
    rng = stream(seed, purpose)
    test_parts = []
    labels, sizes, takes = _class_counts(y, test_fraction)
    for label, size, take in zip(labels, sizes, takes, strict=True):
        members = np.flatnonzero(y == label)
        test_parts.append(rng.permutation(members)[: min(int(take), int(size) - 1)])
    test = np.sort(np.concatenate(test_parts)).astype(np.int64) if test_parts else np.zeros(0, np.int64)
    mask = np.ones(y.shape[0], dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask).astype(np.int64), test


def with_validation(data: Dataset, fraction: float) -> Dataset:
    """``data`` with a stratified ``fraction`` of its training set moved to ``X_val``/``y_val``.

    The split has a fixed seed (``SPLIT_SEED``, its own stream), so every run of a study is
    measured on the same validation rows; all three sets are then re-standardised with the
    remaining training rows' statistics (an affine map of an affine map: the same as
    standardising the raw data with them). Every class must keep at least one row on each
    side, else a UserError names the fraction. ``fraction`` 0 returns ``data`` untouched.
    """
    if fraction <= 0:
        return data
    labels, sizes, takes = _class_counts(data.y_train, fraction)
    for label, size, take in zip(labels, sizes, takes, strict=True):
        if take < 1 or take >= size:
            side = "validation" if take < 1 else "training"
            raise UserError(
                f"--validation-fraction: {fraction} leaves class {int(label)} ({int(size)} training samples) with "
                f"an empty {side} part; expected a fraction that keeps every class on both sides "
                f"(between {1 / (2 * int(size)):.3g} and {1 - 1 / (2 * int(size)):.3g} for this class)"
            )
    train, val = stratified_split(data.y_train, fraction, SPLIT_SEED, purpose="validation-split")
    X_train, X_val = data.X_train[train], data.X_train[val]
    standardise(X_train, X_val, data.X_test, channels=data.channels)
    return replace(data, X_train=X_train, y_train=data.y_train[train], X_val=X_val, y_val=data.y_train[val])


def standardise(X_train: np.ndarray, *others: np.ndarray, channels: int = 0) -> tuple[np.ndarray, ...]:
    """Scale every set in place to zero mean, unit std per feature using *training* statistics.

    Features constant in training become 0 (in test as well), so they carry no signal and
    never divide by zero. Statistics are accumulated in float64 over row chunks. With
    ``channels`` > 0 the rows are images of that many channels (each a contiguous block of
    pixels) and every pixel of a channel shares the channel's pooled mean and std, as convnet
    studies standardise images (one scalar for grey images, one per colour channel).
    """
    n, d = X_train.shape
    rows = chunk_rows(d)
    mean = np.zeros(d)
    for start in range(0, n, rows):
        mean += X_train[start : start + rows].sum(axis=0, dtype=np.float64)
    mean /= n
    sq = np.zeros(d)
    for start in range(0, n, rows):
        sq += np.square(X_train[start : start + rows] - mean).sum(axis=0)
    std = np.sqrt(sq / n)
    if channels:
        mean, std = pooled_per_channel(mean, std, channels)
    # Relative threshold: float32 rounding leaves a tiny std on constant columns.
    constant = std <= 1e-7 * np.maximum(1.0, np.abs(mean))
    scale = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, std))
    for X in (X_train, *others):
        for start in range(0, X.shape[0], rows):
            block = X[start : start + rows]
            block[...] = (block - mean) * scale
    return (X_train, *others)


def pooled_per_channel(mean: np.ndarray, std: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean/std turned into each channel's pooled ones, repeated over its pixels:
    the channel's mean of means and sqrt(mean of (var + (mean - channel mean)^2)), exact
    because every pixel has the same number of samples."""
    pixels = mean.shape[0] // channels
    means, stds = mean.reshape(channels, pixels), std.reshape(channels, pixels)
    channel_mean = means.mean(axis=1, keepdims=True)
    channel_std = np.sqrt((np.square(stds) + np.square(means - channel_mean)).mean(axis=1, keepdims=True))
    return (np.broadcast_to(channel_mean, means.shape).reshape(-1),
            np.broadcast_to(channel_std, stds.shape).reshape(-1))


def build(name: str, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
          *, where: str, dtype: str, n_classes: int | None = None,
          image_shape: tuple[int, int, int] | None = None) -> Dataset:
    """Validate raw arrays, standardise them and wrap them in a Dataset (the loaders' last step).

    ``image_shape`` (C, H, W) marks the rows as flattened images (standardised per channel).
    """
    np_dtype = check_dtype(dtype)
    X_train = as_features(X_train, where, "X_train", np_dtype)
    X_test = as_features(X_test, where, "X_test", np_dtype)
    y_train = as_labels(y_train, where, "y_train")
    y_test = as_labels(y_test, where, "y_test")
    check_lengths(X_train, y_train, where, "train")
    check_lengths(X_test, y_test, where, "test")
    if X_train.shape[1] != X_test.shape[1]:
        raise UserError(
            f"{where}: X_train has {X_train.shape[1]} features but X_test has {X_test.shape[1]}; expected the same"
        )
    classes = count_classes(y_train, y_test, where, n_classes)
    if image_shape is not None and int(np.prod(image_shape)) != X_train.shape[1]:
        raise UserError(f"{where}: images of shape {image_shape} do not fit {X_train.shape[1]} features per row")
    data = Dataset(name, X_train, y_train, X_test, y_test, classes, image_shape=image_shape)
    standardise(X_train, X_test, channels=data.channels)
    return data
