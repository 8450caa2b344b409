"""Run configuration: one table of options drives the CLI flags, TOML keys, ``--set``
overrides and sweep validation, so a key means the same thing everywhere.

A resolved config is a plain JSON-able dict holding only the keys that matter for its
model *and method*: each option says which models and algorithms use it (and, for a few,
which value of another setting), and ``resolve_config`` drops what the chosen method
ignores (or pins it, as ``single`` pins ``workers`` to 1). Its canonical JSON is what the
run id hashes, so two spellings of the same computation get the same id.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ist_cli.algorithms.plans import ARCHS, PLANS, plan_of
from ist_cli.comm import NetworkModel, parse_bandwidth, parse_latency
from ist_cli.data import synthetic
from ist_cli.data.dataset import DTYPES
from ist_cli.data.partition import EXPECTS as PARTITION_EXPECTS
from ist_cli.data.partition import partition_problem
from ist_cli.data.plugins import plugin_datasets
from ist_cli.errors import UserError, shown
from ist_cli.io.regular import kind_of
from ist_cli.models.shards import PARTITION_RULES
from ist_cli.models.sketches import PARTITIONED, SKETCHES, perm_splits, sketch_names
from ist_cli.models.theory import SERVER_UPDATE_DEFAULT, SERVER_UPDATES
from ist_cli.settings import CNNSettings, MLPSettings, QuadraticSettings
from ist_cli.training.schedule import SCHEDULES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MODELS = tuple(PLANS)  # quadratic, mlp, cnn
SGD_MODELS = ("mlp", "cnn")  # the networks trained by minibatch SGD: they share the data and optimizer options
STUDY_SECTION = "MLP optimizer, sparsity and goal"  # their ``ist run --help`` section (docs/sparsity.md)
OPTIMIZERS = ("sgd", "momentum", "nesterov")
GOAL_METRICS = ("val_error", "test_error", "train_error")
PRUNE_METHODS = ("snip", "random", "magnitude")
ALGORITHMS = {model: tuple(plans) for model, plans in PLANS.items()}  # their one home: the methods' plans
BOTH = MODELS
SEED_MAX = 2**63 - 1  # seeds feed numpy's SeedSequence and an HDF5 int64 attribute


# ----------------------------------------------------------------------------- parsers
def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    expects = "an integer" if minimum is None else f"an integer >= {minimum}"
    if maximum is not None:
        expects = f"an integer in {minimum}..{maximum}"

    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("an integer")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            value = value.strip()
        if isinstance(value, float):
            raise ValueError(expects)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(expects) from None
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise ValueError(expects)
        return number

    parse.expects = expects  # type: ignore[attr-defined]
    # (kind, min, min_open[, max, max_open]): --help and completion
    parse.range = (int, minimum, False) + (() if maximum is None else (maximum, False))  # type: ignore[attr-defined]
    return parse


def _float(positive: bool = False, nonnegative: bool = False) -> Callable[[Any], float]:
    expects = "a number > 0" if positive else "a number >= 0" if nonnegative else "a number"

    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(expects)
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
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
        parts = [p.strip() for p in value.split(",")]
        if any(not p for p in parts):  # "4,,8" or "4,": an empty width is a typo, not a separator
            raise ValueError("a comma-separated list of integers >= 1")
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

def _fraction(low_open: bool, high_open: bool) -> Callable[[Any], float]:
    """A number in [0, 1] with either end open, e.g. sparsity in [0, 1), a goal error in (0, 1]."""
    expects = f"a number in {'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    number = _float()

    def parse(value: Any) -> float:
        try:
            x = number(value)
        except ValueError:
            raise ValueError(expects) from None
        if x < 0 or x > 1 or (low_open and x == 0) or (high_open and x == 1):
            raise ValueError(expects)
        return x

    parse.expects = expects  # type: ignore[attr-defined]
    parse.range = (float, 0.0, low_open, 1.0, high_open)  # type: ignore[attr-defined]
    return parse


def _int_or_all(value: Any) -> int | str:
    if str(value).strip() == "all":
        return "all"
    try:
        return _int(1)(value)
    except ValueError:
        raise ValueError("an integer >= 1 or all") from None


_int_or_all.expects = "an integer >= 1 or all"  # type: ignore[attr-defined]


def _spec_string(pattern: str, expects: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        if not re.fullmatch(pattern, text):
            raise ValueError(expects)
        return text

    parse.expects = expects  # type: ignore[attr-defined]
    return parse


def _partition(value: Any) -> str:
    text = str(value).strip()
    problem = partition_problem(text)
    if problem:
        raise ValueError(problem)
    return text


_partition.expects = PARTITION_EXPECTS  # type: ignore[attr-defined]
DATASET_EXPECTS = "digits, synthetic, npz:PATH, mnist:DIR, libsvm:PATH, mnist1d[:N], fashion-mnist[:DIR] or cifar10:DIR"


_BUILTIN_DATASET = _spec_string(r"digits|synthetic|mnist1d(:[0-9]+)?|fashion-mnist|(npz|mnist|libsvm|fashion-mnist|cifar10):.+",
                                DATASET_EXPECTS)


def _dataset_spec(value: Any) -> str:
    """A built-in source's spec, or the name of an installed data set plug-in."""
    try:
        return _BUILTIN_DATASET(value)
    except ValueError:
        names = plugin_datasets()
        if str(value).strip() in names:
            return str(value).strip()
        raise ValueError(DATASET_EXPECTS + "".join(f", {name}" for name in names)) from None


