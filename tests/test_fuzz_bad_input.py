"""Bad-input fuzzing: hundreds of malformed values, every one refused by the contract.

Values are mutations of valid inputs (wrong types, out of range, NaN/inf, huge, empty,
control characters, truncations) for every run option through every channel (flag,
``--set``, TOML config, sweep file) and for every data format. For each: exit 2, exactly
one ``ist: error:`` line, no traceback, nothing in the output directory (not even the
directory) and no new ``/dev/shm`` entry.

Most cases run in-process through ``ist_cli.cli.main`` (the same code path as the console
script: the contract is what reaches stderr and the exit code), a representative share as
real subprocesses, so the whole file stays well under three minutes on two loaded cores.
"""

from __future__ import annotations

import io
import re
import zipfile
from contextlib import redirect_stderr
from pathlib import Path

import h5py
import numpy as np
import pytest

from ist_cli.cli import main
from ist_cli.config import OPTIONS
from ist_cli.runtime.arena import segment_owner
from ist_cli.runtime.processes import process_alive
from tests.helpers import assert_no_new_segments, ist, one_error_line, shm_entries

# a valid, cheap base: a bad value accepted by mistake costs a 1-round run, not minutes
QUAD = ["--model", "quadratic", "--workers", "2", "--dim", "4", "--rounds", "1", "--quiet"]
MLP = ["--model", "mlp", "--workers", "2", "--hidden", "4", "--rounds", "1", "--quiet"]

LONG = "9" * 5000
COMMON = ["", " ", "\x00", "a\nb", "\x1b[31m", LONG, "x" * 300]
INT_BAD = ["abc", "1.5", "-1", "nan", "inf", "1e999", "0x10", "2.0e", "--1", "1_0.5"]
FLOAT_BAD = ["abc", "nan", "inf", "-inf", "1e999", "1..2", "-1", "0.1.2", "1e"]


def malformed_flag_values(option) -> list[str]:
    """Malformed strings for one option, chosen from what its parser must refuse."""
    if option.is_flag_pair:
        return []
    key = option.key
    if option.choices:
        return COMMON + ["X", option.choices[0] + "\x00", option.choices[0].upper() + "!"]
    if key in ("bandwidth",):
        return COMMON + ["fast", "0Gbit", "-1Gbit", "nanGbit", "infGbit", "1e999Gbit", "10Gbitt", "Gbit"]
    if key in ("latency",):
        return COMMON + ["slow", "-1ms", "nanms", "infs", "1e999s", "1 lightyear", "ms"]
    if key == "hidden":
        return COMMON + ["0", "4,0", "4,-1", "4,,a", "4.5", "nan", "1e999", "[4]"]
    if key == "partition":
        return COMMON + ["dirichlet:1e", "dirichlet:1.2.3", "dirichlet:0", "dirichlet:-1", "dirichlet:nan",
                         "dirichlet:inf", "dirichlet:", "shards:0", "shards:x", "shards:1.5", "iidx"]
    if key == "dataset":
        return ["", "mnist", "npz:", "npz:/nonexistent.npz", "libsvm:/nonexistent", "mnist:/nonexistent",
                "csv:x", "digits\x00", "fashion-mnist:", "fashion-mnist:/nonexistent", "cifar10", "cifar10:/nonexistent",
                "cifar10:/dev/null"]
    if key == "problem_file":
        return ["/nonexistent.npz", "/dev/null", "/", "\x00"]
    if key in ("lr",):
        return COMMON + FLOAT_BAD + ["0"]
    if key in ("l2", "momentum"):
        return COMMON + FLOAT_BAD
    if key == "seed":
        return COMMON + INT_BAD + [str(2**63), str(2**70)]
    if key in ("model", "algorithm"):
        return COMMON + ["X"]
    expects = getattr(option.parse, "expects", "")
    if expects.startswith("a number in "):  # fractions: sparsity, validation_fraction, goal_error, end_lr_factor
        return COMMON + FLOAT_BAD + ["1.5", "-0.1"]
    return COMMON + INT_BAD + ["-5" if ">= 0" in expects else "0"]


def base_for(option) -> list[str]:
    """The cheap valid base for the option's model, without its own flag (which would win)."""
    base = MLP if "mlp" in option.models and "quadratic" not in option.models else QUAD  # SGD options: the MLP's
    flag = "--" + option.key.replace("_", "-")
    pairs = [base[i:i + 2] for i in range(0, len(base) - 1, 2) if base[i] != "--quiet"]
    return [item for pair in pairs if pair[0] != flag for item in pair] + ["--quiet"]


CASES = [(option.key, value) for option in OPTIONS for value in malformed_flag_values(option)]


