"""How long a round may take before the run gives up on the workers that did not answer.

A worker that is stopped (``kill -STOP``), stuck in a kernel call or deadlocked never
answers and never dies, so the sentinels the pool watches never fire. The watchdog puts a
deadline on every wait. By default (``--round-timeout auto``) it is generous and learned:
``STARTUP_SECONDS`` until ``LEARN_ROUNDS`` rounds have been measured (the first rounds pay
for loading compiled kernels), then ``FACTOR`` times the slowest of those rounds, and never
less than ``FLOOR_SECONDS``. A number of seconds fixes the deadline instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

STARTUP_SECONDS = 600.0
LEARN_ROUNDS = 3
FACTOR = 50.0
FLOOR_SECONDS = 60.0
AUTO = "auto"


def parse_round_timeout(text: str) -> float | None:
    """``auto`` -> None (learned), or seconds > 0; raises ``ValueError`` naming what is allowed."""
    value = text.strip().lower()
    if value == AUTO:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError("auto or a number of seconds > 0") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError("auto or a number of seconds > 0")
    return seconds


@dataclass
class RoundWatchdog:
    """The deadline of the next wait; ``fixed`` seconds, or learned from the first rounds."""

    fixed: float | None = None
    _measured: list[float] = field(default_factory=list)

    def timeout(self) -> float:
        if self.fixed is not None:
            return self.fixed
        if len(self._measured) < LEARN_ROUNDS:
            return STARTUP_SECONDS
        return max(FLOOR_SECONDS, FACTOR * max(self._measured[:LEARN_ROUNDS]))

    def record(self, seconds: float) -> None:
        """The wall time of one round (send to last reply)."""
        if len(self._measured) < LEARN_ROUNDS:
            self._measured.append(seconds)

    def describe(self) -> str:
        if self.fixed is not None:
            return f"--round-timeout {self.fixed:g} s"
        return f"the automatic round timeout of {self.timeout():.0f} s (set --round-timeout to change it)"
