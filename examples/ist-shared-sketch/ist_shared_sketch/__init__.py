"""A sketch plug-in: Rand-q with one set for all workers (C_1 = ... = C_n each round).

Each round one uniformly random set S of q coordinates is drawn and every worker gets it,
scaled by d/q so that E[C_i] = I, as Rand-q: every worker trains the same q coordinates.
"""

from __future__ import annotations

import numpy as np

from ist_cli.models.sketches import Sketch


class SharedRand(Sketch):
    """``support``: one q-subset, every row; ``q`` and ``weights`` (d/q) are the base class's."""

    def support(self, n: int, d: int, q: int, rng: np.random.Generator) -> np.ndarray:
        mask = np.zeros((n, d), dtype=bool)
        mask[:, rng.choice(d, size=q, replace=False)] = True
        return mask
