"""Random streams derived from (seed, purpose, round, worker) so results do not depend on
which process draws first or how the OS schedules them."""

from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, purpose: str, *indices: int) -> np.random.Generator:
    """A generator for ``purpose`` at e.g. ``(round, worker)``; same arguments, same numbers.

    ``purpose`` is any name ("plan", "worker", "data-split", ...); distinct names keep the
    streams of different uses apart even at the same indices.
    """
    tag = zlib.crc32(purpose.encode())
    # The index count is part of the entropy: SeedSequence ignores trailing zeros, so
    # without it (seed, p, r) and (seed, p, r, 0) would give the same stream.
    entropy = [int(seed), tag, len(indices), *map(int, indices)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))
