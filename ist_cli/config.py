"""Run configuration: one table of options drives the CLI flags, TOML keys, ``--set``
overrides and sweep validation, so a key means the same thing everywhere.

A resolved config is a plain JSON-able dict holding only the keys that matter for its
model; its canonical JSON is what the run id hashes, so two spellings of the same run
get the same id.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ist_cli.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODELS = ("quadratic", "mlp")
ALGORITHMS = {"quadratic": ("ist", "gd", "dcgd"), "mlp": ("ist", "dp", "local-sgd", "single")}
BOTH = MODELS


# ----------------------------------------------------------------------------- parsers
def _int(minimum: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("an integer")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            value = value.strip()
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError("an integer") from None
        if minimum is not None and number < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return number

    parse.expects = "an integer" if minimum is None else f"an integer >= {minimum}"  # type: ignore[attr-defined]
    parse.range = (int, minimum, False)  # type: ignore[attr-defined]  # (kind, min, min_open): --help and completion
    return parse


def _float(positive: bool = False, nonnegative: bool = False) -> Callable[[Any], float]:
    expects = "a number > 0" if positive else "a number >= 0" if nonnegative else "a number"

    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(expects)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(expects) from None
        if not math.isfinite(number):
            raise ValueError(f"{expects} (finite)")
        if positive and number <= 0:
            raise ValueError(expects)
        if nonnegative and number < 0:
            raise ValueError(expects)
        return number

    parse.expects = expects  # type: ignore[attr-defined]
    parse.range = (float, 0.0 if positive or nonnegative else None, positive)  # type: ignore[attr-defined]
    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


_bool.expects = "true or false"  # type: ignore[attr-defined]


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value.strip()


_str.expects = "a string"  # type: ignore[attr-defined]


def _optional_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return _str(value)


_optional_str.expects = "a string"  # type: ignore[attr-defined]


def _int_list(value: Any) -> list[int]:
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [value]
    else:
        raise ValueError("a comma-separated list of integers >= 1")
    try:
        widths = [_int(1)(p) for p in parts]
    except ValueError:
        raise ValueError("a comma-separated list of integers >= 1") from None
    if not widths:
        raise ValueError("a comma-separated list of integers >= 1")
    return widths


_int_list.expects = "a comma-separated list of integers >= 1"  # type: ignore[attr-defined]

_SIZE_UNITS = {
    "bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "tbit": 1e12 / 8,
    "b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_bandwidth(value: Any) -> float:
    """Bandwidth in bytes per second from e.g. ``10Gbit``, ``1.25GB`` (per second implied)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError("a bandwidth > 0 such as 10Gbit, 100Mbit or 1GB")
        return float(value)
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-z]+)(?:/s|ps)?\s*", str(value))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError("a bandwidth > 0 such as 10Gbit, 100Mbit or 1GB")
    try:
        number = float(match.group(1)) * _SIZE_UNITS[unit]
    except ValueError:
        raise ValueError("a bandwidth > 0 such as 10Gbit, 100Mbit or 1GB") from None
    if not (number > 0 and math.isfinite(number)):
        raise ValueError("a bandwidth > 0 such as 10Gbit, 100Mbit or 1GB")
    return number


def parse_latency(value: Any) -> float:
    """Latency in seconds from e.g. ``50us``, ``1ms``, ``0``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a latency >= 0 such as 50us, 1ms or 0")
        return float(value)
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([a-zµ]*)\s*", str(value))
    unit = (match.group(2) or "s") if match else ""
    if not match or unit not in _TIME_UNITS:
        raise ValueError("a latency >= 0 such as 50us, 1ms or 0")
    try:
        number = float(match.group(1)) * _TIME_UNITS[unit]
    except ValueError:
        raise ValueError("a latency >= 0 such as 50us, 1ms or 0") from None
    if not (number >= 0 and math.isfinite(number)):
        raise ValueError("a latency >= 0 such as 50us, 1ms or 0")
    return number


def _spec_string(pattern: str, expects: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        if not re.fullmatch(pattern, text):
            raise ValueError(expects)
        return text

    parse.expects = expects  # type: ignore[attr-defined]
    return parse


def _checked(parser: Callable[[Any], Any], check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Keep the raw string (a canonical, human-readable value) but validate it with ``check``."""

    def parse(value: Any) -> Any:
        check(value)
        return str(value).strip() if isinstance(value, str) else value

    parse.expects = getattr(parser, "expects", "")  # type: ignore[attr-defined]
    return parse


