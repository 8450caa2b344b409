"""Dataset layer: every loader against plain-numpy references, every malformed input against
its one-line UserError, and the partitions against their defining invariants."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from ist_cli.config import resolve_config
from ist_cli.data import Dataset, dataset_from_config, load_dataset, partition_indices
from ist_cli.data.dataset import stratified_split
from ist_cli.data.synthetic import make_synthetic, teacher
from ist_cli.errors import UserError


# ----------------------------------------------------------------------------- references
def standardised(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain float64 standardisation with training statistics; constant features become 0."""
    X_train = np.asarray(X_train, dtype=np.float64).reshape(len(X_train), -1)
    X_test = np.asarray(X_test, dtype=np.float64).reshape(len(X_test), -1)
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    keep = std > 0
    return (X_train - mean) / safe * keep, (X_test - mean) / safe * keep


def assert_matches(data: Dataset, X_train, y_train, X_test, y_test, *, atol: float = 1e-5) -> None:
    ref_train, ref_test = standardised(X_train, X_test)
    np.testing.assert_allclose(data.X_train, ref_train, atol=atol)
    np.testing.assert_allclose(data.X_test, ref_test, atol=atol)
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)
    for X in (data.X_train, data.X_test):
        assert X.flags.c_contiguous
    assert data.y_train.dtype == np.int64 and data.y_test.dtype == np.int64


def raises_one_line(func, *needles: str) -> str:
    with pytest.raises(UserError) as info:
        func()
    message = str(info.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# ----------------------------------------------------------------------------- digits
def test_digits_offline_standardised_with_fixed_split() -> None:
    from sklearn.datasets import load_digits

    data = load_dataset("digits", seed=0)
    assert data.n_classes == 10 and data.n_features == 64
    assert data.n_train + data.n_test == 1797
    assert data.X_train.dtype == np.float32
    std = data.X_train.std(axis=0, dtype=np.float64)
    np.testing.assert_allclose(data.X_train.mean(axis=0, dtype=np.float64), 0.0, atol=1e-5)
    varying = std > 0.5
    np.testing.assert_allclose(std[varying], 1.0, atol=1e-4)
    assert np.all(data.X_train[:, ~varying] == 0) and np.all(data.X_test[:, ~varying] == 0)
    assert (~varying).sum() >= 1  # digits has always-blank corner pixels: the zero-std rule is exercised

    # The split is a stratified, disjoint 80/20 cover that does not change with the run seed.
    bunch = load_digits()
    train, test = stratified_split(bunch.target)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1797))
    per_class = np.bincount(bunch.target[test], minlength=10) / np.bincount(bunch.target, minlength=10)
    np.testing.assert_allclose(per_class, 0.2, atol=0.01)
    assert_matches(data, bunch.data[train], bunch.target[train], bunch.data[test], bunch.target[test])
    other = load_dataset("digits", seed=7, dtype="float64")
    assert other.X_train.dtype == np.float64
    np.testing.assert_array_equal(other.y_test, data.y_test)
    np.testing.assert_allclose(other.X_test, data.X_test, atol=1e-5)


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_in_seed_and_matches_its_teacher() -> None:
    kwargs = dict(synthetic_samples=3000, synthetic_features=16, synthetic_classes=5)
    a = load_dataset("synthetic", seed=3, **kwargs)
    b = load_dataset("synthetic", seed=3, **kwargs)
    c = load_dataset("synthetic", seed=4, **kwargs)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_train, c.y_train)
    assert (a.n_train, a.n_test, a.n_features, a.n_classes) == (2400, 600, 16, 5)

    # Labels are the argmax of the teacher, recomputed here in float64; split = 80% prefix.
    X, y = make_synthetic(3000, 16, 5, seed=3, dtype="float64")
    W1, b1, W2, b2 = teacher(16, 5, seed=3)
    np.testing.assert_array_equal(y, np.argmax(np.maximum(X @ W1 + b1, 0) @ W2 + b2, axis=1))
    X32, y32 = make_synthetic(3000, 16, 5, seed=3, dtype="float32")
    np.testing.assert_array_equal(X32, X.astype(np.float32))  # one problem whatever the dtype
    np.testing.assert_array_equal(y32, y)
    assert_matches(load_dataset("synthetic", seed=3, dtype="float64", **kwargs), X[:2400], y[:2400],
                   X[2400:], y[2400:], atol=1e-10)
    counts = np.bincount(y, minlength=5)
    assert counts.min() > 0.5 * 3000 / 5, counts  # calibration keeps classes roughly balanced