_dataset_spec.expects = DATASET_EXPECTS  # type: ignore[attr-defined]


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
    #: algorithms that use the setting (None: every algorithm of ``models``)
    algorithms: tuple[str, ...] | None = None
    #: other settings the option depends on: used only when each holds one of the listed values
    requires: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    #: algorithm -> the value the method always runs with (kept in the config, not user-settable)
    pinned: Mapping[str, Any] = field(default_factory=dict)
    is_flag_pair: bool = False
    metavar: str | None = None
    defaults_by_model: Mapping[str, Any] = field(default_factory=dict)
    section: str = ""  # its ``ist run --help`` section ("" = by its models: common, quadratic or MLP)
    #: False: the key is left out of a config that holds its default (older run ids stay valid)
    recorded_when_default: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    def default_for(self, model: str) -> Any:
        return self.defaults_by_model.get(model, self.default)

    def used_by(self, config: Mapping[str, Any]) -> bool:
        """Does the method of ``config`` (model, algorithm and the settings in ``requires``) use this option?"""
        if config["model"] not in self.models:
            return False
        if self.algorithms is not None and config["algorithm"] not in self.algorithms:
            return False
        return all(config.get(key) in values for key, values in self.requires.items())

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
                raise UserError(f"{name}: {shown(value)} is not allowed; expected {self.expects()}")
            return text
        try:
            return self.parse(value)
        except ValueError as exc:
            raise UserError(f"{name}: {shown(value)} is not allowed; expected {exc}") from None


GENERATED = {"problem_file": (None,)}  # settings of the generated quadratic, unused with --problem-file

