"""What a dask task runs: ``ist run`` in a temporary directory, returning the run file's bytes.

Kept to the standard library so a dask worker imports it cheaply. Dask worker processes
are daemonic and may not start multiprocessing children, so the run (which starts its own
worker processes) is a fresh ``python -m ist_cli run`` subprocess, not a function call.
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


def run_in_tempdir(run_id: str, args: list[str]) -> dict[str, Any]:
    """Execute one run here and hand back its exit code, output and file bytes."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ist-sweep-") as tmp:
        result = subprocess.run(run_command(args, run_id, tmp), capture_output=True, text=True, check=False)
        path = run_file_path(tmp, run_id)
        data = path.read_bytes() if path.exists() else None
    return {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr,
            "file": data, "host": socket.gethostname(), "pid": os.getpid(),
            "seconds": time.perf_counter() - started}