# ----------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Option:
    """One run setting: its key (``local_steps``), flag (``--local-steps``) and rules."""

    key: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    models: tuple[str, ...] = BOTH
    is_flag_pair: bool = False
    metavar: str | None = None
    defaults_by_model: Mapping[str, Any] = field(default_factory=dict)

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def default_for(self, model: str) -> Any:
        return self.defaults_by_model.get(model, self.default)

    def expects(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return getattr(self.parse, "expects", "a valid value")

    def coerce(self, value: Any, *, source: str = "") -> Any:
        """Parse ``value`` or raise a one-line ``UserError`` naming it and what is allowed."""
        name = source or self.flag
        if value is None:
            return None
        if self.choices:
            text = str(value).strip()
            if text not in self.choices:
                raise UserError(f"{name}: {value!r} is not allowed; expected {self.expects()}")
            return text
        try:
            return self.parse(value)
        except ValueError as exc:
            raise UserError(f"{name}: {value!r} is not allowed; expected {exc}") from None


OPTIONS: tuple[Option, ...] = (
    Option("model", _str, "mlp", "Model to train.", choices=MODELS),
    Option("algorithm", _str, "ist", "Training algorithm (quadratic: ist|gd|dcgd; mlp: ist|dp|local-sgd|single)."),
    Option("workers", _int(1), 8, "Number of simulated workers (one OS process each)."),
    Option("rounds", _int(1), 200, "Communication rounds.", defaults_by_model={"quadratic": 500}),
    Option("lr", _float(positive=True), 0.1, "Step size (learning rate) > 0.", defaults_by_model={"quadratic": 0.02}),
    Option("local_steps", _int(1), 20, "Local steps per round (R).", defaults_by_model={"quadratic": 1}),
    Option("seed", _int(0), 0, "Seed of every random stream in the run."),
    Option("eval_every", _int(1), 10, "Evaluate and log every K rounds.", defaults_by_model={"quadratic": 1}),
    Option("bandwidth", _checked(_str, parse_bandwidth), "10Gbit", "Modelled link bandwidth, e.g. 10Gbit, 100Mbit, 1GB."),
    Option("latency", _checked(_str, parse_latency), "50us", "Modelled per-message latency, e.g. 50us, 1ms."),
    Option("topology", _str, "ps", "Modelled network: parameter server or ring.", choices=("ps", "ring")),
    # quadratic (Shulgin & Richtarik)
    Option("dim", _int(1), 64, "Dimension d of the quadratic.", models=("quadratic",)),
    Option("sketch", _str, "perm", "Sketch C_i of IST/DCGD.", choices=("perm", "rand", "identity"), models=("quadratic",)),
    Option("sketch_q", _int(1), None, "q of the Rand-q sketch (default d/n).", models=("quadratic",), metavar="Q"),
    Option("heterogeneity", _str, "heterogeneous", "Same A for all clients (homogeneous) or one per client.",
           choices=("homogeneous", "heterogeneous"), models=("quadratic",)),
    Option("interpolation", _bool, False, "b_i = L_i x_true with x_true = 0: every client (and sketch) shares the optimum.",
           models=("quadratic",), is_flag_pair=True),
    Option("client_samples", _int(1), None, "Rows m of each A_i (default 2d).", models=("quadratic",), metavar="M"),
    Option("l2", _float(nonnegative=True), 0.1, "Ridge term lambda added to every L_i.", models=("quadratic",)),
    Option("problem_file", _optional_str, None, "Load L (n,d,d) and b (n,d) from an .npz or .h5 file.",
           models=("quadratic",), metavar="PATH"),
    Option("save_params_every", _int(0), 0, "Store the iterate x every K rounds in /params/x (0: never).",
           models=("quadratic",)),
    # mlp (Yuan et al.)
    Option("hidden", _int_list, [512, 512], "Hidden widths, comma separated.", models=("mlp",), metavar="W1,W2"),
    Option("dataset", _spec_string(r"digits|synthetic|(npz|mnist|libsvm):.+",
                                   "digits, synthetic, npz:PATH, mnist:DIR or libsvm:PATH"),
           "digits", "Training data.", models=("mlp",), metavar="SPEC"),
    Option("batch_size", _int(1), 32, "Minibatch size per worker and local step.", models=("mlp",)),
    Option("momentum", _float(nonnegative=True), 0.0, "SGD momentum (0: plain SGD).", models=("mlp",)),
    Option("norm", _str, "batch", "Normalisation after each hidden layer (batch: batch statistics at train and test).", choices=("none", "batch"), models=("mlp",)),
    Option("partition", _spec_string(r"iid|dirichlet:[0-9.eE+-]+|shards:[0-9]+",
                                     "iid, dirichlet:ALPHA or shards:K"),
           "iid", "How training data is split across workers.", models=("mlp",), metavar="SPEC"),
    Option("dtype", _str, "float32", "Floating point type of the model.", choices=("float32", "float64"), models=("mlp",)),
    Option("subnet_scale", _str, "auto", "IST: multiply a subnet's hidden activations by n (width) or not (none); "
           "auto: width under --norm batch, none without.", choices=("auto", "none", "width"), models=("mlp",)),
    Option("synthetic_samples", _int(2), 20000, "Samples of the synthetic dataset.", models=("mlp",)),
    Option("synthetic_features", _int(1), 64, "Features of the synthetic dataset.", models=("mlp",)),
    Option("synthetic_classes", _int(2), 10, "Classes of the synthetic dataset.", models=("mlp",)),
)

OPTIONS_BY_KEY: dict[str, Option] = {opt.key: opt for opt in OPTIONS}


def _lookup(key: str, source: str) -> Option:
    normalized = key.strip().replace("-", "_")
    if normalized not in OPTIONS_BY_KEY:
        raise UserError(f"{source}: unknown key {key!r}; allowed keys: {', '.join(OPTIONS_BY_KEY)}")
    return OPTIONS_BY_KEY[normalized]


# ----------------------------------------------------------------------------- sources
def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file or raise a one-line UserError (missing file, bad syntax)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UserError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"config file {str(path)!r} is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {str(path)!r} cannot be read: {exc}") from None


