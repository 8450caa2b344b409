"""Image datasets: Fashion-MNIST's checked files, CIFAR-10's binary batches, the image shape a
convnet reads, per-channel standardisation and the fixed 10 % validation split.

Parsers are checked on small generated files against plain-numpy references; the real
Fashion-MNIST files (Debian's ``dataset-fashion-mnist``) are checked where installed, against
numbers from outside this code: the files' sums, the class counts and Lee et al.'s pixel
mean/std of the training set."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from ist_cli.data import fashion_mnist, load_dataset
from ist_cli.data.dataset import with_validation
from ist_cli.errors import UserError
from tests.helpers import files_in, ist, one_error_line

REAL = fashion_mnist.DEFAULT_DIR
needs_package = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} missing: apt-get install dataset-fashion-mnist")


def idx(array: np.ndarray) -> bytes:
    """An IDX file of uint8 ``array``, written from the format's definition."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_idx_dir(folder: Path, rng: np.random.Generator, *, gz: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(30, 5, 4)),
        "train-labels-idx1-ubyte": np.arange(30) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(7, 5, 4)),
        "t10k-labels-idx1-ubyte": np.arange(7),
    }
    for name, array in arrays.items():
        raw = idx(array)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


def per_channel(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain float64 reference: (N, C, H, W) images standardised by each channel's mean/std
    over all training pixels, returned flattened."""
    train, test = train.astype(np.float64), test.astype(np.float64)
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True)
    return ((train - mean) / std).reshape(len(train), -1), ((test - mean) / std).reshape(len(test), -1)


def content_sums(folder: Path) -> dict[str, str]:
    return {key: hashlib.sha256(gzip.decompress((folder / (stem + ".gz")).read_bytes())).hexdigest()
            for key, stem in fashion_mnist.FILES.items()}


# ----------------------------------------------------------------------------- Fashion-MNIST
@needs_package
def test_real_fashion_mnist_files_sums_shapes_and_lee_statistics():
    raw = {path.name: gzip.decompress(path.read_bytes()) for path in REAL.glob("*.gz")}
    assert {name: hashlib.sha256(content).hexdigest() for name, content in raw.items()} == {
        "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    }
    data = load_dataset("fashion-mnist", seed=3, dtype="float32")
    assert (data.n_train, data.n_test, data.n_features, data.n_classes) == (60000, 10000, 784, 10)
    assert data.image_shape == (1, 28, 28)
    assert np.bincount(data.y_train).tolist() == [6000] * 10 and np.bincount(data.y_test).tolist() == [1000] * 10
    # Lee et al.'s loader standardises with the training set's one pixel mean and std, which its
    # code states as 0.2860402 and 0.3530239: undoing them must give back the raw pixels / 255.
    pixels = np.frombuffer(raw["train-images-idx3-ubyte.gz"], np.uint8, offset=16).reshape(60000, 784) / 255.0
    np.testing.assert_allclose(data.X_train * 0.3530239 + 0.2860402, pixels, atol=2e-6)
    np.testing.assert_array_equal(data.y_train, np.frombuffer(raw["train-labels-idx1-ubyte.gz"], np.uint8, offset=8))

    split = with_validation(data, 0.1)
    assert (split.n_train, split.n_val) == (54000, 6000)
    assert np.bincount(split.y_val).tolist() == [600] * 10 and split.image_shape == (1, 28, 28)
    again = with_validation(load_dataset("fashion-mnist", seed=9, dtype="float32"), 0.1)
    np.testing.assert_array_equal(split.X_val, again.X_val)  # fixed split: the run's seed plays no part
    images = split.X_train.reshape(-1, *split.image_shape)
    assert abs(images.mean()) < 1e-4 and abs(images.std() - 1) < 1e-4


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_parses_files_with_the_published_sums(tmp_path, monkeypatch, gz):
    arrays = write_idx_dir(tmp_path / "f", np.random.default_rng(1), gz=gz)
    sums = {key: hashlib.sha256(idx(arrays[stem])).hexdigest() for key, stem in fashion_mnist.FILES.items()}
    monkeypatch.setattr(fashion_mnist, "SHA256", sums)
    data = load_dataset(f"fashion-mnist:{tmp_path / 'f'}", seed=0, dtype="float64")
    assert data.image_shape == (1, 5, 4) and data.n_classes == 10
    train = arrays["train-images-idx3-ubyte"][:, None] / 255.0
    test = arrays["t10k-images-idx3-ubyte"][:, None] / 255.0
    ref_train, ref_test = per_channel(train, test)
    np.testing.assert_allclose(data.X_train, ref_train, atol=1e-12)
    np.testing.assert_allclose(data.X_test, ref_test, atol=1e-12)
    np.testing.assert_array_equal(data.y_test, np.arange(7))


def test_fashion_mnist_sum_mismatch_is_one_cli_line(tmp_path):
    folder = tmp_path / "fake"
    write_idx_dir(folder, np.random.default_rng(2))
    line = one_error_line(ist("run", "--model", "mlp", "--hidden", "8", "--rounds", "1",
                              "--dataset", f"fashion-mnist:{folder}", "--out", str(tmp_path / "out")))
    assert "sha256" in line and str(folder / "train-images-idx3-ubyte.gz") in line
    assert fashion_mnist.SHA256["train_images"] in line
    assert files_in(tmp_path / "out") == []


def test_fashion_mnist_damaged_single_file_is_named(tmp_path, monkeypatch):
    arrays = write_idx_dir(tmp_path / "f", np.random.default_rng(4))
    monkeypatch.setattr(fashion_mnist, "SHA256", content_sums(tmp_path / "f"))
    labels = tmp_path / "f" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx(arrays["t10k-labels-idx1-ubyte"][::-1])))
    with pytest.raises(UserError) as info:
        load_dataset(f"fashion-mnist:{tmp_path / 'f'}", seed=0)
    assert str(labels) in str(info.value) and "\n" not in str(info.value)


def test_fashion_mnist_without_the_package_names_apt_get(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEFAULT_DIR", tmp_path / "absent")
    with pytest.raises(UserError) as info:
        load_dataset("fashion-mnist", seed=0)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "\n" not in message
    assert str(tmp_path / "absent") in message


def test_fashion_mnist_missing_dir_through_the_cli(tmp_path):
    line = one_error_line(ist("run", "--model", "mlp", "--dataset", f"fashion-mnist:{tmp_path}/none",
                              "--out", str(tmp_path / "out")))
    assert f"{tmp_path}/none" in line and "apt-get install dataset-fashion-mnist" in line


# ----------------------------------------------------------------------------- MNIST
def test_mnist_dir_keeps_the_image_shape(tmp_path):
    arrays = write_idx_dir(tmp_path / "m", np.random.default_rng(5), gz=False)
    data = load_dataset(f"mnist:{tmp_path / 'm'}", seed=0, dtype="float64")
    assert data.image_shape == (1, 5, 4) and data.n_features == 20
    ref_train, _ = per_channel(arrays["train-images-idx3-ubyte"][:, None] / 255.0,
                               arrays["t10k-images-idx3-ubyte"][:, None] / 255.0)
    np.testing.assert_allclose(data.X_train, ref_train, atol=1e-12)


# ----------------------------------------------------------------------------- CIFAR-10
def write_cifar(folder: Path, rng: np.random.Generator, per_file: int = 4) -> tuple[np.ndarray, ...]:
    """Six batch files of ``per_file`` records: a label byte, then R, G, B planes of 32x32."""
    folder.mkdir(parents=True)
    images = rng.integers(0, 256, size=(6 * per_file, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=6 * per_file, dtype=np.uint8)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for k, name in enumerate(names):
        part = slice(k * per_file, (k + 1) * per_file)
        records = [bytes([int(label)]) + image.tobytes() for label, image in zip(labels[part], images[part], strict=True)]
        (folder / name).write_bytes(b"".join(records))
    n = 5 * per_file
    return images[:n], labels[:n], images[n:], labels[n:]


@pytest.mark.parametrize("parent", [False, True])
def test_cifar10_binary_batches(tmp_path, parent):
    train, y_train, test, y_test = write_cifar(tmp_path / "cifar-10-batches-bin", np.random.default_rng(6))
    data = load_dataset(f"cifar10:{tmp_path if parent else tmp_path / 'cifar-10-batches-bin'}", seed=0,
                        dtype="float64")
    assert data.image_shape == (3, 32, 32) and data.n_classes == 10 and (data.n_train, data.n_test) == (20, 4)
    ref_train, ref_test = per_channel(train / 255.0, test / 255.0)
    np.testing.assert_allclose(data.X_train, ref_train, atol=1e-12)
    np.testing.assert_allclose(data.X_test, ref_test, atol=1e-12)
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)
    # the red plane of image 0 is its first 1024 features: channel order survives the flattening
    red = (train[0, 0] / 255.0 - (train[:, 0] / 255.0).mean()) / (train[:, 0] / 255.0).std()
    np.testing.assert_allclose(data.X_train.reshape(-1, 3, 32, 32)[0, 0], red, atol=1e-12)


def test_cifar10_split_restandardises_per_channel(tmp_path):
    write_cifar(tmp_path / "c", np.random.default_rng(7), per_file=20)
    split = with_validation(load_dataset(f"cifar10:{tmp_path / 'c'}", seed=0, dtype="float64"), 0.2)
    assert split.image_shape == (3, 32, 32) and split.n_val > 0
    images = split.X_train.reshape(-1, 3, 32, 32)
    np.testing.assert_allclose(images.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(images.std(axis=(0, 2, 3)), 1, atol=1e-12)


def test_cifar10_bad_input(tmp_path):
    folder = tmp_path / "c"
    write_cifar(folder, np.random.default_rng(8))
    spec = f"cifar10:{folder}"
    batch = folder / "data_batch_3.bin"
    good = batch.read_bytes()
    batch.write_bytes(good[:-5])
    with pytest.raises(UserError, match="3073-byte records"):
        load_dataset(spec, seed=0)
    batch.write_bytes(bytes([10]) + good[1:])
    with pytest.raises(UserError, match="record 0 has label 10"):
        load_dataset(spec, seed=0)
    batch.unlink()
    with pytest.raises(UserError, match="data_batch_3.bin' does not exist"):
        load_dataset(spec, seed=0)
    pickled = tmp_path / "cifar-10-batches-py"
    pickled.mkdir()
    (pickled / "test_batch").write_bytes(b"\x80\x04")
    with pytest.raises(UserError, match="pickled"):
        load_dataset(f"cifar10:{pickled}", seed=0)


def test_cifar10_missing_dir_through_the_cli(tmp_path):
    line = one_error_line(ist("run", "--model", "mlp", "--dataset", f"cifar10:{tmp_path}/none",
                              "--out", str(tmp_path / "out")))
    assert f"{tmp_path}/none" in line and "cifar-10-batches-bin" in line


@needs_package
def test_memory_estimate_knows_fashion_mnist_before_reading_it():
    from ist_cli.algorithms import build_algorithm
    from ist_cli.config import resolve_config
    from ist_cli.footprint import estimate_run
    from ist_cli.runtime.arena import plan_layout

    config = resolve_config({"model": "mlp", "algorithm": "local-sgd", "hidden": [32], "workers": 2,
                             "dataset": "fashion-mnist", "validation_fraction": 0.1})
    real = plan_layout(build_algorithm(config).arena_spec(), "x").size
    estimate = estimate_run(config)
    assert 60000 * 784 * 4 <= real <= estimate.arena <= 4 * real + 2**20, (real, estimate)
