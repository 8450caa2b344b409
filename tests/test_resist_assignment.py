"""ResIST's block assignment: its invariants over many seeds and sizes, its law against an
exact enumeration of the authors' rule and against the drawn frequencies, its determinism."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from ist_cli.models import resist_assignment as ra


def enumerated_law(m: int, S: int, b: int) -> dict[int, float]:
    """Exact P(block 0 held by k workers) by enumerating every tuple of permutations the
    authors' rule can draw (windows of max(m // S, b) entries, the first m - S*size workers
    one more, duplicates dropped, then topped up to b uniformly among the blocks missing)."""
    q = math.ceil(max(S * b, m) / m)
    per = max(m // S, b)
    sizes = [per + (1 if i < m - S * per else 0) for i in range(S)]
    law: Counter = Counter()
    perms = list(itertools.permutations(range(m)))
    weight = 1.0 / len(perms) ** q
    for combo in itertools.product(perms, repeat=q):
        sequence = [x for perm in combo for x in perm]
        dist = {0: 1.0}  # distribution of block 0's holder count over the top-up draws
        start = 0
        for size in sizes:
            window = set(sequence[start : start + size])
            start += size
            if 0 in window:
                p_held = 1.0
            elif len(window) < b:
                p_held = (b - len(window)) / (m - len(window))
            else:
                p_held = 0.0
            new: Counter = Counter()
            for k, p in dist.items():
                new[k + 1] += p * p_held
                new[k] += p * (1 - p_held)
            dist = new
        for k, p in dist.items():
            law[k] += weight * p
    return {k: p for k, p in law.items() if p > 1e-15}


@pytest.mark.parametrize(("m", "S", "b"), [(5, 3, 2), (4, 2, 3), (5, 2, 4), (4, 3, 2), (5, 2, 3), (5, 4, 2), (5, 3, 3)])
def test_closed_form_law_equals_exact_enumeration(m, S, b):
    exact = enumerated_law(m, S, b)
    law = ra.holder_law(m, S, b)
    assert set(law) == set(exact)
    for k in exact:
        assert law[k] == pytest.approx(exact[k], abs=1e-10)  # float sums over 14,400 tuples
    assert sum(k * p for k, p in law.items()) == pytest.approx(S * b / m, abs=1e-12)


@pytest.mark.parametrize(("m", "S", "b"), [(22, 8, 4), (22, 4, 6), (22, 4, 8), (22, 4, 0), (5, 3, 2), (7, 8, 1)])
def test_drawn_holder_counts_follow_the_law(m, S, b):
    """Chi-square of one block's holder count per draw (a different block each draw; draws are
    independent), 4000 draws, against the closed form."""
    rng = np.random.default_rng(12345)
    draws = 4000
    counts: Counter = Counter()
    for i in range(draws):
        counts[int(ra.holder_counts(ra.assign_blocks(m, S, b, rng), m)[i % m])] += 1
    law = ra.holder_law(m, S, b)
    assert set(counts) <= set(law)
    if len(law) == 1:
        assert counts[next(iter(law))] == draws
        return
    ks = sorted(law)
    result = stats.chisquare([counts[k] for k in ks], [draws * law[k] for k in ks])
    assert result.pvalue > 1e-4


def test_beyond_two_permutations_the_enumerated_law_matches_the_draws():
    """S·b > 2m (three permutations, two straddling windows): no closed form is claimed; the
    exact enumeration's law must match the drawn frequencies and have mean S·b/m."""
    m, S, b = 4, 3, 3
    exact = enumerated_law(m, S, b)
    assert sum(k * p for k, p in exact.items()) == pytest.approx(S * b / m)
    with pytest.raises(ValueError):
        ra.holder_law(m, S, b)
    rng = np.random.default_rng(7)
    draws = 3000
    counts = Counter(int(ra.holder_counts(ra.assign_blocks(m, S, b, rng), m)[i % m]) for i in range(draws))
    ks = sorted(exact)
    assert set(counts) <= set(ks)
    assert stats.chisquare([counts[k] for k in ks], [draws * exact[k] for k in ks]).pvalue > 1e-4


def test_every_block_held_and_every_worker_gets_its_blocks_over_many_seeds():
    sizes = np.random.default_rng(0)
    for seed in range(400):
        m = int(sizes.integers(1, 30))
        S = int(sizes.integers(1, 12))
        b = int(sizes.integers(0, m + 1))
        assignment = ra.draw_assignment(m, S, b, seed, round_index=seed % 7)
        assert len(assignment) == S
        held = ra.holder_counts(assignment, m)
        assert held.min() >= 1, (m, S, b, seed)  # no block is ever held by nobody
        per = [a.size for a in assignment]
        assert min(per) >= b
        for a in assignment:
            assert a.dtype == np.int64 and np.all(np.diff(a) > 0) and np.all((a >= 0) & (a < m))
        if S * b <= m:  # a partition: each block once, sizes floor(m/S) or one more, the larger first
            assert held.max() == 1
            assert per == [m // S + (1 if i < m % S else 0) for i in range(S)]
        else:
            assert per == [b] * S
        np.testing.assert_array_equal(per, ra.blocks_per_worker(m, S, b))


def test_each_worker_holds_a_given_block_with_probability_size_over_m():
    rng = np.random.default_rng(3)
    m, S, b, draws = 10, 3, 0, 3000  # sizes 4, 3, 3
    hits = np.zeros(S)
    for _ in range(draws):
        for worker, blocks in enumerate(ra.assign_blocks(m, S, b, rng)):
            hits[worker] += 0 in blocks
    expected = np.array([4, 3, 3]) / m
    assert np.all(np.abs(hits / draws - expected) < 4 * np.sqrt(expected * (1 - expected) / draws))


def test_same_seed_and_round_same_assignment():
    one = ra.draw_assignment(22, 8, 4, seed=5, round_index=3)
    again = ra.draw_assignment(22, 8, 4, seed=5, round_index=3)
    assert all(np.array_equal(a, b) for a, b in zip(one, again, strict=True))
    others = [ra.draw_assignment(22, 8, 4, seed=5, round_index=4), ra.draw_assignment(22, 8, 4, seed=6, round_index=3)]
    for other in others:
        assert not all(np.array_equal(a, b) for a, b in zip(one, other, strict=True))


@pytest.mark.parametrize(("m", "S", "b"), [(0, 2, 0), (5, 0, 1), (5, 2, 6), (5, 2, -1)])
def test_bad_sizes_fail(m, S, b):
    with pytest.raises(ValueError):
        ra.assign_blocks(m, S, b, np.random.default_rng(0))
