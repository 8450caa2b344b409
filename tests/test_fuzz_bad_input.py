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