def test_synthetic_labels_are_learnable() -> None:
    from sklearn.linear_model import LogisticRegression

    data = load_dataset("synthetic", seed=1, synthetic_samples=5000, synthetic_features=20,
                        synthetic_classes=4)
    model = LogisticRegression(max_iter=300).fit(data.X_train, data.y_train)
    accuracy = model.score(data.X_test, data.y_test)
    assert accuracy > 0.6, accuracy  # chance is 0.25


def test_synthetic_label_noise_flips_the_expected_share() -> None:
    _, clean = make_synthetic(20000, 8, 4, seed=2)
    _, noisy = make_synthetic(20000, 8, 4, seed=2, label_noise=0.4)
    changed = (clean != noisy).mean()
    assert abs(changed - 0.4 * 3 / 4) < 0.02, changed


# ----------------------------------------------------------------------------- npz
def save_npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


def npz_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    X_train = rng.normal(2.0, 3.0, size=(30, 2, 3))
    X_train[:, 0, 0] = 5.0  # constant feature
    return dict(X_train=X_train, y_train=np.arange(30) % 3, X_test=rng.normal(size=(7, 2, 3)),
                y_test=np.array([0, 1, 2, 2, 1, 0, 0]))


def test_npz_loads_exact_arrays(tmp_path: Path) -> None:
    arrays = npz_arrays(np.random.default_rng(0))
    path = save_npz(tmp_path / "d.npz", **arrays)
    data = load_dataset(f"npz:{path}", seed=0, dtype="float64")
    assert data.n_classes == 3 and data.n_features == 6
    assert_matches(data, arrays["X_train"], arrays["y_train"], arrays["X_test"], arrays["y_test"], atol=1e-12)
    assert np.all(data.X_test[:, 0] == 0)
    declared = save_npz(tmp_path / "k.npz", **arrays, n_classes=np.int64(5))
    assert load_dataset(f"npz:{declared}", seed=0).n_classes == 5
    floats = save_npz(tmp_path / "f.npz", **{**arrays, "y_train": arrays["y_train"].astype(float)})
    np.testing.assert_array_equal(load_dataset(f"npz:{floats}", seed=0).y_train, arrays["y_train"])


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda a: a.pop("y_test"), "lacks y_test"),
        (lambda a: a.update(y_train=a["y_train"][:-1]), "29 labels"),
        (lambda a: a.update(y_test=np.array([0, 1, 2, -1, 1, 0, 0])), "negative"),
        (lambda a: a.update(y_train=a["y_train"] + 0.5), "not an integer"),
        (lambda a: a["X_test"].__setitem__((3, 1, 1), np.nan), "row 3 holds NaN"),
        (lambda a: a.update(X_test=np.zeros((7, 5))), "5"),
        (lambda a: a.update(y_train=a["y_train"] * 1000), "out of range"),
        (lambda a: a.update(n_classes=np.int64(2)), "out of range"),
        (lambda a: a.update(y_train=np.zeros((30, 2), dtype=int)), "1-D"),
        (lambda a: a.update(X_train=np.arange(30.0)), "(samples, features)"),
    ],
)
def test_npz_malformed_raises_one_line_user_error(tmp_path: Path, change, needle: str) -> None:
    arrays = npz_arrays(np.random.default_rng(1))
    change(arrays)
    path = save_npz(tmp_path / "bad.npz", **arrays)
    raises_one_line(lambda: load_dataset(f"npz:{path}", seed=0), path, needle)


def test_npz_missing_or_garbage_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.npz")
    raises_one_line(lambda: load_dataset(f"npz:{missing}", seed=0), missing, "does not exist")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive\n")
    raises_one_line(lambda: load_dataset(f"npz:{garbage}", seed=0), str(garbage), "not a readable .npz")
    raises_one_line(lambda: load_dataset(f"npz:{tmp_path}", seed=0), str(tmp_path), "not a file")


