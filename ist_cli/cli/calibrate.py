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
from ist_cli.errors import UserError, shown
from ist_cli.preflight import check_ranks
from ist_cli.runtime.budget import WORKER_BASE_BYTES
from ist_cli.runtime.mpi import world
from ist_cli.runtime.mpi_launch import launcher_rank, relaunch, require_mpi4py

MAX_SIZE = 2**30  # bytes per message: MPI counts are C ints, and every rank holds every size
MAX_SIZES = 64
MAX_REPEATS = 10_000
MAX_TRAFFIC = 2**40  # bytes the whole ping-pong may move (about minutes at memory speed)


def _sizes(text: str | None) -> tuple[int, ...]:
    if text is None:
        return DEFAULT_SIZES
    parts = [part.strip() for part in text.split(",") if part.strip()]
    sizes = tuple(int(part) for part in parts if part.isascii() and part.isdigit())
    if len(sizes) != len(parts) or not 2 <= len(sizes) <= MAX_SIZES or min(sizes) < 1 or max(sizes) > MAX_SIZE:
        raise UserError(f"--sizes: {shown(text)} is not allowed; expected 2 to {MAX_SIZES} comma-separated "
                        f"byte counts in 1..{MAX_SIZE}")
    return sizes


def _check_job(workers: int, sizes: tuple[int, ...], repeats: int) -> None:
    """The job fits before mpiexec starts: ranks (each holding every message size) and traffic."""
    check_ranks(workers + 1, "--workers", per_rank_bytes=WORKER_BASE_BYTES + sum(sizes))
    traffic = 2 * workers * (repeats + 2) * sum(sizes)
    if traffic > MAX_TRAFFIC:
        raise UserError(f"--repeats {repeats} x --sizes (sum {sum(sizes)} bytes) x {workers} workers moves "
                        f"{traffic} bytes; expected at most {MAX_TRAFFIC} (fewer repeats, sizes or workers)")


@click.command(context_settings={"max_content_width": 110})
@click.option("--transport", type=click.Choice(("mpi",)), default="mpi", show_default=True,
              help="What to measure (only MPI has a network to measure).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker ranks to start when not already inside an MPI launcher.")
@click.option("--sizes", type=str, default=None, metavar="BYTES,...",
              help=f"Message sizes in bytes (default: {DEFAULT_SIZES[0]} to {DEFAULT_SIZES[-1]}, powers of 2).")
@click.option("--repeats", type=click.IntRange(min=1, max=MAX_REPEATS), default=DEFAULT_REPEATS, show_default=True,
              help="Round trips per size (the fastest counts).")
@click.option("--json", "as_json", is_flag=True, help="Print the fit and the measurements as JSON on stdout.")
def calibrate_command(transport: str, workers: int, sizes: str | None, repeats: int, as_json: bool) -> None:
    """Ping-pong rank 0 with every worker rank; fit alpha (latency) and beta (bandwidth)."""
    chosen = _sizes(sizes)
    require_mpi4py()
    if launcher_rank() is None:
        _check_job(workers, chosen, repeats)
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
