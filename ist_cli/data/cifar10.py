"""CIFAR-10 (Krizhevsky 2009) from its binary distribution, ``cifar-10-batches-bin``.

Each of ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin`` is a run of
3073-byte records: one label byte (0..9), then 3072 pixel bytes, the 1024 red, 1024 green and
1024 blue values of a 32x32 image, row-major. That is already the (C, H, W) order, so a record's
pixels are one flattened image. The pickled "python version" is refused: unpickling runs code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ist_cli.data.dataset import Dataset, build, check_dtype
from ist_cli.data.files import existing_dir
from ist_cli.errors import UserError

FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
IMAGE_SHAPE = (3, 32, 32)
RECORD = 1 + int(np.prod(IMAGE_SHAPE))
CLASSES = 10
#: (samples, features, classes) of the whole binary distribution, for memory estimates
SHAPE = (60000, RECORD - 1, CLASSES)
EXPECTS = f"the {FOLDER} directory of CIFAR-10's binary version ({', '.join(TRAIN_FILES)}, {TEST_FILE})"


def batches_dir(directory: str, where: str) -> Path:
    """``directory`` itself if it holds the batches, else its ``cifar-10-batches-bin`` subfolder."""
    folder = existing_dir(directory, where, EXPECTS)
    if not (folder / TEST_FILE).exists() and (folder / FOLDER).is_dir():
        folder = folder / FOLDER
    if not (folder / TEST_FILE).exists() and (folder / "test_batch").exists():
        raise UserError(f"{where}: {str(folder)!r} holds the pickled Python version of CIFAR-10, which is not "
                        f"read (unpickling runs code); expected {EXPECTS}")
    return folder


def read_batch(path: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, 3072), labels uint8 (n,)) of one batch file."""
    if not path.is_file():
        raise UserError(f"{where}: {str(path)!r} does not exist; expected {EXPECTS}")
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise UserError(f"{where}: cannot read {str(path)!r} ({exc}); expected {EXPECTS}") from None
    if raw.size == 0 or raw.size % RECORD:
        raise UserError(f"{where}: {str(path)!r} holds {raw.size} bytes; expected a whole number of "
                        f"{RECORD}-byte records (a label byte and 3x32x32 pixels)")
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0]
    if labels.max() >= CLASSES:
        row = int(np.argmax(labels >= CLASSES))
        raise UserError(f"{where}: {str(path)!r} record {row} has label {int(labels[row])}; "
                        f"expected 0..{CLASSES - 1}")
    return records[:, 1:], labels


def load_cifar10(directory: str, *, dtype: str = "float32") -> Dataset:
    """50 000 training and 10 000 test 32x32 colour images, shape (3, 32, 32), pixels scaled to
    [0, 1] and standardised per colour channel with training statistics."""
    where = f"dataset {'cifar10:' + directory!r}"
    folder = batches_dir(directory, where)
    train = [read_batch(folder / name, where) for name in TRAIN_FILES]
    test_images, test_labels = read_batch(folder / TEST_FILE, where)
    np_dtype = check_dtype(dtype)
    scaled = []
    for images in (np.concatenate([images for images, _ in train]), test_images):
        pixels = images.astype(np_dtype)  # cast first: no float64 copy of a float32 run's data
        pixels /= 255.0
        scaled.append(pixels)
    return build("cifar10", scaled[0], np.concatenate([labels for _, labels in train]), scaled[1], test_labels,
                 where=where, dtype=dtype, n_classes=CLASSES, image_shape=IMAGE_SHAPE)