# ----------------------------------------------------------------------------- IDX (MNIST)
def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_mnist(directory: Path, rng: np.random.Generator, *, gz: bool) -> dict[str, np.ndarray]:
    directory.mkdir()
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(20, 4, 3)),
        "train-labels-idx1-ubyte": np.arange(20) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(6, 4, 3)),
        "t10k-labels-idx1-ubyte": np.array([9, 8, 7, 0, 1, 2]),
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loads_exact_arrays(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path / "mnist", np.random.default_rng(2), gz=gz)
    data = load_dataset(f"mnist:{tmp_path / 'mnist'}", seed=0, dtype="float64")
    assert data.n_classes == 10 and data.n_features == 12 and data.image_shape == (1, 4, 3)
    # grey images: one mean and std over all training pixels, not one per pixel
    train, test = arrays["train-images-idx3-ubyte"] / 255.0, arrays["t10k-images-idx3-ubyte"] / 255.0
    mean, std = train.mean(), train.std()
    np.testing.assert_allclose(data.X_train, ((train - mean) / std).reshape(20, 12), atol=1e-12)
    np.testing.assert_allclose(data.X_test, ((test - mean) / std).reshape(6, 12), atol=1e-12)
    np.testing.assert_array_equal(data.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_mnist_idx_malformed(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    arrays = write_mnist(folder, np.random.default_rng(3), gz=False)
    spec = f"mnist:{folder}"
    labels = folder / "train-labels-idx1-ubyte"

    labels.write_bytes(idx_bytes(arrays["train-labels-idx1-ubyte"], magic=b"\x00\x00\x08\x03"))
    raises_one_line(lambda: load_dataset(spec, seed=0), str(labels), "00000803", "expected 1")
    labels.write_bytes(b"\x12\x34\x56\x78" + b"\x00" * 24)
    raises_one_line(lambda: load_dataset(spec, seed=0), str(labels), "magic 12345678")
    labels.write_bytes(idx_bytes(arrays["train-labels-idx1-ubyte"])[:-3])
    raises_one_line(lambda: load_dataset(spec, seed=0), str(labels), "implies")
    labels.write_bytes(idx_bytes(np.arange(21) % 10))
    raises_one_line(lambda: load_dataset(spec, seed=0), str(folder), "20 rows but y_train has 21")
    labels.unlink()
    raises_one_line(lambda: load_dataset(spec, seed=0), str(labels), "does not exist")
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    raises_one_line(lambda: load_dataset(spec, seed=0), str(folder / "train-labels-idx1-ubyte.gz"), "cannot read")
    missing = tmp_path / "absent"
    raises_one_line(lambda: load_dataset(f"mnist:{missing}", seed=0), str(missing), "does not exist")


# ----------------------------------------------------------------------------- LIBSVM
LIBSVM_TRAIN = """# header comment
+1 1:0.5 3:-2 qid:7
-1 2:1.5

+1 3:4 4:1e-1 # trailing comment
-1 1:-1 4:2
"""
LIBSVM_TEST = "-1 4:3\n+1 1:1 2:2 3:3\n"


def dense(rows: list[dict[int, float]], width: int) -> np.ndarray:
    X = np.zeros((len(rows), width))
    for r, row in enumerate(rows):
        for index, value in row.items():
            X[r, index - 1] = value
    return X


def test_libsvm_with_companion_test_file(tmp_path: Path) -> None:
    path = tmp_path / "toy"
    path.write_text(LIBSVM_TRAIN)
    (tmp_path / "toy.t").write_text(LIBSVM_TEST)
    data = load_dataset(f"libsvm:{path}", seed=0, dtype="float64")
    X_train = dense([{1: 0.5, 3: -2}, {2: 1.5}, {3: 4, 4: 0.1}, {1: -1, 4: 2}], 4)
    X_test = dense([{4: 3}, {1: 1, 2: 2, 3: 3}], 4)
    assert data.n_classes == 2  # -1 -> 0, +1 -> 1 (sorted distinct labels)
    assert_matches(data, X_train, [1, 0, 1, 0], X_test, [0, 1], atol=1e-12)
    explicit = load_dataset(f"libsvm:{path},{tmp_path / 'toy.t'}", seed=0, dtype="float64")
    np.testing.assert_array_equal(explicit.X_test, data.X_test)


def test_libsvm_single_file_is_split_stratified_and_seed_free(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    labels = np.repeat([3, 7, 11], 20)
    X = rng.normal(size=(60, 5))
    lines = [f"{lab} " + " ".join(f"{j + 1}:{float(x)!r}" for j, x in enumerate(row)) for lab, row in zip(labels, X, strict=True)]
    path = tmp_path / "three.svm.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    data = load_dataset(f"libsvm:{path}", seed=0, dtype="float64")
    mapped = np.searchsorted([3, 7, 11], labels)
    train, test = stratified_split(mapped)
    assert np.bincount(mapped[test]).tolist() == [4, 4, 4]
    assert_matches(data, X[train], mapped[train], X[test], mapped[test], atol=1e-12)
    again = load_dataset(f"libsvm:{path}", seed=99, dtype="float64")
    np.testing.assert_array_equal(again.X_test, data.X_test)


@pytest.mark.parametrize(
    "text, needles",
    [
        ("1 1:2\nabc 1:2\n", ("line 2", "'abc' is not a number")),
        ("1 1:2\n\n0.5 2:1\n", ("line 3", "not an integer")),
        ("1 1:2\n0 1=2\n", ("line 2", "'1=2' is not index:value")),
        ("1 0:2\n0 1:1\n", ("line 1", "1-based")),
        ("1 1:2\n0 1:nan\n", ("line 2", "NaN")),
        ("1 1:2 1:3\n0 1:1\n", ("line 1", "twice")),
        ("1 1:2\n1 2:1\n", ("at least 2 classes",)),
        ("# only a comment\n", ("no samples",)),
    ],
)
def test_libsvm_malformed_names_path_and_line(tmp_path: Path, text: str, needles: tuple[str, ...]) -> None:
    path = tmp_path / "bad.svm"
    path.write_text(text)
    raises_one_line(lambda: load_dataset(f"libsvm:{path}", seed=0), str(path), *needles)


def test_libsvm_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.svm")
    raises_one_line(lambda: load_dataset(f"libsvm:{missing}", seed=0), missing, "does not exist")


# ----------------------------------------------------------------------------- specs and config
@pytest.mark.parametrize("spec", ["mnist", "npz:", "csv:/tmp/x", "Digits", "synthetic:3"])
def test_unknown_dataset_spec(spec: str) -> None:
    raises_one_line(lambda: load_dataset(spec, seed=0), repr(spec), "digits, synthetic, npz:PATH")


def test_bad_dtype() -> None:
    raises_one_line(lambda: load_dataset("synthetic", seed=0, dtype="float16"), "float16", "float32, float64")


def test_dataset_from_config_reads_the_resolved_keys() -> None:
    config = resolve_config({"model": "mlp", "dataset": "synthetic", "seed": 5, "dtype": "float64",
                             "synthetic_samples": 500, "synthetic_features": 7, "synthetic_classes": 3,
                             "workers": 4, "hidden": [8]})
    data = dataset_from_config(config)
    reference = load_dataset("synthetic", seed=5, dtype="float64", synthetic_samples=500,
                             synthetic_features=7, synthetic_classes=3)
    assert data.X_train.dtype == np.float64 and data.X_train.shape == (400, 7) and data.n_classes == 3
    np.testing.assert_array_equal(data.X_train, reference.X_train)
    too_many = resolve_config({"model": "mlp", "dataset": "synthetic", "synthetic_samples": 10,
                               "workers": 9, "hidden": [16]})
    raises_one_line(lambda: dataset_from_config(too_many), "9 workers", "8 training samples")


# ----------------------------------------------------------------------------- partitions
def balanced_labels(per_class: int = 100, classes: int = 10) -> np.ndarray:
    return np.random.default_rng(5).permutation(np.repeat(np.arange(classes), per_class))


def label_skew(y: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean total-variation distance between each worker's label distribution and the global one."""
    classes = int(y.max()) + 1
    overall = np.bincount(y, minlength=classes) / y.size
    return float(np.mean([0.5 * np.abs(np.bincount(y[p], minlength=classes) / p.size - overall).sum()
                          for p in parts]))


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.1", "dirichlet:1e-4", "dirichlet:100", "shards:2", "shards:1"])
@pytest.mark.parametrize("n_workers", [1, 3, 10])
def test_partitions_are_disjoint_sorted_covers(spec: str, n_workers: int) -> None:
    y = balanced_labels()
    parts = partition_indices(y, n_workers, spec, seed=11)
    assert len(parts) == n_workers
    for part in parts:
        assert part.dtype == np.int64 and part.size >= 1
        assert np.all(np.diff(part) > 0)
    joined = np.concatenate(parts)
    assert joined.size == y.size
    np.testing.assert_array_equal(np.sort(joined), np.arange(y.size))
    again = partition_indices(y, n_workers, spec, seed=11)
    assert all(np.array_equal(p, q) for p, q in zip(parts, again, strict=True))


def test_partition_seed_changes_the_split() -> None:
    y = balanced_labels()
    for spec in ("iid", "dirichlet:0.5", "shards:2"):
        a = partition_indices(y, 5, spec, seed=1)
        b = partition_indices(y, 5, spec, seed=2)
        assert any(not np.array_equal(p, q) for p, q in zip(a, b, strict=True)), spec


def test_iid_is_balanced_and_dirichlet_is_skewed() -> None:
    y = balanced_labels(per_class=200)
    iid = partition_indices(y, 8, "iid", seed=0)
    sizes = [p.size for p in iid]
    assert max(sizes) - min(sizes) <= 1
    assert label_skew(y, iid) < 0.1
    skewed = partition_indices(y, 8, "dirichlet:0.1", seed=0)
    assert label_skew(y, skewed) > 0.4
    mild = partition_indices(y, 8, "dirichlet:1000", seed=0)
    assert label_skew(y, mild) < 0.1  # large alpha approaches iid


def test_shards_limit_labels_per_worker() -> None:
    y = balanced_labels(per_class=100, classes=10)
    for k in (1, 2, 3):
        parts = partition_indices(y, 10, f"shards:{k}", seed=3)
        labels_seen = [np.unique(y[p]).size for p in parts]
        assert max(labels_seen) <= 2 * k, (k, labels_seen)
        assert max(p.size for p in parts) - min(p.size for p in parts) <= k
    one_each = partition_indices(y, 10, "shards:1", seed=3)  # shard = a whole class here
    assert sorted(int(np.unique(y[p])[0]) for p in one_each) == list(range(10))


def test_dirichlet_never_leaves_a_worker_empty() -> None:
    y = np.repeat(np.arange(2), 6)  # 12 samples, 2 labels, tiny alpha: most workers start empty
    parts = partition_indices(y, 12, "dirichlet:0.001", seed=0)
    assert [p.size for p in parts] == [1] * 12


@pytest.mark.parametrize(
    "n_workers, spec, needles",
    [
        (101, "iid", ("101 workers", "only 100 training samples")),
        (11, "shards:10", ("'shards:10'", "K <= 9")),
        (4, "dirichlet:0", ("'dirichlet:0'", "ALPHA > 0")),
        (4, "dirichlet:-1", ("'dirichlet:-1'", "ALPHA > 0")),
        (4, "shards:0", ("'shards:0'", "K >= 1")),
        (4, "dirichlet", ("'dirichlet'", "iid, dirichlet:ALPHA")),
        (4, "label-skew", ("'label-skew'", "iid, dirichlet:ALPHA")),
        (0, "iid", ("0", "integer >= 1")),
    ],
)
def test_partition_errors(n_workers: int, spec: str, needles: tuple[str, ...]) -> None:
    y = balanced_labels(per_class=10)
    raises_one_line(lambda: partition_indices(y, n_workers, spec, seed=0), *needles)