def parse_set_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings from ``--set`` into a dict (values stay strings; options parse them)."""
    overrides: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set: {item!r} is not allowed; expected key=value, e.g. local_steps=5")
        key, value = item.split("=", 1)
        option = _lookup(key, "--set")
        overrides[option.key] = value
    return overrides


def check_keys(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Normalise keys (``-`` to ``_``) and reject unknown ones, naming ``source``."""
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            raise UserError(f"{source}: {key!r} is a table; expected a plain key = value setting")
        checked[_lookup(key, source).key] = value
    return checked


# ----------------------------------------------------------------------------- resolution
def resolve_config(*layers: Mapping[str, Any], sources: Iterable[str] | None = None) -> dict[str, Any]:
    """Merge layers (later wins) over the defaults and return a validated, canonical config.

    Only keys of the chosen model are kept. Raises ``UserError`` on any bad value or on
    a combination the model cannot run (e.g. a dimension Perm-q cannot split).
    """
    source_names = list(sources) if sources is not None else ["config"] * len(layers)
    merged: dict[str, tuple[Any, str]] = {}
    for layer, source in zip(layers, source_names, strict=True):
        for key, value in check_keys(layer, source).items():
            if value is not None:
                merged[key] = (value, source)

    model_value, model_source = merged.get("model", (OPTIONS_BY_KEY["model"].default, "default"))
    model = OPTIONS_BY_KEY["model"].coerce(model_value, source=_name(model_source, "model"))

    config: dict[str, Any] = {}
    for option in OPTIONS:
        if model not in option.models:
            continue
        if option.key in merged:
            value, source = merged[option.key]
            config[option.key] = option.coerce(value, source=_name(source, option.key))
        else:
            config[option.key] = option.default_for(model)
    config["model"] = model
    _check_combination(config, merged)
    return config


def _name(source: str, key: str) -> str:
    if source in ("cli", "default"):
        return "--" + key.replace("_", "-")
    return f"{source}: {key}"


def _check_combination(config: dict[str, Any], merged: Mapping[str, tuple[Any, str]]) -> None:
    def where(key: str) -> str:
        return _name(merged.get(key, (None, "cli"))[1], key)

    model, algorithm = config["model"], config["algorithm"]
    if algorithm not in ALGORITHMS[model]:
        raise UserError(
            f"{where('algorithm')}: {algorithm!r} is not allowed for model {model}; "
            f"expected one of {', '.join(ALGORITHMS[model])}"
        )
    if model == "quadratic":
        _check_quadratic(config, where)
    else:
        _check_mlp(config, where)


def _check_quadratic(config: dict[str, Any], where: Callable[[str], str]) -> None:
    n, d = config["workers"], config["dim"]
    if config["algorithm"] in ("gd", "dcgd") and config["local_steps"] != 1:
        raise UserError(
            f"{where('local_steps')}: {config['local_steps']} is not allowed for {config['algorithm']}; "
            "expected 1 (local steps are an IST setting)"
        )
    if config["algorithm"] != "gd" and config["sketch"] == "perm" and d % n != 0:
        raise UserError(
            f"{where('dim')}: {d} cannot be split by the Perm-q sketch over {n} workers; "
            f"expected a multiple of {n} (e.g. {max(n, d - d % n)})"
        )
    if config["sketch_q"] is not None and config["sketch_q"] > d:
        raise UserError(f"{where('sketch_q')}: {config['sketch_q']} is not allowed; expected 1..{d} (the dimension)")


def _check_mlp(config: dict[str, Any], where: Callable[[str], str]) -> None:
    n = config["workers"]
    if config["algorithm"] == "ist":
        for width in config["hidden"]:
            if width < n:
                raise UserError(
                    f"{where('hidden')}: width {width} is smaller than the {n} workers; "
                    f"IST needs every hidden layer to have at least {n} neurons"
                )
    partition = config["partition"]
    if partition.startswith("dirichlet:"):
        alpha = float(partition.split(":", 1)[1])
        if not (alpha > 0 and math.isfinite(alpha)):
            raise UserError(f"{where('partition')}: {partition!r} is not allowed; expected dirichlet:ALPHA with ALPHA > 0")
    if partition.startswith("shards:") and int(partition.split(":", 1)[1]) < 1:
        raise UserError(f"{where('partition')}: {partition!r} is not allowed; expected shards:K with K >= 1")


# ----------------------------------------------------------------------------- identity
def canonical_json(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """Stable id of a resolved config: the hash of its canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:length]


def default_run_name(config: Mapping[str, Any]) -> str:
    return f"{config['model']}-{config['algorithm']}-n{config['workers']}-s{config['seed']}-{config_hash(config, 8)}"
