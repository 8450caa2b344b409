"""Small worker programs for runtime tests (importable by spawned processes)."""

from __future__ import annotations

import numpy as np

from ist_cli.runtime.transport import WorkerProgram


class RaisingProgram(WorkerProgram):
    """Worker 1 raises at ``fail_round``; others write their id into x."""

    def __init__(self, fail_round: int) -> None:
        self.fail_round = fail_round

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        self.x = arrays["x"]
        self.worker = worker

    def step(self, round_index: int, payload) -> int:
        if self.worker == 1 and round_index == self.fail_round:
            raise ValueError("planned failure")
        self.x[self.worker] = round_index * 10 + self.worker
        return self.worker


class EchoProgram(WorkerProgram):
    """Writes payload + worker into its slot and returns the sum it sees: shows shared views."""

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        self.x = arrays["x"]
        self.worker = worker

    def step(self, round_index: int, payload) -> float:
        self.x[self.worker] = payload + self.worker
        return float(self.x.sum())


class FailingAt(WorkerProgram):
    """A method's own program, except that worker 1 raises in ``step`` of round ``fail_round``."""

    def __init__(self, program: WorkerProgram, fail_round: int) -> None:
        self.program = program
        self.fail_round = fail_round

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        self.worker = worker
        self.program.setup(arrays, worker)

    def pack_down(self, round_index: int) -> None:
        self.program.pack_down(round_index)

    def step(self, round_index: int, payload):
        if self.worker == 1 and round_index == self.fail_round:
            raise ValueError("planned failure in step")
        return self.program.step(round_index, payload)

    def unpack_up(self, round_index: int) -> None:
        self.program.unpack_up(round_index)


def failing_transport(fail_round: int):
    """A ``TransportFactory``: the shared-memory pool running ``FailingAt`` around the method's program."""
    from ist_cli.runtime.pool import WorkerPool

    def factory(program, arrays, layout, n_workers):
        return WorkerPool(FailingAt(program, fail_round), layout, n_workers)

    return factory
