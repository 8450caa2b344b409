"""What every command checks before it creates a file or starts a process.

``ist run`` resolves its config (types and ranges, ``config.resolve_config``), then checks
here what it can tell without loading anything: integers that fit int64, data files that
exist as regular files, a batch no larger than a dataset of known size, and the memory
estimate (``footprint``). A sweep's and a study's runs go through the same
``check_run_inputs`` before their output directory exists, ``ist theory`` gets its own
size estimate (``check_theory``), an MPI launch checks its rank count (``check_ranks``)
and ``--executor dask --scheduler`` that the scheduler answers (``check_scheduler``).
Each refusal is one ``UserError`` line naming the value and what is allowed.
"""

from __future__ import annotations

import os
import socket
import time
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ist_cli.data import idx, libsvm, npz, problem_file
from ist_cli.data.files import existing_dir, existing_file
from ist_cli.errors import UserError, shown
from ist_cli.footprint import estimate_run, known_samples
from ist_cli.io.regular import regular_file
from ist_cli.runtime.budget import WORKER_BASE_BYTES, available_memory, check_memory, human_bytes
from ist_cli.runtime.spin import usable_cores

INT64_MAX = 2**63 - 1
#: MPI ranks allowed per available core unless ``IST_MAX_RANKS`` says otherwise
RANKS_PER_CORE = 4
MAX_RANKS_ENV = "IST_MAX_RANKS"
#: multiply-adds ``ist theory`` may spend (about an hour at a few GFLOP/s)
THEORY_MAX_WORK = 10**13
SCHEDULER_WAIT = 3.0  # seconds a dask scheduler's TCP port may take to accept a connection


def _prefixed(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def check_int64(config: Mapping[str, Any], where: str = "") -> None:
    """Every integer setting (and every width of a list) fits a signed 64-bit integer: the
    run file stores them as such and numpy indexes with them."""
    for key, value in config.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, int) and not isinstance(item, bool) and abs(item) > INT64_MAX:
                raise UserError(_prefixed(where, f"{key}: {shown(item)} is not allowed; expected an integer "
                                                 f"of at most {INT64_MAX} (int64)"))


def check_sources(config: Mapping[str, Any], where: str = "") -> None:
    """The files a run will read exist as regular files (a directory for ``mnist:``) and name
    no control character: the loaders' own path checks (``stat``, nothing opened), made
    before anything exists."""
    paths: list[tuple[str, str]] = []  # (kind, path)
    if "dataset" in config:  # models that read a data set
        kind, _, argument = str(config.get("dataset", "")).partition(":")
        if kind in ("npz", "libsvm", "mnist"):
            paths.append((kind, argument))
    if config.get("problem_file"):
        paths.append(("problem_file", str(config["problem_file"])))
    for kind, text in paths:
        label = "--problem-file" if kind == "problem_file" else f"dataset {kind + ':' + text!r}"
        if any(unicodedata.category(char) == "Cc" for char in text):
            raise UserError(_prefixed(where, f"{label}: {shown(text)} is not allowed; expected a path without "
                                             "control characters"))
        try:
            if kind == "npz":
                existing_file(text, label, npz.EXPECTS)
            elif kind == "libsvm":
                libsvm.resolve_paths(text, label)
            elif kind == "mnist":
                existing_dir(text, label, idx.EXPECTS)
            else:
                existing_file(text, label, problem_file.EXPECTS)
        except UserError as exc:
            raise UserError(_prefixed(where, str(exc))) from None


def check_batch_size(config: Mapping[str, Any], where: str = "") -> None:
    """A minibatch no larger than the dataset, when its size is known from the config
    (``digits``, ``synthetic``, ``mnist1d:N``; a file's size is known once it is read)."""
    batch = config.get("batch_size")
    samples = known_samples(config)
    if batch is not None and samples and int(batch) > samples:
        raise UserError(_prefixed(where, f"batch_size: {batch} is larger than the {samples} samples of dataset "
                                         f"{config['dataset']!r}; expected at most {samples}"))


def check_run_inputs(config: Mapping[str, Any], *, where: str = "", available: int | None = None,
                     sources: bool = True, ranks: bool = False) -> None:
    """Everything about a resolved run config that can be checked before anything exists
    (the data files only with ``sources``; the memory per MPI process with ``ranks``, all of
    them on this machine)."""
    check_int64(config, where)
    check_batch_size(config, where)
    if sources:
        check_sources(config, where)
    try:
        check_memory(estimate_run(config, ranks), available=available)
    except UserError as exc:
        raise UserError(_prefixed(where, str(exc))) from None


def check_runs(runs: Iterable[tuple[str, Mapping[str, Any], Iterable[str]]], *, files_here: bool = True) -> None:
    """``check_run_inputs`` for every (label, config, axis keys) of a sweep or a study, with one
    reading of the available memory; configs that differ only in what no check reads are
    checked once. A data path that an axis varies is the run's own (it fails alone, as a
    sweep's run may); one from the base is checked here, when the runs read their files on
    this machine (``files_here``: not for a dry run, nor for dask workers elsewhere)."""
    available = available_memory()
    seen: set[tuple] = set()
    for label, config, axes in runs:
        sources = files_here and not {"dataset", "problem_file"} & set(axes)
        key = (sources, *sorted((k, str(v)) for k, v in config.items() if k not in ("seed", "lr", "momentum")))
        if key in seen:
            continue
        seen.add(key)
        check_run_inputs(config, where=label, available=available, sources=sources)