def run_in_process(args: list[str]) -> tuple[int, str]:
    """``ist ARGS`` in this process: (exit code, stderr); 0 when it returned normally."""
    buffer = io.StringIO()
    try:
        with redirect_stderr(buffer):
            main(args)
    except SystemExit as exc:
        return exc.code, buffer.getvalue()
    return 0, buffer.getvalue()


def assert_refused(code: int, stderr: str, out: Path, context: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (context, code, stderr[-2000:])
    assert len(lines) == 1, (context, stderr[-2000:])
    assert lines[0].startswith("ist: error: "), (context, lines[0])
    assert "Traceback" not in stderr, (context, stderr[-2000:])
    quoted = lines[0].split("; allowed keys: ")[0]  # the list of every option's key grows with the table
    assert len(quoted) < 600, (context, "the message quotes too much of the value", len(quoted))
    assert not out.exists(), (context, "an output directory was created", sorted(p.name for p in out.rglob("*")))
    return lines[0]


def test_enough_cases_cover_every_option():
    assert len(CASES) >= 200
    covered = {key for key, _ in CASES}
    missing = {o.key for o in OPTIONS if not o.is_flag_pair} - covered
    assert not missing


@pytest.mark.slow
def test_every_malformed_option_value_is_refused_by_every_channel(tmp_path):
    """Each malformed value through its flag and through ``--set``: the contract holds."""
    before = shm_entries()
    out = tmp_path / "out"
    checked = 0
    for key, value in CASES:
        option = next(o for o in OPTIONS if o.key == key)
        flag = ["--" + key.replace("_", "-"), value] if "\x00" not in value else None
        channels = {"set": ["--set", f"{key}={value}"]}
        if flag:
            channels["flag"] = flag
        for channel, extra in channels.items():
            args = ["run", *base_for(option), "--out", str(out), *extra]
            code, stderr = run_in_process(args)
            assert_refused(code, stderr, out, f"{channel} {key}={value[:40]!r}")
            checked += 1
    assert checked >= 400
    assert_no_new_segments(before)


TOML_BAD = {
    "workers": ["0", "-3", "1.5", "nan", "inf", '"two"', "[2]", "{a = 1}", "true", str(-(2**64))],
    "seed": ["-1", str(2**63), "1e300", "nan", '"x"', "[]"],
    "lr": ["0", "-0.1", "nan", "inf", "-inf", '"fast"', "[0.1]", "true", "1e999"],
    "latency": ["nan", "inf", "-inf", "-1", "1e999", '"nan"', "[1]", "true"],
    "bandwidth": ["nan", "inf", "-inf", "0", "-1", '"infGbit"', "[1]", "false"],
    "hidden": ["[]", "[0]", "[4, -1]", "[4.5]", '["a"]', "[[4]]", "0", "nan", '"4,,"'],
    "partition": ['"dirichlet:1e"', '"dirichlet:1.2.3"', '"dirichlet:nan"', '"shards:0"', "3", "[1]"],
    "dim": ["0", "nan", "[4]", '""'],
}


def toml_cases() -> list[tuple[str, str]]:
    cases = [(key, f"{key} = {value}\n") for key, values in TOML_BAD.items() for value in values]
    cases += [
        ("nested", "a = " + "[" * 5000 + "]" * 5000 + "\n"),
        ("nested-table", "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n"),
        ("truncated", 'model = "quadr'),
        ("binary", "\x00\x01\x02"),
        ("unknown", "learning_rate = 0.1\n"),
        ("table", "[workers]\nn = 2\n"),
        ("other-model", 'sketch = "gauss"\n'),  # a quadratic key on an MLP run is still checked
        ("other-model2", "dim = -4\n"),
    ]
    return cases


@pytest.mark.slow
def test_malformed_toml_values_and_files_are_refused(tmp_path):
    out = tmp_path / "out"
    for index, (label, text) in enumerate(toml_cases()):
        config = tmp_path / f"c{index}.toml"
        config.write_text(text)
        # MLP base so quadratic-only keys are "another model's" and must still be validated
        code, stderr = run_in_process(["run", *MLP, "--config", str(config), "--out", str(out)])
        assert_refused(code, stderr, out, f"toml {label}: {text[:60]!r}")


def test_overridden_values_are_still_validated(tmp_path):
    """A bad value in the config file is an error even when a flag overrides it."""
    config = tmp_path / "c.toml"
    config.write_text("workers = -1\n")
    out = tmp_path / "out"
    code, stderr = run_in_process(["run", *QUAD, "--config", str(config), "--out", str(out)])
    line = assert_refused(code, stderr, out, "overridden")
    assert "workers" in line and "-1" in line


SWEEP_BAD = [
    "[grid]\nlr = [0.1, nan]\n",
    "[grid]\nlr = [0.1, inf]\n",
    "[grid]\nworkers = [2, 0]\n",
    "[grid]\nworkers = 2\n",
    "[grid]\nworkers = []\n",
    "[grid]\nbogus = [1]\n",
    "[grid]\nlatency = [nan]\n",
    "[grid]\npartition = [\"dirichlet:1e\"]\n",
    "[zip]\nlr = [0.1, 0.2]\nrounds = [1]\n",
    "replicates = 0\n",
    "replicates = -1\n",
    "replicates = 1.5\n",
    "replicates = \"3\"\n",
    "replicates = 1000000000\n",
    "seeds = []\n",
    "seeds = [-1]\n",
    f"seeds = [{2**63}]\n",
    "seeds = [nan]\n",
    "name = \"a/b\"\n",
    "name = \"\"\n",
    "bogus = 1\n",
    "base = 3\n",
    "[base]\nlr = nan\n",
    "[base]\nseed = 9223372036854775807\n[grid]\nlr = [0.1]\n" .replace("[grid]\nlr = [0.1]\n", "") + "replicates = 2\n",
    "[grid]\n" + "\n".join(f"{k} = [{', '.join(str(i + 1) for i in range(10))}]"
                         for k in ("workers", "rounds", "local_steps", "eval_every", "dim", "seed", "client_samples")),
]


@pytest.mark.slow
def test_malformed_sweep_files_are_refused(tmp_path):
    out = tmp_path / "out"
    for index, body in enumerate(SWEEP_BAD):
        text = body if body.startswith(("replicates", "seeds", "name", "bogus", "base")) else body
        sweep = tmp_path / f"s{index}.toml"
        sweep.write_text(text + ("" if "[base]" in text else '\n[base]\nmodel = "quadratic"\n'))
        code, stderr = run_in_process(["sweep", str(sweep), "--out", str(out), "--quiet"])
        assert_refused(code, stderr, out, f"sweep {text[:80]!r}")


# ----------------------------------------------------------------------------- data formats
def npz_variants(directory: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    good = {"X_train": rng.standard_normal((20, 3)).astype("f4"), "y_train": np.arange(20) % 2,
            "X_test": rng.standard_normal((6, 3)).astype("f4"), "y_test": np.arange(6) % 2}
    variants = {
        "missing": {k: v for k, v in good.items() if k != "y_test"},
        "nan": {**good, "X_train": np.full((20, 3), np.nan, dtype="f4")},
        "inf": {**good, "X_test": np.full((6, 3), np.inf, dtype="f4")},
        "lengths": {**good, "y_train": np.arange(19) % 2},
        "labels-float": {**good, "y_train": np.linspace(0, 1, 20)},
        "labels-negative": {**good, "y_train": -(np.arange(20) % 2)},
        "object": {**good, "X_train": np.array([{"a": 1}] * 20, dtype=object)},
        "strings": {**good, "X_train": np.array([["a"] * 3] * 20)},
        "one-class": {**good, "y_train": np.zeros(20, dtype=int), "y_test": np.zeros(6, dtype=int)},
        "n_classes-huge": {**good, "n_classes": np.int64(10**12)},
        "n_classes-float": {**good, "n_classes": np.float64(2.5)},
        "n_classes-array": {**good, "n_classes": np.array([2, 3])},
        "features": {**good, "X_test": rng.standard_normal((6, 4)).astype("f4")},
        "empty": {**good, "X_train": np.zeros((0, 3), "f4"), "y_train": np.zeros(0, int)},
    }
    paths = []
    for name, arrays in variants.items():
        path = directory / f"{name}.npz"
        np.savez(path, **arrays)
        paths.append(path)
    whole = (directory / "missing.npz").read_bytes()
    for cut in (10, len(whole) // 2, len(whole) - 5):
        path = directory / f"truncated-{cut}.npz"
        path.write_bytes(whole[:cut])
        paths.append(path)
    (directory / "garbage.npz").write_bytes(b"\x00" * 100)
    np.save(directory / "bare.npy", good["X_train"])
    paths += [directory / "garbage.npz", directory / "bare.npy"]
    return paths


def libsvm_variants(directory: Path) -> list[Path]:
    texts = {
        "word": "1 1:0.5\nspam\n",
        "zero-index": "1 0:0.5\n",
        "nan": "1 1:nan\n0 2:1\n",
        "inf": "1 1:inf\n0 2:1\n",
        "huge-index": f"1 {10**12}:1\n0 1:1\n",
        "colon": "1 1::1\n",
        "label": "x 1:1\n",
        "empty": "",
        "binary": "\x00\x01\x02\xff",
    }
    paths = []
    for name, text in texts.items():
        path = directory / f"{name}.svm"
        path.write_bytes(text.encode("latin-1"))
        paths.append(path)
    return paths


def problem_variants(directory: Path) -> list[Path]:
    L = np.stack([np.eye(4)] * 2)
    b = np.zeros((2, 4))
    variants = {
        "bare.npy": None,
        "missing-b.npz": {"L": L},
        "shape.npz": {"L": L[:, :3], "b": b},
        "clients.npz": {"L": np.stack([np.eye(4)] * 3), "b": np.zeros((3, 4))},
        "dim.npz": {"L": np.stack([np.eye(5)] * 2), "b": np.zeros((2, 5))},
        "nan.npz": {"L": L * np.nan, "b": b},
        "asym.npz": {"L": L + np.triu(np.ones((4, 4)), 1), "b": b},
        "singular.npz": {"L": np.zeros((2, 4, 4)), "b": b},
        "object.npz": {"L": np.array([None] * 32, dtype=object).reshape(2, 4, 4), "b": b},
    }
    paths = []
    for name, arrays in variants.items():
        path = directory / name
        if arrays is None:
            np.save(path, L)
        else:
            np.savez(path, **arrays)
        paths.append(path)
    with h5py.File(directory / "group.h5", "w") as handle:
        handle.create_group("L")
        handle["b"] = b
    with h5py.File(directory / "declared-huge.h5", "w") as handle:
        handle.create_dataset("L", shape=(2, 10**6, 10**6), dtype="f8", chunks=(1, 64, 64))
        handle["b"] = np.zeros((2, 10**6))
    with h5py.File(directory / "strings.h5", "w") as handle:
        handle["L"] = np.array([b"x"] * 32).reshape(2, 4, 4)
        handle["b"] = b
    (directory / "truncated.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    zipped = directory / "notzip.npz"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("L.npy", b"not an npy header")
        archive.writestr("b.npy", b"")
    paths += [directory / n for n in ("group.h5", "declared-huge.h5", "strings.h5", "truncated.h5")] + [zipped]
    return paths


@pytest.mark.slow
def test_malformed_data_files_are_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "out"
    before = shm_entries()
    cases = [["run", *MLP, "--dataset", f"npz:{p}"] for p in npz_variants(data)]
    cases += [["run", *MLP, "--dataset", f"libsvm:{p}"] for p in libsvm_variants(data)]
    cases += [["run", *QUAD, "--problem-file", str(p)] for p in problem_variants(data)]
    mnist = data / "mnist"
    mnist.mkdir()
    (mnist / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 7)
    cases.append(["run", *MLP, "--dataset", f"mnist:{mnist}"])
    for args in cases:
        code, stderr = run_in_process([*args, "--out", str(out)])
        assert_refused(code, stderr, out, " ".join(args[-2:]))
    assert len(cases) >= 40
    assert_no_new_segments(before)


SUBPROCESS_CASES = [
    [*QUAD, "--workers", "nan"],
    [*QUAD, "--seed", str(2**70)],
    [*QUAD, "--latency", "1e999s"],
    [*QUAD, "--set", "latency=nan"],
    [*MLP, "--partition", "dirichlet:1e"],
    [*MLP, "--hidden", "100000,100000"],
    [*QUAD, "--dim", "200000"],
    [*QUAD, "--name", ""],
    [*QUAD, "--name", "a\nb"],
    [*QUAD, "--name", "x" * 300],
    [*QUAD, "--name", "x" * 2000 + "\x01"],
    [*QUAD, "--lr", "x" * 10000],
]


@pytest.mark.slow
@pytest.mark.parametrize("args", SUBPROCESS_CASES, ids=lambda a: " ".join(a[-2:])[:40])
def test_representative_cases_as_real_processes(tmp_path, args):
    before = shm_entries()
    out = tmp_path / "out"
    line = one_error_line(ist("run", *args, "--out", str(out), timeout=120))
    assert len(line) < 600
    assert not out.exists()
    leaked = {name for name in shm_entries() - before
              if name.startswith("ist_") and not process_alive(segment_owner(name))}
    assert not leaked


def test_empty_out_is_refused(tmp_path):
    line = one_error_line(ist("run", *QUAD, "--out", "", cwd=tmp_path))
    assert "--out" in line
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the newer commands
# Values are drawn from seeded generators (each class its own), never copied from a bug report:
# the checks must hold for a family of values, not for the few anyone tried.
STUDY_BASE = ('[base]\nmodel = "mlp"\nalgorithm = "single"\nworkers = 1\nhidden = [4]\nrounds = 1\n'
              'goal_error = 0.5\nvalidation_fraction = 0.1\n')  # a study measures steps to a goal
DIGITS_SAMPLES = 1797


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string, every non-printable character as a \\u escape."""
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in text) + '"'


def generated_base_values(rng: np.random.Generator) -> list[tuple[str, str]]:
    """(key, TOML value) pairs that ``ist run`` refuses or could never run: batch sizes past
    int64 or past the dataset, data paths with control characters or that do not exist."""
    values = [("batch_size", str(int(2**63 + int(rng.integers(0, 2**62))) * int(rng.integers(1, 1000))))
              for _ in range(4)]
    values += [("batch_size", str(int(rng.integers(DIGITS_SAMPLES + 1, 10**7)))) for _ in range(4)]
    for _ in range(4):
        control = chr(int(rng.choice([0, 1, 7, 8, 27, 127, 155])))
        stem = "".join(rng.choice(list("abcxyz/._-"), size=int(rng.integers(1, 12))))
        kind = str(rng.choice(["npz", "libsvm", "mnist"]))
        values.append(("dataset", toml_string(f"{kind}:/{stem}{control}{stem}")))
        values.append(("dataset", toml_string(f"{kind}:/nonexistent-{rng.integers(10**9)}/{stem}")))
    values += [("lr", str(float(-rng.random()))), ("momentum", str(float(-rng.random()) - 1e-3)),
               ("eval_every", str(-int(rng.integers(1, 10**6))))]
    return values


@pytest.mark.slow
def test_study_and_sweep_base_values_run_refuses_are_refused_before_anything_exists(tmp_path):
    """A [base] (or grid) value ``ist run`` would refuse or could not run is refused up front by
    ``ist study`` and ``ist sweep``: nothing created, no trial started."""
    before = shm_entries()
    rng = np.random.default_rng(27)
    out = tmp_path / "out"
    checked = 0
    for index, (key, value) in enumerate(generated_base_values(rng)):
        study = tmp_path / f"study{index}.toml"
        base = STUDY_BASE + f"{key} = {value}\n"
        batch = "[2]" if key != "batch_size" else f"[{value}]"
        study.write_text((base if key != "batch_size" else STUDY_BASE) + f"[study]\nbatch_sizes = {batch}\ntrials = 1\n")
        sweep = tmp_path / f"sweep{index}.toml"
        axis = f"[grid]\n{key} = [{value}]\n" if key == "batch_size" else f"{key} = {value}\n[grid]\nlr = [0.1, 0.2]\n"
        sweep.write_text(STUDY_BASE + axis)
        for args in (["study", str(study)], ["sweep", str(sweep)]):
            code, stderr = run_in_process([*args, "--out", str(out), "--quiet"])
            line = assert_refused(code, stderr, out, f"{args[0]} {key} = {value[:60]}")
            assert key in line or "dataset" in line, line
            checked += 1
    assert checked >= 38
    assert_no_new_segments(before)


@pytest.mark.parametrize("command", ["study", "sweep"])
def test_empty_out_is_refused_by_study_and_sweep(tmp_path, command):
    spec = tmp_path / "s.toml"
    spec.write_text(STUDY_BASE + ("[study]\nbatch_sizes = [2]\ntrials = 1\n" if command == "study" else "[grid]\nlr = [0.1]\n"))
    work = tmp_path / "cwd"
    work.mkdir()
    for blank in ("", " ", "\t"):
        line = one_error_line(ist(command, str(spec), "--out", blank, "--quiet", cwd=work, timeout=60))
        assert "--out" in line
        assert list(work.iterdir()) == []


def closed_ports(count: int) -> list[int]:
    """Ports that were free a moment ago (bound, then closed): nothing listens there."""
    import socket

    ports = []
    for _ in range(count):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    return ports


def test_an_unreachable_dask_scheduler_is_refused_before_the_output_exists(tmp_path):
    files = {"study": tmp_path / "s.toml", "sweep": tmp_path / "g.toml"}
    files["study"].write_text(STUDY_BASE + "[study]\nbatch_sizes = [2]\ntrials = 1\n")
    files["sweep"].write_text(STUDY_BASE + "[grid]\nlr = [0.1, 0.2]\n")
    out = tmp_path / "out"
    for port in closed_ports(2):
        for command, spec in files.items():
            code, stderr = run_in_process([command, str(spec), "--out", str(out), "--executor", "dask",
                                           "--scheduler", f"tcp://127.0.0.1:{port}", "--quiet"])
            line = assert_refused(code, stderr, out, f"{command} scheduler port {port}")
            assert f"127.0.0.1:{port}" in line


def generated_theory_sizes(rng: np.random.Generator) -> list[list[str]]:
    """Inputs each inside its own option's range whose n·d³, rounds·d, samples·n·d³ or m·d
    terms exceed memory or the work cap."""
    cases = []
    for _ in range(3):
        workers = int(rng.integers(10**8, 10**11))
        cases.append(["--workers", str(workers), "--sketch", "rand", "--sketch-q", "2"])
        cases.append(["--rounds", str(int(rng.integers(10**11, 10**15)))])
        cases.append(["--theory-samples", str(int(rng.integers(10**13, 10**18)))])
        cases.append(["--client-samples", str(int(rng.integers(10**10, 10**13)))])
        dim = int(rng.choice([1024, 2048]))
        cases.append(["--dim", str(dim), "--workers", str(int(rng.integers(512, 4096)) // 16 * 16), "--sketch", "rand",
                      "--sketch-q", "2"])
    return cases


def test_theory_refuses_what_would_not_fit_or_finish_naming_the_values(tmp_path):
    before = shm_entries()
    rng = np.random.default_rng(2027)
    for args in generated_theory_sizes(rng):
        code, stderr = run_in_process(["theory", *args])
        line = assert_refused(code, stderr, tmp_path / "none", " ".join(args))
        assert args[1] in line, (args, line)  # the value named
        assert "expected" in line
    assert_no_new_segments(before)


def test_mpi_launches_beyond_the_rank_cap_are_refused_before_mpiexec(tmp_path):
    """``ist run --transport mpi`` and ``ist calibrate`` check the rank count against the cap
    (``IST_MAX_RANKS``, or 4 per core) before ``mpiexec`` starts: real processes, no children."""
    pytest.importorskip("mpi4py")
    import os

    rng = np.random.default_rng(7)
    out = tmp_path / "out"
    for _ in range(2):
        cap = int(rng.integers(2, 6))
        workers = int(rng.integers(cap, cap + 10**6))
        env = {**os.environ, "IST_MAX_RANKS": str(cap)}
        quad = [arg for i, arg in enumerate(QUAD) if "--workers" not in QUAD[max(i - 1, 0):i + 1]]
        for args in (["run", "--transport", "mpi", *quad, "--sketch", "rand", "--workers", str(workers),
                      "--out", str(out)], ["calibrate", "--workers", str(workers)]):
            result = ist(*args, env=env, timeout=60)
            line = one_error_line(result)
            assert str(workers + 1) in line and str(cap) in line and "IST_MAX_RANKS" in line, line
            assert "BAD TERMINATION" not in result.stderr + result.stdout
            assert not out.exists()
    result = ist("calibrate", "--workers", "1", env={**os.environ, "IST_MAX_RANKS": "zero"}, timeout=60)
    assert "IST_MAX_RANKS" in one_error_line(result)


def generated_calibrate_args(rng: np.random.Generator) -> list[list[str]]:
    big = [str(int(rng.integers(2**30 + 1, 2**62))) for _ in range(3)]
    many = ",".join(str(int(v)) for v in rng.integers(1, 1000, size=int(rng.integers(65, 200))))
    return [["--sizes", f"{rng.integers(1, 100)},{value}"] for value in big] + [
        ["--sizes", many], ["--sizes", f"{rng.integers(1, 9)}"], ["--sizes", f"1,{rng.integers(2, 9)}x"],
        ["--sizes", f"0,{rng.integers(1, 9)}"], ["--sizes", "1,²"],
        ["--repeats", str(int(rng.integers(10**4 + 1, 10**12)))],
        ["--sizes", f"{2**30},{2**30}", "--repeats", str(int(rng.integers(1000, 10**4)))],
    ]


def test_calibrate_refuses_sizes_and_repeats_before_mpiexec(tmp_path):
    pytest.importorskip("mpi4py")
    for args in generated_calibrate_args(np.random.default_rng(11)):
        result = ist("calibrate", *args, timeout=60, cwd=tmp_path)
        line = one_error_line(result)
        assert "--sizes" in line or "--repeats" in line, line
        assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- tampered sweep.json
TINY_STUDY = STUDY_BASE + "[study]\nbatch_sizes = [2, 4]\ntrials = 2\n"


def study_directory(tmp_path: Path) -> tuple[Path, Path]:
    """(study file, output directory holding its manifest), made by the library, no run executed."""
    from ist_cli.study.spec import load_study
    from ist_cli.sweep.manifest import Manifest

    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_STUDY)
    out = tmp_path / "study"
    Manifest(out).open(load_study(spec).sweep, force=False)
    return spec, out


def wrong_shapes(manifest: dict, rng: np.random.Generator) -> list[object]:
    """Manifests of the wrong shape: other JSON types, fields missing or of another type, run
    files outside the directory, statuses and ids no sweep writes."""
    import copy

    def junk() -> object:
        return [None, True, 1.5, int(rng.integers(-9, 9)), "nope", [1, 2, 3], {"a": 1}][int(rng.integers(7))]

    shapes: list[object] = [[1, 2, 3], "text", 42, None, True]
    for key in ("runs", "schema"):
        broken = copy.deepcopy(manifest)
        del broken[key]
        shapes.append(broken)
    for key in ("runs", "schema", "name", "spec"):
        broken = copy.deepcopy(manifest)
        broken[key] = junk() if key != "runs" else str(junk())
        shapes.append(broken)
    for field in ("id", "point", "config", "status", "file", "attempts", "history"):
        broken = copy.deepcopy(manifest)
        record = broken["runs"][int(rng.integers(len(broken["runs"])))]
        record[field] = junk() if field != "attempts" else str(junk())
        shapes.append(broken)
        broken = copy.deepcopy(manifest)
        broken["runs"][0].pop(field)
        if field not in ("attempts", "history", "config"):  # a study's trial needs its point
            shapes.append(broken)
    for _ in range(6):
        broken = copy.deepcopy(manifest)
        name = "".join(rng.choice(list("abcdef0123456789"), size=12)) + ".h5"
        broken["runs"][int(rng.integers(len(broken["runs"])))]["file"] = str(rng.choice([
            "../" * int(rng.integers(1, 6)) + name, "/tmp/" + name, f"sub/{name}", name, "..", ".", ""]))
        shapes.append(broken)
    broken = copy.deepcopy(manifest)
    broken["runs"].append(copy.deepcopy(broken["runs"][0]))  # a run twice
    shapes.append(broken)
    broken = copy.deepcopy(manifest)
    broken["runs"][0]["status"] = "finished-" + str(rng.integers(100))
    shapes.append(broken)
    broken = copy.deepcopy(manifest)
    broken["runs"][0]["point"]["batch_size"] = str(junk())  # a study's trial without a batch size
    shapes.append(broken)
    return shapes


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns) for p in directory.iterdir()}


@pytest.mark.slow
def test_a_manifest_of_any_wrong_shape_is_refused_by_study_sweep_and_report(tmp_path):
    import json

    spec, out = study_directory(tmp_path)
    sweep = tmp_path / "grid.toml"
    sweep.write_text(STUDY_BASE + "[grid]\nlr = [0.1]\n")
    manifest = json.loads((out / "sweep.json").read_text())
    segments = shm_entries()
    checked = 0
    for index, shape in enumerate(wrong_shapes(manifest, np.random.default_rng(5))):
        (out / "sweep.json").write_text(json.dumps(shape))
        before = snapshot(out)
        for args in (["study", str(spec), "--out", str(out), "--quiet"], ["study", str(spec), "--out", str(out),
                     "--dry-run"], ["sweep", str(sweep), "--out", str(out), "--quiet"], ["report", str(out)],
                     ["report", str(out), "--format", "json"]):
            code, stderr = run_in_process(args)
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert code == 2 and len(lines) == 1 and lines[0].startswith("ist: error: "), (index, args, stderr[-800:])
            assert "sweep.json" in lines[0] and "Traceback" not in stderr, (index, lines)
            assert snapshot(out) == before, (index, args, "the directory was changed")
            checked += 1
    assert checked >= 150
    assert_no_new_segments(segments)


def test_a_fifo_manifest_or_run_file_is_refused_without_being_opened(tmp_path):
    """A FIFO never has a writer here: any open of it would block the command for ever."""
    import os

    spec, out = study_directory(tmp_path)
    (out / "sweep.json").unlink()
    os.mkfifo(out / "sweep.json")
    for args in (["study", str(spec), "--out", str(out), "--quiet"], ["report", str(out)]):
        result = ist(*args, timeout=30)
        assert "FIFO" in one_error_line(result)
    for name in ("grid.toml", "run.h5"):
        os.mkfifo(tmp_path / name)
    assert "FIFO" in one_error_line(ist("sweep", str(tmp_path / "grid.toml"), timeout=30, cwd=tmp_path))
    assert "FIFO" in one_error_line(ist("theory", str(tmp_path / "run.h5"), timeout=30, cwd=tmp_path))
    assert "FIFO" in one_error_line(ist("run", *QUAD, "--config", str(tmp_path / "grid.toml"), timeout=30,
                                        cwd=tmp_path))


# ----------------------------------------------------------------------------- terminal escapes
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_sequences(rng: np.random.Generator, count: int) -> list[str]:
    """ESC/CSI/OSC sequences and bare control characters, as a hostile file would hold them."""
    kinds = [lambda: f"\x1b[{rng.integers(0, 108)}m", lambda: f"\x1b]0;{rng.integers(10**6)}\x07",
             lambda: f"\x1b]8;;http://x/{rng.integers(99)}\x1b\\", lambda: "\x1b[2J\x1b[H", lambda: "\x9b31m",
             lambda: chr(int(rng.integers(1, 32))), lambda: "\r\x08\x7f"]
    return [kinds[int(rng.integers(len(kinds)))]() + kinds[int(rng.integers(len(kinds)))]() for _ in range(count)]


def run_capturing(args: list[str]) -> tuple[int, str]:
    """``ist ARGS`` in this process: (exit code, stdout + stderr)."""
    from contextlib import redirect_stdout

    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main(args)
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue() + err.getvalue()


@pytest.mark.slow
def test_no_control_character_from_a_file_reaches_the_terminal(tmp_path):
    """Run files, a study manifest and file names holding ESC/OSC sequences, through every
    text output of ist report (table, md, csv, json, study report) and ist theory."""
    import json
    import shutil

    rng = np.random.default_rng(99)
    runs = tmp_path / "runs"
    ist("run", *QUAD, "--out", str(runs), "--name", "base", check=True, timeout=300)
    escapes = escape_sequences(rng, 12)
    for index, text in enumerate(escapes[:4]):  # config strings and a varying key's values
        copy = runs / f"tampered{index}.h5"
        shutil.copy(runs / "base.h5", copy)
        with h5py.File(copy, "r+") as handle:
            config = json.loads(handle["config"][()])
            config.update(sketch=f"perm{text}", note=text, **{f"key{text}": 1})
            del handle["config"]
            handle["config"] = json.dumps(config)
            handle.attrs["run_id"] = f"{index:012x}"
    shutil.copy(runs / "base.h5", runs / f"named{escapes[4]}.h5".replace("/", "_"))
    (runs / f"garbage{escapes[5]}.h5".replace("/", "_")).write_bytes(b"not hdf5 " + escapes[5].encode())
    failed = runs / "failed.h5"
    shutil.copy(runs / "base.h5", failed)
    with h5py.File(failed, "r+") as handle:
        handle.attrs["status"] = "failed"
        handle.attrs["error"] = f"RuntimeError: {escapes[6]} boom"
        handle.attrs["run_id"] = "f" * 12
    outputs = []
    for fmt in ("table", "md", "csv", "json"):
        outputs.append(run_capturing(["report", str(runs), "--format", fmt, "--metric", "loss"]))
    outputs.append(run_capturing(["theory", str(runs / "tampered0.h5")]))  # refused: its sketch is not one
    outputs.append(run_capturing(["theory", str(runs / f"named{escapes[4]}.h5".replace("/", "_"))]))

    spec, study = study_directory(tmp_path)
    manifest = json.loads((study / "sweep.json").read_text())
    manifest["name"] = f"study{escapes[7]}"
    for record in manifest["runs"]:
        record["error"] = escapes[8]
    (study / "sweep.json").write_text(json.dumps(manifest))
    for fmt in ("table", "md", "csv", "json"):
        outputs.append(run_capturing(["report", str(study), "--format", fmt]))
    outputs.append(run_capturing(["report", str(tmp_path / f"missing{escapes[9]}".replace("/", "_"))]))
    assert [code for code, _ in outputs] == [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 2], [(code, text[-300:]) for code, text in outputs]
    for _, text in outputs:
        found = CONTROL.findall(text.replace("\n", "").replace("\t", ""))
        assert not found, (found, text[-1500:])
    assert any("\\x1b" in text for _, text in outputs)  # the sequences are shown, made visible


@pytest.mark.slow
def test_rich_markup_from_a_file_makes_no_escape_sequence_on_a_terminal(tmp_path, monkeypatch):
    """On a terminal (FORCE_COLOR) rich styles its own output with SGR sequences; markup held in
    a file's string (``[link=URL]``, ``[reverse]``) must stay text, not become an OSC 8 link."""
    import json

    monkeypatch.setenv("FORCE_COLOR", "1")
    rng = np.random.default_rng(3)
    spec, study = study_directory(tmp_path)
    manifest = json.loads((study / "sweep.json").read_text())
    markup = f"[link=http://example.invalid/{rng.integers(10**6)}]x[/link][reverse]y[/reverse]"
    manifest["name"] = markup
    (study / "sweep.json").write_text(json.dumps(manifest))
    code, text = run_capturing(["report", str(study)])
    assert code == 0, text[-1000:]
    plain = re.sub("\x1b\\[[0-9;]*m", "", text)  # rich's own colours and bold
    assert not CONTROL.findall(plain.replace("\n", "")), text[-1500:]
    assert "[link=" in plain
