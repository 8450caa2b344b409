"""The warm process a sweep's trials are forked from (``--isolation warm``; ``sweep/warm.py``).

Started once per executor slot as ``python -m ist_cli.cli.trial_server``, with the sweep's
own environment (the environment an ``ist run`` subprocess would get). It imports the whole
of ``ist run`` (config, runner, numpy, h5py, the transports), loads every kernel from numba's
cache and starts multiprocessing's resource tracker, then serves: for each request on stdin
(one JSON line: ``argv``, ``stdout``, ``stderr``) it forks one child, which runs
``ist run ARGV`` exactly as ``python -m ist_cli run ARGV`` would, its output to the two
files, and leaves with ``os._exit``. The server answers ``{"pid"}`` at once and
``{"pid", "returncode", "cpu_seconds"}`` when the child has ended (``returncode`` negative:
the signal that killed it, as ``subprocess`` reports it; ``cpu_seconds``: the child's user
and system time). One child at a time per server.

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
import signal
import sys

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
    "ist_cli.io.provenance:git_commit",
)


def warm_up() -> None:
    """Import and warm what a trial needs; a failure leaves it to the trial (it reports it)."""
    from ist_cli.runtime.forkserver import run_preload

    try:
        run_preload(PRELOAD)
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()  # shared by every trial: none starts its own
    except Exception:  # noqa: BLE001 - a cold trial imports what it lacks and fails loudly there
        pass


def run_trial(argv: list[str], stdout: str, stderr: str, closing: tuple[int, ...]) -> None:
    """In the forked child: ``ist run ARGV`` with its output in files; never returns."""
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
        os._exit(code)


def serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing but replies reach the sweep
    os.close(devnull)
    warm_up()
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_trial(request["argv"], request["stdout"], request["stderr"], (0, replies.fileno()))
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status, usage = os.wait4(pid, 0)
        replies.write(json.dumps({"pid": pid, "returncode": os.waitstatus_to_exitcode(status),
                                  "cpu_seconds": usage.ru_utime + usage.ru_stime}) + "\n")


if __name__ == "__main__":
    serve()