# ----------------------------------------------------------------------------- ist theory
def theory_cost(config: Mapping[str, Any], samples: int | None) -> tuple[int, int]:
    """(bytes, multiply-adds) ``ist theory`` needs for the quadratic ``config`` (resolved).

    Memory: the clients' matrices L (n·d²) three times over (as ``footprint`` counts the
    generation; E[B̄L̄B̄] holds n d×d terms too), the generated A_i (count·m·d), and per round of the mean trajectory a
    d-vector plus its distance as a JSON number. Work: n·d³ for the closed-form moments and
    Theorems 1-2, samples·n·R·d³ for Monte Carlo, count·m·d² to generate, rounds·d² to
    iterate the mean.
    """
    n, d, rounds = int(config["workers"]), int(config["dim"]), int(config["rounds"])
    m = int(config.get("client_samples") or 2 * d)
    count = n if config.get("heterogeneity") == "heterogeneous" else 1
    steps = int(config.get("local_steps") or 1)
    memory = 3 * n * d * d * 8 + (0 if config.get("problem_file") else count * m * d * 8) + rounds * (d + 8) * 8
    work = n * d**3 + (int(samples) * n * steps * d**3 if samples else 0) + count * m * d * d + rounds * d * d
    return memory, work


def check_theory(config: Mapping[str, Any], samples: int | None, *, available: int | None = None) -> None:
    """Refuse, in one line naming the inputs, what ``ist theory`` could not hold or finish."""
    check_int64(config)
    memory, work = theory_cost(config, samples)
    inputs = (f"--workers {config['workers']}, --dim {config['dim']}, --rounds {config['rounds']}, "
              f"--client-samples {config.get('client_samples') or 2 * int(config['dim'])}"
              + (f", --theory-samples {samples}, --local-steps {config.get('local_steps', 1)}" if samples else ""))
    available = available_memory() if available is None else available
    if available is not None and memory > available:
        raise UserError(f"ist theory needs about {human_bytes(memory)} of memory for {inputs}; "
                        f"{human_bytes(available)} is available; expected smaller values")
    if work > THEORY_MAX_WORK:
        raise UserError(f"ist theory needs about {work:.2g} multiply-adds for {inputs}; expected at most "
                        f"{THEORY_MAX_WORK:.0e} (the n·d³ moments, samples·n·R·d³ Monte Carlo, rounds·d² mean)")


# ----------------------------------------------------------------------------- launches
def max_ranks() -> int:
    """The rank cap: ``IST_MAX_RANKS`` when set, else ``RANKS_PER_CORE`` per available core."""
    text = os.environ.get(MAX_RANKS_ENV)
    if text is None:
        return RANKS_PER_CORE * usable_cores()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"{MAX_RANKS_ENV}: {shown(text)} is not allowed; expected an integer >= 1")
    return value


def check_ranks(n_ranks: int, where: str, *, per_rank_bytes: int = WORKER_BASE_BYTES) -> None:
    """An MPI job of ``n_ranks`` ranks on this machine: at most ``max_ranks()``, and each
    rank's interpreter (``per_rank_bytes``) within the memory available; before ``mpiexec``."""
    cap = max_ranks()
    if n_ranks > cap:
        how = (f"{MAX_RANKS_ENV}={os.environ[MAX_RANKS_ENV]}" if MAX_RANKS_ENV in os.environ
               else f"{RANKS_PER_CORE} per core on {usable_cores()} cores")
        raise UserError(f"{where}: {n_ranks - 1} workers need {n_ranks} MPI ranks; expected at most {cap} ranks "
                        f"({how}; set {MAX_RANKS_ENV} to raise the cap)")
    available = available_memory()
    if available is not None and n_ranks * per_rank_bytes > available:
        raise UserError(f"{where}: {n_ranks} MPI ranks need about {human_bytes(n_ranks * per_rank_bytes)} of "
                        f"memory; {human_bytes(available)} is available; expected fewer workers")


def check_sweep_directory(directory: Path) -> None:
    """Nothing a sweep reads in ``directory`` (``sweep.json``, ``.sweep.lock``, claims, run
    files) is a FIFO, socket or device: each is refused by name, from ``stat`` alone."""
    for entry in sorted(directory.iterdir()):
        if entry.name.endswith((".json", ".lock", ".h5", ".tmp")):
            regular_file(entry, "--out", "a sweep directory written by ist")


def check_scheduler(address: str, wait: float = SCHEDULER_WAIT) -> None:
    """A ``tcp://``/``tls://`` dask scheduler address whose port accepts a connection within
    ``wait`` seconds (tried again while refused: a scheduler may be starting); other
    protocols are left to dask."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise UserError(f"--scheduler: {shown(address)} is not allowed; expected an address such as tcp://HOST:8786")
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic())):
                return
        except OSError as exc:
            if time.monotonic() + 0.2 >= deadline or not isinstance(exc, ConnectionRefusedError):
                reason = exc.strerror or type(exc).__name__
                raise UserError(f"--scheduler: cannot connect to {shown(address)} ({reason}, tried for "
                                f"{wait:g} s); expected the address of a running dask scheduler, e.g. "
                                "tcp://HOST:8786") from None
            time.sleep(0.2)
