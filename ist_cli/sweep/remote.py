"""What a dask task runs: ``ist run`` in a temporary directory, returning the run file's bytes.

Kept to the standard library so a dask worker imports it cheaply. Dask worker processes
are daemonic and may not start multiprocessing children, so the run (which starts its own
worker processes) is not a function call: it is forked from a warm process the dask worker
keeps (``--isolation warm``, ``sweep/warm.py``) or is a fresh ``python -m ist_cli run``
subprocess (``--isolation process``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from ist_cli.io.names import run_file_path


def run_command(args: list[str], run_id: str, out_dir: str) -> list[str]:
    """The ``ist run`` command line of one sweep run."""
    return [sys.executable, "-m", "ist_cli", "run", *args, "--name", run_id, "--out", out_dir, "--quiet", "--json"]


def run_in_tempdir(run_id: str, args: list[str], isolation: str = "process") -> dict[str, Any]:
    """Execute one run here and hand back its exit code, output and file bytes; ``warm``:
    forked from this worker's warm process (``sweep/warm.py``), else a subprocess."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ist-sweep-") as tmp:
        command = run_command(args, run_id, tmp)
        if isolation == "warm":
            from ist_cli.sweep.warm import run_warm_here

            returncode, stdout, stderr = run_warm_here(command[4:])
        else:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            returncode, stdout, stderr = result.returncode, result.stdout, result.stderr
        path = run_file_path(tmp, run_id)
        data = path.read_bytes() if path.exists() else None
    return {"returncode": returncode, "stdout": stdout, "stderr": stderr,
            "file": data, "host": socket.gethostname(), "pid": os.getpid(),
            "seconds": time.perf_counter() - started}
