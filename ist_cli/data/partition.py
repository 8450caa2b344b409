"""How the training set is divided among workers: i.i.d. or label-skewed (non-i.i.d.),
for studying IST and its baselines under data heterogeneity."""

from __future__ import annotations

import math

import numpy as np

from ist_cli.errors import UserError
from ist_cli.seeding import stream

EXPECTS = "iid, dirichlet:ALPHA (ALPHA > 0) or shards:K (K >= 1)"


def partition_indices(y: np.ndarray, n_workers: int, spec: str, seed: int) -> list[np.ndarray]:
    """Disjoint, sorted int64 index arrays, one per worker, covering every index of ``y``.

    - ``iid``: a seeded shuffle cut into ``n_workers`` near-equal parts.
    - ``dirichlet:ALPHA``: for every class, proportions p ~ Dirichlet(ALPHA, ..., ALPHA) over
      workers split that class's shuffled samples (Hsu et al. 2019); small ALPHA = strong skew.
      A worker left empty then takes one random sample from the currently largest worker.
    - ``shards:K``: samples sorted by label (random order within a label), cut into
      ``n_workers * K`` near-equal shards, K random shards per worker (McMahan et al. 2017),
      so each worker sees about K labels (at most 2K when shards straddle labels).

    Deterministic in ``seed``. Raises UserError if a worker would get no sample.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise UserError(f"partition: labels have shape {y.shape}; expected a 1-D label vector")
    n = int(y.shape[0])
    if isinstance(n_workers, bool) or not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
        raise UserError(f"--workers: {n_workers!r} is not allowed; expected an integer >= 1")
    if n < n_workers:
        raise UserError(
            f"--workers: {n_workers} workers but only {n} training samples; expected at most {n} workers"
        )
    spec = str(spec).strip()
    problem = partition_problem(spec)
    if problem:
        raise UserError(f"--partition: {spec!r} is not allowed; expected {problem}")
    kind, _, arg = spec.partition(":")
    rng = stream(seed, "data-partition")
    if kind == "iid":
        parts = np.array_split(rng.permutation(n), n_workers)
    elif kind == "dirichlet":
        parts = _dirichlet(y, n_workers, float(arg), rng)
    else:
        parts = _shards(y, n_workers, _shard_count(spec, int(arg), n, n_workers), rng)
    result = [np.sort(part).astype(np.int64) for part in parts]
    for worker, part in enumerate(result):
        if part.size == 0:  # defensive: each scheme above guarantees non-empty parts
            raise UserError(f"--partition: {spec!r} leaves worker {worker} without samples; expected fewer workers")
    return result


def partition_problem(spec: str) -> str | None:
    """What a partition spec should look like, when it does not (None when it is fine).

    The one home of the spec's rules: the option table's parser and ``partition_indices``
    both ask here, so a spec is refused with the same words wherever it comes from.
    """
    kind, colon, arg = str(spec).strip().partition(":")
    if kind == "iid" and not colon:
        return None
    if kind == "dirichlet" and arg:
        try:
            alpha = float(arg)
        except ValueError:
            alpha = math.nan
        return None if alpha > 0 and math.isfinite(alpha) else "dirichlet:ALPHA with ALPHA > 0"
    if kind == "shards" and arg:
        try:
            k = int(arg)
        except ValueError:
            k = 0
        return None if k >= 1 else "shards:K with K >= 1"
    return EXPECTS


def _shard_count(spec: str, k: int, n: int, n_workers: int) -> int:
    if n_workers * k > n:
        raise UserError(
            f"--partition: {spec!r} needs {n_workers} x {k} shards but there are only {n} training samples; "
            f"expected K <= {n // n_workers}"
        )
    return k


def _dirichlet(y: np.ndarray, n_workers: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    owner = np.empty(y.shape[0], dtype=np.int64)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        proportions = rng.dirichlet(np.full(n_workers, alpha))
        cuts = (np.cumsum(proportions)[:-1] * members.size).astype(np.int64)
        for worker, chunk in enumerate(np.split(members, cuts)):
            owner[chunk] = worker
    counts = np.bincount(owner, minlength=n_workers)
    for worker in np.flatnonzero(counts == 0):
        donor = int(np.argmax(counts))
        moved = rng.choice(np.flatnonzero(owner == donor))
        owner[moved] = worker
        counts[donor] -= 1
        counts[worker] += 1
    order = np.argsort(owner, kind="stable")
    return np.split(order, np.cumsum(counts)[:-1])


def _shards(y: np.ndarray, n_workers: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    shuffled = rng.permutation(y.shape[0])
    by_label = shuffled[np.argsort(y[shuffled], kind="stable")]
    shards = np.array_split(by_label, n_workers * k)
    order = rng.permutation(n_workers * k)
    return [np.concatenate([shards[s] for s in order[w * k : (w + 1) * k]]) for w in range(n_workers)]
