"""``ist calibrate --transport mpi``: the --latency/--bandwidth flags that make the model match this network.

Outside an MPI launcher it re-executes itself under ``mpiexec -n WORKERS+1`` (as ``ist run``
does); inside one, every worker rank of the job is measured against rank 0.
"""

from __future__ import annotations

import json
import sys

import click

from ist_cli.calibrate import DEFAULT_REPEATS, DEFAULT_SIZES, calibrate
from ist_cli.cli import say
from ist_cli.errors import UserError
from ist_cli.runtime.mpi import world
from ist_cli.runtime.mpi_launch import launcher_rank, relaunch, require_mpi4py


def _sizes(text: str | None) -> tuple[int, ...]:
    if text is None:
        return DEFAULT_SIZES
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if len(sizes) < 2 or min(sizes) < 1:
        raise UserError(f"--sizes: {text!r} is not allowed; expected two or more comma-separated byte counts >= 1")
    return sizes


@click.command(context_settings={"max_content_width": 110})
@click.option("--transport", type=click.Choice(("mpi",)), default="mpi", show_default=True,
              help="What to measure (only MPI has a network to measure).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker ranks to start when not already inside an MPI launcher.")
@click.option("--sizes", type=str, default=None, metavar="BYTES,...",
              help=f"Message sizes in bytes (default: {DEFAULT_SIZES[0]} to {DEFAULT_SIZES[-1]}, powers of 2).")
@click.option("--repeats", type=click.IntRange(min=1), default=DEFAULT_REPEATS, show_default=True,
              help="Round trips per size (the fastest counts).")
@click.option("--json", "as_json", is_flag=True, help="Print the fit and the measurements as JSON on stdout.")
def calibrate_command(transport: str, workers: int, sizes: str | None, repeats: int, as_json: bool) -> None:
    """Ping-pong rank 0 with every worker rank; fit alpha (latency) and beta (bandwidth)."""
    chosen = _sizes(sizes)
    require_mpi4py()
    if launcher_rank() is None:
        relaunch(workers + 1, sys.argv[1:])
    comm = world()
    if comm.Get_size() < 2:
        raise UserError("ist calibrate needs at least one worker rank; expected mpiexec -n 2 or more")
    result = calibrate(comm, chosen, repeats)
    if result is None:
        return
    if as_json:
        say(json.dumps(result.as_dict()))
        return
    say(f"alpha (latency)   {result.latency * 1e6:.3f} us")
    say(f"beta (bandwidth)  {result.bandwidth / 1e9:.3f} GB/s")
    say(f"fit residual      {100 * result.residual:.1f}% (largest relative miss over "
               f"{comm.Get_size() - 1} worker(s) x {len(chosen)} sizes)")
    say(f"flags             {result.flags}")