OPTIONS: tuple[Option, ...] = (
    Option("model", _str, "mlp", "Model to train.", choices=MODELS),
    Option("algorithm", _str, "ist", "Training algorithm ("
           + "; ".join(f"{model}: {'|'.join(names)}" for model, names in ALGORITHMS.items()) + ").",
           defaults_by_model={"cnn": "local-sgd"}),
    Option("workers", _int(1), 8, "Number of simulated workers (one OS process each); single: always 1.",
           pinned={"single": 1}),
    Option("rounds", _int(1), 200, "Communication rounds.", defaults_by_model={"quadratic": 500}),
    Option("lr", _float(positive=True), 0.1, "Step size (learning rate) > 0.", defaults_by_model={"quadratic": 0.02}),
    Option("local_steps", _int(1), 20, "Local steps per round (R); ist, local-sgd, single, resist; dp: always 1.",
           algorithms=("ist", "dp", "local-sgd", "single", "resist"), defaults_by_model={"quadratic": 1}, pinned={"dp": 1}),
    Option("seed", _int(0, SEED_MAX), 0, "Seed of every random stream in the run."),
    Option("eval_every", _int(1), 10, "Evaluate and log every K rounds.", defaults_by_model={"quadratic": 1}),
    Option("bandwidth", _checked(_str, parse_bandwidth), "10Gbit", "Modelled link bandwidth, e.g. 10Gbit, 100Mbit, 1GB."),
    Option("latency", _checked(_str, parse_latency), "50us", "Modelled per-message latency, e.g. 50us, 1ms."),
    Option("topology", _str, "ps", "Modelled network: parameter server or ring.", choices=("ps", "ring")),
    # quadratic (Shulgin & Richtarik)
    Option("dim", _int(1), 64, "Dimension d of the quadratic.", models=("quadratic",)),
    Option("sketch", _str, "perm", "Sketch C_i of IST/DCGD (perm-precond: Perm-q scaled by sqrt(n) L_i[j,j]^-1/2).",
           choices=sketch_names(), models=("quadratic",), algorithms=("ist", "dcgd")),
    Option("sketch_q", _int(1), None, "q of the Rand-q sketch and of plug-in sketches (default d/n).",
           models=("quadratic",), metavar="Q", algorithms=("ist", "dcgd"),
           requires={"sketch": ("rand", *sketch_names()[len(SKETCHES):])}),
    Option("server_update", _str, SERVER_UPDATE_DEFAULT, "IST: the server averages the workers' models (average) or "
           "adds their mean update z_i - C_i x to x (delta).", choices=SERVER_UPDATES, models=("quadratic",),
           algorithms=("ist",)),
    Option("heterogeneity", _str, "heterogeneous", "Same A for all clients (homogeneous) or one per client.",
           choices=("homogeneous", "heterogeneous"), models=("quadratic",), requires=GENERATED),
    Option("interpolation", _bool, False, "b_i = L_i x_true with x_true = 0: every client (and sketch) shares the optimum.",
           models=("quadratic",), requires=GENERATED, is_flag_pair=True),
    Option("client_samples", _int(1), None, "Rows m of each A_i (default 2d).", models=("quadratic",), metavar="M",
           requires=GENERATED),
    Option("l2", _float(nonnegative=True), 0.1, "Ridge term lambda added to every L_i.", models=("quadratic",),
           requires=GENERATED),
    Option("problem_file", _optional_str, None, "Load L (n,d,d) and b (n,d) from an .npz or .h5 file.",
           models=("quadratic",), metavar="PATH"),
    Option("save_params_every", _int(0), 0, "Store the iterate x every K rounds in /params/x (0: never).",
           models=("quadratic",)),
    # mlp (Yuan et al.)
    Option("hidden", _int_list, [512, 512], "Hidden widths, comma separated.", models=("mlp",), metavar="W1,W2"),
    Option("dataset", _dataset_spec, "digits",
           f"Training data: {DATASET_EXPECTS} (docs/datasets.md), or an installed plug-in's name (docs/extending.md).",
           models=SGD_MODELS, metavar="SPEC", defaults_by_model={"cnn": "fashion-mnist"}),
    # convnets (Lee et al.; docs/convnets.md)
    Option("arch", _str, "simple-cnn", "Convolutional network.", choices=tuple(ARCHS), models=("cnn",), section="convnet"),
    Option("widths", _int_list, None, "preact-resnet: channels of each stage (default 16,32,64).", models=("cnn",),
           requires={"arch": ("preact-resnet",)}, metavar="W1,W2,...", section="convnet", recorded_when_default=False),
    Option("blocks", _int_list, None, "preact-resnet: residual blocks of each stage (default 2,6,1).", models=("cnn",),
           requires={"arch": ("preact-resnet",)}, metavar="B1,B2,...", section="convnet", recorded_when_default=False),
    Option("eval_samples", _int(1), None, "Evaluate on at most N fixed rows of each set (default: at most 8192 "
           "training rows, every test and validation row).", models=SGD_MODELS, metavar="N",
           recorded_when_default=False),
    Option("batch_size", _int(1), 32, "Minibatch size per worker and local step.", models=SGD_MODELS),
    Option("momentum", _float(nonnegative=True), 0.0, "SGD momentum (0: plain SGD).", models=SGD_MODELS),
    Option("norm", _str, "batch", "Normalisation after each hidden layer (batch: batch statistics at train and test).", choices=("none", "batch"), models=("mlp",)),
    Option("partition", _partition, "iid", f"How training data is split across workers: {PARTITION_EXPECTS}.",
           models=SGD_MODELS,
           algorithms=("ist", "dp", "local-sgd", "resist"), metavar="SPEC"),
    Option("dtype", _str, "float32", "Floating point type of the model.", choices=DTYPES, models=SGD_MODELS),
    Option("subnet_scale", _str, "auto", "IST: multiply a subnet's hidden activations by n (width) or not (none); "
           "auto: width under --norm batch, none without.", choices=("auto", "none", "width"), models=("mlp",),
           algorithms=("ist",)),
    Option("server", _str, "central", "IST: where the model lives: on the coordinator (central) or in shards, one "
           "per worker, which exchange subnet pieces directly (partitioned; docs/cluster.md).",
           choices=("central", "partitioned"), models=("mlp",), algorithms=("ist",), recorded_when_default=False),
    Option("partition_rule", _str, "random", "IST: how hidden neurons are dealt to workers each round: a random "
           "permutation cut into blocks, or stratified (each block takes d/n^2 neurons of every owner's shard).",
           choices=PARTITION_RULES, models=("mlp",), algorithms=("ist",), recorded_when_default=False),
    Option("min_blocks", _int(0), 0, "ResIST: each worker holds at least B of the partitioned residual blocks a "
           "round (0: the blocks are dealt out disjointly; B > blocks/workers makes workers share blocks).",
           models=("cnn",), algorithms=("resist",), section="convnet", metavar="B"),
    Option("synthetic_samples", _int(2), synthetic.SAMPLES, "Samples of the synthetic dataset.", models=SGD_MODELS,
           requires={"dataset": ("synthetic",)}),
    Option("synthetic_features", _int(1), synthetic.FEATURES, "Features of the synthetic dataset.", models=SGD_MODELS,
           requires={"dataset": ("synthetic",)}),
    Option("synthetic_classes", _int(2), synthetic.CLASSES, "Classes of the synthetic dataset.", models=SGD_MODELS,
           requires={"dataset": ("synthetic",)}),
    # mlp: optimizer, sparsity and training to a goal (Shallue et al.; Lee et al.; docs/sparsity.md).
    # A setting that only matters for some value of another (prune without sparsity, goal_metric
    # without goal_error, optimizer without momentum) is dropped in _check_training.
    *(replace(option, models=SGD_MODELS, section=STUDY_SECTION) for option in (
        Option("optimizer", _str, None, "Update rule; default: momentum when --momentum > 0, else sgd.",
               choices=OPTIMIZERS),
        Option("lr_schedule", _str, "constant", "Learning rate over SGD steps: constant, or linear from --lr to "
               "--lr x --end-lr-factor over --decay-steps steps, then constant.", choices=SCHEDULES),
        Option("decay_steps", _int(1), None, "Steps of the linear decay (default: the run's whole step budget).",
               metavar="N", requires={"lr_schedule": ("linear-decay",)}),
        Option("end_lr_factor", _fraction(False, False), 0.01, "Final learning rate / --lr of the linear decay.",
               metavar="F", requires={"lr_schedule": ("linear-decay",)}),
        Option("eval_every_steps", _int(0), 0, "Also evaluate whenever the step count passes a multiple of K (0: off).",
               metavar="K"),
        Option("full_eval_every", _int(1), 1, "With --goal-error: measure the train/test/validation metrics at "
               "every K-th evaluation (and the last); the others measure the goal's set only (NaN elsewhere).",
               metavar="K", recorded_when_default=False),
        Option("validation_fraction", _fraction(False, True), 0.0, "Share of each class of the training set held "
               "out for val_loss/val_error (fixed seed; 0: none).", metavar="F"),
        Option("goal_error", _fraction(True, False), None, "Stop at the first evaluation whose --goal-metric is <= E.",
               metavar="E"),
        Option("goal_metric", _str, "val_error", "The error the goal is measured on.", choices=GOAL_METRICS),
        Option("max_steps", _int(0), 0, "Step budget: replaces --rounds by the rounds needed for S steps (0: off).",
               metavar="S"),
        Option("sparsity", _fraction(False, True), 0.0, "Fraction of prunable weights removed at initialisation.",
               metavar="S"),
        Option("prune", _str, "snip", "How weights are scored for pruning.", choices=PRUNE_METHODS),
        Option("snip_batches", _int_or_all, 1, "Training batches SNIP sums its gradient over (all: the whole set; "
               "the cnn default, as Lee et al.'s code).", metavar="K|all", requires={"prune": ("snip",)},
               defaults_by_model={"cnn": "all"}),
        Option("prune_biases", _bool, False, "Biases are prunable too (MLP default: weights only; cnn: all "
               "parameters, as Lee et al.'s code).", is_flag_pair=True, defaults_by_model={"cnn": True}),
        Option("noise_scale_every", _int(0), 0, "Log the gradient noise scale every K evaluations (0: off).",
               metavar="K"),
        Option("lipschitz_every", _int(0), 0, "Log the local Lipschitz estimate every K evaluations (0: off).",
               metavar="K"),
    )),
)

