"""What a study's trial costs beyond its training, and a study's wall time, warm vs subprocess.

    python benchmarks/bench_study.py overhead [--trials 30] [--repeats 2]
    python benchmarks/bench_study.py study [--repeats 1] [--batch-sizes 4,32,256] [--trials 2]

``overhead``: trials with zero training steps (digits, the MLP of experiments/lee2021_digits.toml,
``goal_error = 1``: the initial model meets the goal, so the run evaluates once and stops).
Two figures per isolation, interleaved (warm, process, warm, ...), each with the 1-minute load
average read before and after:

- ``direct``: ``--trials`` runs forked one after another from one warm process
  (``sweep.warm.TrialServer``), or started as ``python -m ist_cli run`` subprocesses: the wall
  time from request to exit status (median), the run's own CPU time and its minor page faults
  (``getrusage``; forked, mostly copy-on-write copies of the warm process's pages);
- ``sweep``: the same trials as ``ist sweep --jobs 1``: each run's wall time as the manifest
  records it (submit to outcome, the sweep's bookkeeping around it not included) and the whole
  command's wall time divided by the trials.

``study``: ``ist study experiments/lee2021_digits.toml --jobs 2`` with ``--isolation process``
and with the default (warm), interleaved, ``--repeats`` times each, into fresh directories.
``--batch-sizes``/``--trials``/``--sparsities`` take a subset of the design (the same file
otherwise); ``--full`` runs the whole design. The answers of the two are compared and must
be equal: the study's (the report's JSON without the per-outcome trial counts and the fit's
bootstrap intervals, since which trials a budget stops depends on the order trials finish in)
with trial pruning, every trial's steps-to-result
with ``--no-prune`` (``--no-prune-trials``: the same work in both, whatever order trials
finish in).

Prints markdown tables with the date and ``uptime``. Timings are upper bounds on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import tomllib
from subcommands import run_subcommand

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "experiments" / "lee2021_digits.toml"
ZERO_STEP = {"model": "mlp", "algorithm": "single", "workers": 1, "dataset": "digits", "hidden": [128],
             "norm": "none", "validation_fraction": 0.1, "goal_error": 1.0, "max_steps": 6000,
             "eval_every_steps": 10, "local_steps": 10}


def load() -> float:
    return os.getloadavg()[0]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def trial_args(seed: int) -> list[str]:
    args = []
    for key, value in {**ZERO_STEP, "seed": seed}.items():
        args += ["--set", f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"]
    return args


def of_children() -> tuple[float, int]:
    """User + system seconds and minor page faults of this process's reaped children so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_minflt


def direct(isolation: str, trials: int, out: Path) -> dict:
    """``trials`` zero-step runs one after another: per-run wall and CPU seconds, minor page faults."""
    walls, cpus, faults = [], [], []
    if isolation == "warm":
        from ist_cli.sweep.warm import TrialServer

        server = TrialServer()
        server.run(["--help"], lambda pid: None)  # wait for its warm-up: not part of any trial
        try:
            for seed in range(trials):
                started = time.perf_counter()
                end = server.run(trial_args(seed) + ["--name", f"w{seed}", "--out", str(out), "--quiet", "--json"],
                                 lambda pid: None)
                walls.append(time.perf_counter() - started)
                cpus.append(end.cpu_seconds)
                faults.append(end.minor_faults)
                assert end.returncode == 0, end.stderr
        finally:
            server.close()
    else:
        for seed in range(trials):
            before = of_children()
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "ist_cli", "run", *trial_args(seed), "--name", f"p{seed}",
                                     "--out", str(out), "--quiet", "--json"], capture_output=True, text=True)
            walls.append(time.perf_counter() - started)
            after = of_children()
            cpus.append(after[0] - before[0])
            faults.append(after[1] - before[1])
            assert result.returncode == 0, result.stderr
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus), "min": min(walls), "max": max(walls),
            "faults": statistics.median(faults)}


def sweep(isolation: str, trials: int, out: Path) -> dict:
    """The same trials through ``ist sweep --jobs 1``."""
    grid = out.parent / f"{out.name}.toml"
    base = "\n".join(f"{key} = {json.dumps(value)}" for key, value in ZERO_STEP.items())
    grid.write_text(f'name = "zero"\nseeds = {list(range(trials))}\n[base]\n{base}\n')
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "ist_cli", "sweep", str(grid), "--out", str(out), "--jobs", "1",
                             "--quiet", "--isolation", isolation], capture_output=True, text=True)
    total = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    seconds = [run["history"][-1]["seconds"] for run in runs]
    return {"wall": statistics.median(seconds), "command": total / trials, "min": min(seconds), "max": max(seconds)}


