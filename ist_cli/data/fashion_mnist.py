"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from its original IDX files, checked byte for byte.

The files come offline from Debian's ``dataset-fashion-mnist`` package (``DEFAULT_DIR``) or
from a directory the user names. Each file's *decompressed* content must have the published
sha256 below before it is parsed: Debian re-compressed the upstream ``.gz`` files (their gzip
headers differ), so a digest of the content is the one that holds for the upstream archive,
Debian's copy and an unpacked copy alike (docs/datasets.md gives the sources of the sums).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ist_cli.data.dataset import Dataset
from ist_cli.data.idx import FILES, find, idx_bytes, idx_dataset, read_idx
from ist_cli.errors import UserError

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
PACKAGE = "dataset-fashion-mnist"
CLASSES = 10
#: (samples, features, classes) and the bytes of the four decompressed files, for memory estimates
SHAPE = (70000, 784, CLASSES)
RAW_BYTES = 47040016 + 60008 + 7840016 + 10008
# sha256 of each file's decompressed content (the IDX bytes themselves).
SHA256 = {
    "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
EXPECTS = (f"the four Fashion-MNIST IDX files ({', '.join(FILES.values())}, raw or .gz); "
           f"'apt-get install {PACKAGE}' puts them in {DEFAULT_DIR}")


def fashion_mnist_dir(directory: str | None, where: str) -> Path:
    """The folder holding the files: ``directory`` if given, else the Debian package's."""
    folder = DEFAULT_DIR if directory is None else Path(directory).expanduser()
    if not folder.is_dir():
        what = "the Debian package is not installed" if directory is None else "no such directory"
        raise UserError(f"{where}: {str(folder)!r}: {what}; expected {EXPECTS}")
    return folder


def load_fashion_mnist(directory: str | None = None, *, dtype: str = "float32") -> Dataset:
    """60 000 training and 10 000 test 28x28 grey images of 10 clothing classes, shape (1, 28, 28),
    pixels scaled to [0, 1] and standardised with the training set's pixel mean and std."""
    where = "dataset " + repr("fashion-mnist" if directory is None else f"fashion-mnist:{directory}")
    folder = fashion_mnist_dir(directory, where)
    arrays = {}
    for key, stem in FILES.items():
        path = find(folder, stem, where)
        raw = idx_bytes(path, where)
        digest = hashlib.sha256(raw).hexdigest()
        if digest != SHA256[key]:
            raise UserError(f"{where}: {str(path)!r} has content sha256 {digest}; expected {SHA256[key]} "
                            "(the published Fashion-MNIST file): the file is damaged or not Fashion-MNIST")
        arrays[key] = read_idx(path, 1 if "labels" in key else 3, where, raw=raw)
    return idx_dataset("fashion-mnist", arrays, where=where, dtype=dtype, n_classes=CLASSES)