_PARSERS: dict[type, Callable[[Any], Any]] = {bool: _bool, int: _int(), float: _float(), str: _str}


def _plugin_options() -> tuple[Option, ...]:
    """The own settings of installed method plug-ins (``MethodPlan.options``), each used by its
    method alone; a key two plug-ins of one model declare is one option, the first's."""
    found: dict[str, Option] = {}
    for model, plans in PLANS.items():
        for plan in plans.values():
            for key, (default, text) in plan.options.items():
                if key in found and found[key].models == (model,):
                    found[key] = replace(found[key], algorithms=(*found[key].algorithms, plan.algorithm))
                elif key not in found:
                    found[key] = Option(key, _PARSERS[type(default)], default, f"{plan.algorithm}: {text}",
                                        models=(model,), algorithms=(plan.algorithm,),
                                        is_flag_pair=isinstance(default, bool))
    return tuple(found.values())


OPTIONS += _plugin_options()
OPTIONS_BY_KEY: dict[str, Option] = {opt.key: opt for opt in OPTIONS}


def _lookup(key: str, source: str) -> Option:
    normalized = key.strip().replace("-", "_")
    if normalized not in OPTIONS_BY_KEY:
        raise UserError(f"{source}: unknown key {shown(key)}; allowed keys: {', '.join(OPTIONS_BY_KEY)}")
    return OPTIONS_BY_KEY[normalized]


