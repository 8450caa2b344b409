"""Run under ``mpiexec -n 3``: two rounds of partitioned IST with no evaluation among them,
then close; rank 0 prints whether the model it asks of the owners, slice by slice, equals the
same rounds run in one process."""

from __future__ import annotations

import json

import numpy as np

from ist_cli.algorithms import build_algorithm
from ist_cli.config import resolve_config
from ist_cli.io.sliced import materialised
from ist_cli.runtime.mpi import release_workers, serve_worker, world
from ist_cli.runtime.mpi_peers import PeerTransport

CONFIG = {"model": "mlp", "algorithm": "ist", "server": "partitioned", "workers": 2, "hidden": [24, 16],
          "rounds": 10, "eval_every": 10, "local_steps": 2}


def fresh(local=True):
    algorithm = build_algorithm(resolve_config(CONFIG))
    arrays = {name: np.zeros(shape, dtype=dtype) for name, (shape, dtype) in algorithm.arena_spec().items()}
    algorithm.initialize(arrays)
    if local:  # the shards drawn into the arrays, as with shared memory
        algorithm.attach(None)
    return algorithm, arrays


def whole(final):
    """/final as plain arrays (a sliced one filled block by block, as the run file writer does)."""
    return {name: materialised(value) for name, value in final.items()}


if __name__ == "__main__":
    comm = world()
    if comm.Get_rank() > 0:
        serve_worker(comm)
    else:
        algorithm, arrays = fresh(local=False)
        transport = PeerTransport(algorithm.worker_program(), arrays, None, 2, comm)
        algorithm.attach(transport)
        transport.start()
        for round_index in (1, 2):
            algorithm.plan_round(arrays, round_index)
            results = [result for _, result in transport.run_round(round_index)]
            algorithm.aggregate(arrays, round_index, results)
        transport.close()  # the ranks stay: /final is asked of the owners, slice by slice
        over_mpi = whole(algorithm.final_params(arrays))
        release_workers(comm)
        reference, local = fresh()  # the same rounds in this process, as shared memory runs them
        programs = []
        for worker in range(2):
            program = reference.worker_program()
            program.setup(local, worker)
            programs.append(program)
        for round_index in (1, 2):
            reference.plan_round(local, round_index)
            results = []
            for program in programs:
                program.pack_down(round_index)
                results.append(program.step(round_index, None))
                program.unpack_up(round_index)
            reference.aggregate(local, round_index, results)
        in_process = whole(reference.final_params(local))
        print(json.dumps({"same": all(over_mpi[k].tobytes() == in_process[k].tobytes() for k in in_process),
                          "changed": any(not np.array_equal(in_process[k], v) for k, v in
                                         whole(fresh()[0].final_params(fresh()[1])).items()),
                          "collected": transport.attrs()["bytes_final_collect_measured"]}), flush=True)
