"""LIBSVM / SVMlight text files (``label idx:val ...``, 1-based indices), read without any
network or extra package, with errors that point at the offending line."""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ist_cli.data.dataset import Dataset, build, check_dtype, stratified_split
from ist_cli.data.files import existing_file
from ist_cli.errors import UserError

EXPECTS = "a LIBSVM text file of lines 'label index:value ...' with 1-based indices"
# A dense copy larger than this is refused: LIBSVM files can hold millions of sparse features.
MAX_DENSE_BYTES = 8 * 1024**3


@dataclass
class Sparse:
    """One parsed file in coordinate form."""

    labels: np.ndarray  # float64, one per sample
    rows: np.ndarray
    cols: np.ndarray  # 0-based
    values: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.cols.max()) + 1 if self.cols.size else 0


def parse_libsvm(path: Path, where: str) -> Sparse:
    """Parse ``path`` (optionally gzip). ``#`` starts a comment; ``qid:`` tokens are ignored."""
    labels: list[float] = []
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, 1):
                text = line.split("#", 1)[0].split()
                if not text:
                    continue

                def fail(problem: str, lineno: int = lineno) -> UserError:
                    return UserError(f"{where}: {str(path)!r} line {lineno}: {problem}; expected {EXPECTS}")

                try:
                    label = float(text[0])
                except ValueError:
                    raise fail(f"label {text[0]!r} is not a number") from None
                if not math.isfinite(label) or label != round(label):
                    raise fail(f"label {text[0]!r} is not an integer class label")
                row = len(labels)
                labels.append(label)
                seen: set[int] = set()
                for token in text[1:]:
                    key, colon, value = token.partition(":")
                    if key == "qid":
                        continue
                    try:
                        index, number = int(key), float(value)
                    except ValueError:
                        raise fail(f"{token!r} is not index:value") from None
                    if not colon or index < 1:
                        raise fail(f"{token!r} has no 1-based index (index >= 1)")
                    if not math.isfinite(number):
                        raise fail(f"{token!r} holds NaN or inf; expected finite features")
                    if index in seen:
                        raise fail(f"index {index} appears twice")
                    seen.add(index)
                    rows.append(row)
                    cols.append(index - 1)
                    values.append(number)
    except UnicodeDecodeError:
        raise UserError(f"{where}: {str(path)!r} line {lineno + 1} is not UTF-8 text; expected {EXPECTS}") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"{where}: cannot read {str(path)!r} ({exc}); expected {EXPECTS}") from None
    if not labels:
        raise UserError(f"{where}: {str(path)!r} holds no samples; expected {EXPECTS}")
    return Sparse(np.array(labels), np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64),
                  np.array(values, dtype=np.float64))


def densify(sparse: Sparse, n_features: int, dtype: np.dtype) -> np.ndarray:
    X = np.zeros((sparse.labels.size, n_features), dtype=dtype)
    X[sparse.rows, sparse.cols] = sparse.values
    return X


def resolve_paths(spec_path: str, where: str) -> tuple[Path, Path | None]:
    """(train, test) files: ``TRAIN,TEST``; or ``PATH`` plus ``PATH.t`` if that exists
    (the LIBSVM site's convention); or ``PATH`` alone (test is split off)."""
    if "," in spec_path and not Path(spec_path).expanduser().exists():
        train_text, test_text = spec_path.split(",", 1)
        return existing_file(train_text, where, EXPECTS), existing_file(test_text, where, EXPECTS)
    train = existing_file(spec_path, where, EXPECTS)
    companion = train.with_name(train.name + ".t")
    return train, (companion if companion.is_file() else None)


def load_libsvm(spec_path: str, *, dtype: str = "float32") -> Dataset:
    """Labels become 0..K-1 in the numeric order of the distinct labels found in the files
    (so -1/+1 become 0/1 and 1..10 become 0..9); features are densified and standardised."""
    where = f"dataset {'libsvm:' + spec_path!r}"
    np_dtype = check_dtype(dtype)
    train_path, test_path = resolve_paths(spec_path, where)
    train = parse_libsvm(train_path, where)
    test = parse_libsvm(test_path, where) if test_path is not None else None
    n_features = max(train.n_features, test.n_features if test else 0)
    if n_features == 0:
        raise UserError(f"{where}: no sample has any feature; expected {EXPECTS}")
    n_rows = train.labels.size + (test.labels.size if test else 0)
    if n_rows * n_features * np_dtype.itemsize > MAX_DENSE_BYTES:
        raise UserError(
            f"{where}: {n_rows} samples x {n_features} features do not fit a dense array of "
            f"{MAX_DENSE_BYTES >> 30} GiB; expected a smaller or lower-dimensional file"
        )
    all_labels = np.concatenate([train.labels, test.labels]) if test else train.labels
    classes = np.unique(all_labels)
    if classes.size < 2:
        raise UserError(f"{where}: every sample has label {classes[0]:g}; expected at least 2 classes")
    X = densify(train, n_features, np_dtype)
    y = np.searchsorted(classes, train.labels).astype(np.int64)
    name = f"libsvm:{train_path.name}"
    if test is not None:
        X_test = densify(test, n_features, np_dtype)
        y_test = np.searchsorted(classes, test.labels).astype(np.int64)
        return build(name, X, y, X_test, y_test, where=where, dtype=dtype, n_classes=classes.size)
    train_rows, test_rows = stratified_split(y)
    if test_rows.size == 0:
        raise UserError(f"{where}: {train.labels.size} samples are too few to split off a test set; expected more samples per class")
    return build(name, X[train_rows], y[train_rows], X[test_rows], y[test_rows], where=where, dtype=dtype,
                 n_classes=classes.size)
