"""The warm process a sweep's trials are forked from (``--isolation warm``; ``sweep/warm.py``).

Started once per executor slot as ``python -m ist_cli.cli.trial_server``, with the sweep's
own environment (the environment an ``ist run`` subprocess would get). It imports the whole
of ``ist run`` (config, runner, numpy, h5py, the transports), loads every kernel from numba's
cache and starts multiprocessing's resource tracker, then serves: each request on stdin
(one JSON line: ``argv``, ``stdout``, ``stderr``) goes to a child forked ahead of it, which
runs ``ist run ARGV`` exactly as ``python -m ist_cli run ARGV`` would, its output to the two
files, and leaves with ``os._exit``. The server answers ``{"pid"}`` at once and
``{"pid", "returncode", "cpu_seconds", "minor_faults"}`` when the child has ended: its own
report, written just before ``os._exit``, or, if it died first, its exit status (``returncode``
negative: the signal that killed it, as ``subprocess`` reports it; ``cpu_seconds``: the child's
user and system time; ``minor_faults``: its page faults, mostly copy-on-write of the server's pages). One run at a time per server, and one child waiting for the next request.

Why forking this process is safe: it never opens a file of a run (HDF5's library is loaded,
no file is open), never starts a thread (numba's threading layer is never started; OpenBLAS
shuts its pool down around ``fork`` and the child starts its own on first use), and holds no
pipe but its own stdin and replies, which the child closes first. A child that segfaults or
is killed takes nothing down with it: the server only sees its exit status. Ctrl-C reaches
the sweep's process group: the server ignores it, the child handles it as ``ist run`` does.
The server ends when stdin closes (the sweep is done or gone).
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
from typing import NamedTuple

#: imported and warmed once, in the server (``runtime.forkserver`` entries)
PRELOAD = (
    "ist_cli.cli.run",
    "ist_cli.algorithms.mlp",
    "ist_cli.algorithms.quadratic",
    "ist_cli.kernels.mlp:warm_up:float32",
    "ist_cli.kernels.mlp:warm_up:float64",
    "ist_cli.kernels.quadratic:warm_up",
    "ist_cli.data.digits:digits_arrays",
    # what every run file records of its code and machine: the code is the server's, loaded now
    "ist_cli.io.provenance:environment",
    "ist_cli.io.provenance:git_state",
    # what a run's first use would otherwise pay in every child, each time: the plug-in
    # groups' entry points, h5py's dimension scales (imported on first use), the digits split
    # and standardised (alone, and with a study's 10% validation set)
    "ist_cli.data.plugins:plugin_datasets",
    "ist_cli.models.sketches:plugin_sketches",
    "h5py._hl.dims",
    "ist_cli.data.load:keep_dataset:digits",
    "ist_cli.data.load:keep_dataset:digits,float32,0.1",
    "ist_cli.cli.trial_server:rehearse",
)


def rehearse() -> None:
    """Parse (never run) an ``ist run`` command line, resolve its config and check the kernels'
    cache: the first-use caches these fill (click's option types and abc checks, the config's
    compiled patterns, which kernels numba's cache holds) are then the server's, not redone by
    every child."""
    from ist_cli.cli import cli
    from ist_cli.cli.run import run_command
    from ist_cli.config import resolve_config, settings_from_config
    from ist_cli.kernels.cache import kernels_cached

    with cli.make_context("ist", ["run"]):
        pass
    with run_command.make_context("run", ["--set", "dataset=digits", "--quiet", "--json"]):
        pass
    settings_from_config(resolve_config(resolve_config({"dataset": "digits", "validation_fraction": 0.1})))
    kernels_cached([entry for entry in PRELOAD if entry.startswith("ist_cli.kernels.")])


def warm_up() -> list[str]:
    """Import and warm what a trial needs, each entry on its own: one that fails is left to the
    trial (which imports what it lacks and reports it) and the others still warm. Returns the
    entries that failed (a test requires none)."""
    from ist_cli.runtime.forkserver import run_preload

    failed = []
    for entry in PRELOAD:
        try:
            run_preload((entry,))
        except Exception:  # noqa: BLE001 - a cold trial imports what it lacks and fails loudly there
            failed.append(entry)
    try:
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()  # shared by every trial: none starts its own
    except Exception:  # noqa: BLE001 - each trial then starts its own, as a subprocess run does
        failed.append("resource_tracker")
    return failed


def run_trial(argv: list[str], stdout: str, stderr: str, closing: tuple[int, ...], done: int) -> None:
    """In the forked child: ``ist run ARGV`` with its output in files; never returns. Its exit
    status and CPU seconds go to ``done`` just before ``os._exit``: the server answers then,
    not after the kernel has torn the child's address space down (about 5 ms)."""
    code: object = 1
    try:
        for fd in closing:
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, stdout), (2, stderr)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
    except BaseException:  # noqa: BLE001 - could not even set the child up
        os._exit(1)
    try:
        from ist_cli.cli import main

        sys.argv = [os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "__main__.py"),
                    "run", *argv]
        main(["run", *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # noqa: BLE001 - the CLI turns every error into an exit code; this is a bug
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        import atexit

        atexit._run_exitfuncs()
        if not isinstance(code, int):
            if code is not None:
                print(code, file=sys.stderr)
            code = 0 if code is None else 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        try:
            own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            os.write(done, json.dumps({"returncode": code, "minor_faults": own.ru_minflt + reaped.ru_minflt,
                                       "cpu_seconds": own.ru_utime + own.ru_stime + reaped.ru_utime
                                       + reaped.ru_stime}).encode())
        except OSError:
            pass
        os._exit(code)


class _Child(NamedTuple):
    """A child forked ahead of its request, waiting for it on ``request``; ``done`` is read end
    of the pipe it reports its end on."""

    pid: int
    request: int
    done: int


def _fork_child(closing: tuple[int, ...]) -> _Child:
    """Fork the next trial's process now, while the current one runs: the fork (about 4 ms of a
    190 MB process's page tables) is off the next trial's path. The child waits for one request
    line, then runs it (first closing ``closing``: the server's pipes, the running child's report)."""
    request_r, request_w = os.pipe()
    done_r, done_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(request_w)
        os.close(done_r)
        with os.fdopen(request_r, "r") as requests:
            line = requests.readline()
        if not line.strip():  # the server is gone or closing: nothing to run
            os._exit(0)
        request = json.loads(line)
        run_trial(request["argv"], request["stdout"], request["stderr"], closing, done_w)
    os.close(request_r)
    os.close(done_w)
    return _Child(pid, request_w, done_r)


def _end_of(child: _Child) -> dict:
    """The child's own report, or (it died first: a signal, a crash) its exit status. Waits on
    the report pipe and on the child's pidfd: a grandchild that inherited the pipe (a worker
    forked by the run) cannot keep a dead child's end from being seen."""
    pidfd = os.pidfd_open(child.pid)
    try:
        ready, _, _ = select.select([child.done, pidfd], [], [])
        report = os.read(child.done, 4096) if child.done in ready else b""
        if not report:  # the report pipe may still hold it if both became ready together
            select.select([pidfd], [], [])
            os.set_blocking(child.done, False)
            try:
                report = os.read(child.done, 4096)
            except BlockingIOError:
                report = b""
    finally:
        os.close(pidfd)
        os.close(child.done)
    if report:
        return json.loads(report)
    _, status, usage = os.wait4(child.pid, 0)
    return {"returncode": os.waitstatus_to_exitcode(status), "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "minor_faults": usage.ru_minflt}


def serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing but replies reach the sweep
    os.close(devnull)
    warm_up()
    closing = (0, replies.fileno())
    child = _fork_child(closing)
    for line in sys.stdin:
        os.write(child.request, line.encode())
        os.close(child.request)
        replies.write(json.dumps({"pid": child.pid}) + "\n")
        # the next one is forked while this one runs, so that neither the fork nor its page
        # tables stand between this run's end and the next request (with the sweep's next run
        # submitted as soon as this one ends, a fork after the reply delays it)
        running, child = child, _fork_child((*closing, child.done))
        end = _end_of(running)
        replies.write(json.dumps({"pid": running.pid, **end}) + "\n")
        _reap()
    os.close(child.request)  # the waiting child reads end-of-file and leaves
    _reap()


def _reap() -> None:
    """Collect every child that has ended (they report before they exit; none stays a zombie)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    serve()