# ----------------------------------------------------------------------------- sources
def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file or raise a one-line UserError (missing file, bad syntax)."""
    path = Path(path)
    kind = kind_of(path)
    if kind is not None and kind != "a directory":  # a FIFO would block the read for ever
        raise UserError(f"config file {shown(str(path))} is {kind}, not a regular file; expected a TOML file")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UserError(f"config file {shown(str(path))} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"config file {shown(str(path))} is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {shown(str(path))} is not valid TOML: {exc}") from None
    except RecursionError:
        raise UserError(f"config file {shown(str(path))} is nested too deeply; expected plain key = value settings") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {shown(str(path))} cannot be read: {exc}") from None


def parse_set_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``key=value`` strings from ``--set`` into a dict (values stay strings; options parse them)."""
    overrides: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set: {shown(item)} is not allowed; expected key=value, e.g. local_steps=5")
        key, value = item.split("=", 1)
        option = _lookup(key, "--set")
        overrides[option.key] = value
    return overrides


def check_keys(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Normalise keys (``-`` to ``_``) and reject unknown ones, naming ``source``."""
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            raise UserError(f"{source}: {shown(key)} is a table; expected a plain key = value setting")
        checked[_lookup(key, source).key] = value
    return checked


# ----------------------------------------------------------------------------- resolution
def resolve_config(*layers: Mapping[str, Any], sources: Iterable[str] | None = None) -> dict[str, Any]:
    """Merge layers (later wins) over the defaults and return a validated, canonical config.

    Only keys the chosen model and method use are kept (``Option.used_by``), but every value
    given is validated; pinned keys take the method's value. Raises ``UserError`` on any bad
    value or on a combination the method cannot run (e.g. a dimension Perm-q cannot split).
    """
    source_names = list(sources) if sources is not None else ["config"] * len(layers)
    merged: dict[str, tuple[Any, str]] = {}
    for layer, source in zip(layers, source_names, strict=True):
        for key, value in check_keys(layer, source).items():
            if value is not None:
                # every value is checked, also one a later layer overrides or another model ignores
                OPTIONS_BY_KEY[key].coerce(value, source=_name(source, key))
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
    _check_algorithm(config, merged)
    given = {key: config[key] for key in merged if key in config}
    used = {option.key: option for option in OPTIONS if option.used_by(config)}
    config = {key: option.pinned.get(config["algorithm"], config[key]) for key, option in used.items()
              if option.recorded_when_default or config[key] != option.default_for(model)}
    _more_validate(config, given, lambda key: _name(merged.get(key, (None, "cli"))[1], key))
    return config


def unrecorded_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a resolved ``config`` leaves out because they hold their default
    (``recorded_when_default=False``) and that its method uses: what a reader telling runs
    apart by their settings must assume (a central-server IST run has no ``server`` key)."""
    if "model" not in config or "algorithm" not in config:
        return {}
    return {option.key: option.default_for(config["model"]) for option in OPTIONS
            if not option.recorded_when_default and option.key not in config and option.used_by(config)}


def _name(source: str, key: str) -> str:
    if source in ("cli", "default"):
        return "--" + key.replace("_", "-")
    return f"{source}: {key}"


def _check_algorithm(config: Mapping[str, Any], merged: Mapping[str, tuple[Any, str]]) -> None:
    model, algorithm = config["model"], config["algorithm"]
    if algorithm not in ALGORITHMS[model]:
        where = _name(merged.get("algorithm", (None, "cli"))[1], "algorithm")
        raise UserError(
            f"{where}: {shown(algorithm)} is not allowed for model {model}; expected one of {', '.join(ALGORITHMS[model])}"
        )


def _more_validate(config: dict[str, Any], given: Mapping[str, Any], where: Callable[[str], str]) -> None:
    """Rules that involve more than one setting (one value alone is checked by its ``Option``).

    ``config`` is the resolved config, ``given`` the values the user set (parsed), so a
    rule can refuse a setting the method would otherwise silently drop.
    """
    n = config["workers"]
    plan_of(config).check(config, given, where)
    if config.get("sketch") in PARTITIONED and not perm_splits(config["dim"], n):
        d = config["dim"]
        raise UserError(
            f"{where('dim')}: {d} cannot be split by the Perm-q sketch over {n} workers; "
            f"expected a multiple of {n} (e.g. {max(n, d - d % n)})"
        )
    if config.get("sketch_q") is not None and config["sketch_q"] > config["dim"]:
        raise UserError(f"{where('sketch_q')}: {config['sketch_q']} is not allowed; expected 1..{config['dim']} (the dimension)")
    if "momentum" in config:  # the options of SGD training (the MLP's)
        _check_training(config, where)


def _check_training(config: dict[str, Any], where: Callable[[str], str]) -> None:
    """Resolve the optimizer and drop what another setting makes irrelevant (one computation,
    one run id), then check what involves several of the study's settings."""
    if config.get("optimizer") == "sgd" and config["momentum"] > 0:
        raise UserError(f"{where('momentum')}: {config['momentum']} is not allowed with --optimizer sgd; "
                        "expected 0, or --optimizer momentum|nesterov")
    if config["momentum"] == 0:
        config.pop("optimizer", None)  # momentum and Nesterov with mu = 0 are plain SGD
    elif config.get("optimizer") is None:
        config["optimizer"] = "momentum"  # --momentum > 0 alone has always meant heavy ball
    if config["sparsity"] == 0:
        for key in ("prune", "snip_batches", "prune_biases"):
            config.pop(key, None)
    if config.get("goal_error") is None:
        config.pop("goal_metric", None)
    elif config["goal_metric"] == "val_error" and config["validation_fraction"] == 0:
        raise UserError(f"{where('goal_metric')}: val_error needs a validation set; expected "
                        "--validation-fraction F > 0, or --goal-metric test_error|train_error")
    if config["max_steps"]:
        config["rounds"] = -(-config["max_steps"] // config["local_steps"])  # SGD steps a round (dp: pinned 1)


def show_value(value: Any) -> str:
    """A setting's value as text, spelled as the options parse it back: lists as ``512,512``,
    booleans as ``true``/``false``, a missing value as ``-`` (tables, help, ``--set`` pairs)."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(show_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ----------------------------------------------------------------------------- identity
def canonical_json(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """Stable id of a resolved config: the hash of its canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:length]


def default_run_name(config: Mapping[str, Any]) -> str:
    return f"{config['model']}-{config['algorithm']}-n{config['workers']}-s{config['seed']}-{config_hash(config, 8)}"


# ----------------------------------------------------------------------------- settings
def settings_from_config(config: Mapping[str, Any]) -> QuadraticSettings | MLPSettings | CNNSettings:
    """The settings of a resolved config (``resolve_config`` output)."""
    model = config["model"]
    kind: Any = plan_of(config).settings
    values: dict[str, Any] = {}
    for item in fields(kind):
        if item.name == "network":
            values["network"] = NetworkModel.from_config({key: config.get(key, OPTIONS_BY_KEY[key].default)
                                                          for key in ("latency", "bandwidth", "topology")})
            continue
        if item.name == "plugin_options":
            values[item.name] = tuple((key, config.get(key, default))
                                      for key, (default, _) in plan_of(config).options.items())
            continue
        value = config.get(item.name, OPTIONS_BY_KEY[item.name].default_for(model))
        lists = item.name in ("hidden", "widths", "blocks") and value is not None
        values[item.name] = tuple(int(v) for v in value) if lists else value
    return kind(**values)