def overhead(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        for repeat in range(args.repeats):
            for isolation in ("warm", "process"):
                for kind, measure in (("direct", direct), ("sweep", sweep)):
                    out = Path(tmp) / f"{kind}-{isolation}-{repeat}"
                    before = load()
                    figures = measure(isolation, args.trials, out)
                    rows.append((kind, isolation, repeat, figures, before, load()))
                    print(kind, isolation, repeat, {k: round(v * (1 if k == "faults" else 1000), 1)
                                                    for k, v in figures.items()},
                          f"load {before:.1f}-{load():.1f}", file=sys.stderr, flush=True)
    print(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {uptime()}\n")
    print(f"zero-step trials ({args.trials} per row), ms; load = 1-minute load average before-after\n")
    print("| measure | isolation | repeat | median wall | CPU (direct) / command per trial (sweep) | minor faults "
          "(direct) | min-max wall | load |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for kind, isolation, repeat, figures, before, after in rows:
        second = figures.get("cpu", figures.get("command"))
        faults = f"{figures['faults']:.0f}" if "faults" in figures else ""
        print(f"| {kind} | {isolation} | {repeat} | {figures['wall'] * 1000:.0f} | {second * 1000:.1f} | {faults} | "
              f"{figures['min'] * 1000:.0f}-{figures['max'] * 1000:.0f} | {before:.1f}-{after:.1f} |")


def study_subset(args: argparse.Namespace, directory: Path) -> Path:
    """The study file, or a copy with a subset of its design (same base, grid and search)."""
    if args.full:
        return STUDY
    text = STUDY.read_text()
    design = tomllib.loads(text)["study"]
    lines = []
    for line in text.splitlines():
        key = line.split("=")[0].strip()
        if key == "batch_sizes":
            line = f"batch_sizes = {[int(b) for b in args.batch_sizes.split(',')] if args.batch_sizes else design[key]}"
        elif key == "trials":
            line = f"trials = {args.trials or design[key]}"
        elif key == "sparsities" and args.sparsities:
            line = f"sparsities = {[float(s) for s in args.sparsities.split(',')]}"
        lines.append(line)
    path = directory / STUDY.name
    path.write_text("\n".join(lines) + "\n")
    return path


def answers(out: Path, pruned: bool) -> dict:
    """Unpruned: every trial's (steps-to-result, goal reached). Pruned: the study's answer (the
    report's JSON), since which trials a budget stops depends on the order trials finish in."""
    import h5py

    if pruned:
        from ist_cli.study.outcomes import OUTCOMES
        from ist_cli.study.results import load_study_result, to_json_text

        answer = json.loads(to_json_text(load_study_result(out)))
        answer.pop("directory", None)
        # order-dependent under pruning: how many trials a budget stopped, and the bootstrap
        # intervals, which resample the trials (a pruned trial counts as not reaching the goal)
        varies = {name.replace(" ", "_") for name in OUTCOMES} | {"k_min_low", "k_min_high", "b_c_low", "b_c_high"}
        answer["rows"] = [{k: v for k, v in row.items() if k not in varies} for row in answer["rows"]]
        return answer
    found = {}
    for path in sorted(out.glob("*.h5")):
        with h5py.File(path, "r") as f:
            found[path.name] = (int(f.attrs.get("steps_to_result", -2)), bool(f.attrs.get("goal_reached", False)))
    return found


def study(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        path = study_subset(args, Path(tmp))
        design = tomllib.loads(path.read_text())
        seen = {}
        for repeat in range(args.repeats):
            for isolation in ("process", "warm"):
                out = Path(tmp) / f"{isolation}-{repeat}"
                before, started = load(), time.perf_counter()
                result = subprocess.run([sys.executable, "-m", "ist_cli", "study", str(path), "--out", str(out),
                                         "--jobs", "2", "--json", "--quiet", "--isolation", isolation,
                                         *(["--no-prune-trials"] if args.no_prune else [])],
                                        capture_output=True, text=True)
                wall = time.perf_counter() - started
                assert result.returncode == 0, result.stderr
                summary = json.loads(result.stdout)
                seen.setdefault(repeat, {})[isolation] = answers(out, not args.no_prune)
                rows.append((isolation, repeat, wall, summary["total"], before, load(), datetime.now(timezone.utc)))
                print(isolation, repeat, f"{wall:.1f} s", f"load {before:.1f}-{load():.1f}", file=sys.stderr, flush=True)
        equal = all(pair["process"] == pair["warm"] for pair in seen.values())
    print(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {uptime()}\n")
    print(f"`ist study {STUDY.relative_to(ROOT)} --jobs 2`" + ("" if args.full else
          f", subset: batch_sizes {design['study']['batch_sizes']}, sparsities {design['study']['sparsities']}, "
          f"trials {design['study']['trials']}, grid and search as in the file")
          + (", `--no-prune-trials`" if args.no_prune else ", trial pruning on (the default)") + "\n")
    print("| isolation | repeat | trials | wall (s) | load before-after | ended (UTC) |")
    print("|---|---:|---:|---:|---|---|")
    for isolation, repeat, wall, total, before, after, ended in rows:
        print(f"| {isolation} | {repeat} | {total} | {wall:.1f} | {before:.1f}-{after:.1f} | {ended:%H:%M} |")
    for repeat in range(args.repeats):
        process = next(r[2] for r in rows if r[0] == "process" and r[1] == repeat)
        warm = next(r[2] for r in rows if r[0] == "warm" and r[1] == repeat)
        print(f"\nrepeat {repeat}: warm / process = {warm / process:.2f}")
    what = "every trial's steps-to-result" if args.no_prune else "the study's answer (report JSON)"
    print(f"\n{what} equal between the two: {equal}")


def main() -> None:
    run_subcommand(__doc__, {
        "overhead": (overhead, {"--trials": {"type": int, "default": 30}, "--repeats": {"type": int, "default": 2}}),
        "study": (study, {
            "--repeats": {"type": int, "default": 1},
            "--batch-sizes": {"default": "4,32,256"},
            "--trials": {"type": int, "default": 2},
            "--sparsities": {"default": None},
            "--full": {"action": "store_true", "help": "the whole design of the file"},
            "--no-prune": {"action": "store_true", "help": "--no-prune-trials: the same work in both"},
        }),
    })


if __name__ == "__main__":
    main()
