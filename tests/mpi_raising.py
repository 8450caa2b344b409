"""Run under ``mpiexec -n 3``: worker 1 raises in round 2; rank 0 prints what it saw as JSON."""

from __future__ import annotations

import json

import numpy as np

from ist_cli.runtime.mpi import MPITransport, release_workers, serve_worker, world
from ist_cli.runtime.pool import WorkerFailed
from ist_cli.runtime.transport import Exchange, Region, WorkerProgram


class RaisingAtRound(WorkerProgram):
    """Writes round * 10 + worker into its row of x, which goes up; worker 1 raises at ``fail_round``."""

    def __init__(self, fail_round: int) -> None:
        self.fail_round = fail_round

    def setup(self, arrays: dict[str, np.ndarray], worker: int) -> None:
        self.x, self.worker = arrays["x"], worker

    def exchange(self, round_index: int) -> Exchange:
        return Exchange(up=(Region("x", self.worker),))

    def step(self, round_index: int, payload) -> int:
        if self.worker == 1 and round_index == self.fail_round:
            raise ValueError("planned failure")
        self.x[self.worker] = round_index * 10 + self.worker
        return self.worker


if __name__ == "__main__":
    comm = world()
    if comm.Get_rank() > 0:
        serve_worker(comm)
    else:
        arrays = {"x": np.zeros((2, 1))}
        transport = MPITransport(RaisingAtRound(fail_round=2), arrays, None, 2, comm)
        report = {}
        try:
            transport.start()
            transport.run_round(1)
            report["x_after_round_1"] = arrays["x"][:, 0].tolist()
            transport.run_round(2)
        except WorkerFailed as exc:
            report["error"] = str(exc)
            report["cause"] = str(exc.__cause__)
        finally:
            release_workers(comm)
        print(json.dumps(report))
