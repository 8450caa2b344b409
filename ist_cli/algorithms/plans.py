"""What each method *is*, known from its resolved config before anything is loaded: its name,
its per-worker arena rows, the memory and file bytes a run of it needs, what its worker
processes preload, and its own rules over several settings (such as IST's width >= n).

The methods themselves (``Algorithm``) *hold* what a run loads (data, problem, mask, meters)
and import numba; a plan imports neither, so the option table checks configs with it and
``ist_cli.footprint`` sizes runs with it before the fork server starts. Each method class
names its plan (``Algorithm.plan``); ``PLANS`` is the one home of the algorithms' names.
Sizes are Python integers, so absurd widths (10^30) give an absurd estimate, never an overflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from ist_cli.data.shape import dataset_shape
from ist_cli.errors import UserError
from ist_cli.plugins import METHODS_GROUP, plugins
from ist_cli.runtime.budget import WORKER_BASE_BYTES, RunEstimate
from ist_cli.settings import CNNSettings, MLPSettings, QuadraticSettings, RunSettings

if TYPE_CHECKING:  # the layer specs are imported when a convnet is built, not by every command
    from ist_cli.models import network as nw

#: checks a setting's name for an error message: key -> ``--flag`` or ``file: key``
Where = Callable[[str], str]


class MethodPlan:
    """A method's name and the facts about it that need no data."""

    model: ClassVar[str]
    algorithm: ClassVar[str]
    settings: ClassVar[type[RunSettings]]  # the typed settings of its model
    loading_stage: ClassVar[str]  # what the progress line says while the method loads its data or problem
    allreduce: ClassVar[bool] = False  # averages by an all-reduce among the workers (--topology ring over MPI)
    # alone (one worker), its worker's round may run in the coordinator's process, bitwise the same
    in_process_alone: ClassVar[bool] = False
    theory: ClassVar[bool] = False  # the closed-form mean dynamics cover it (models.theory: ist theory, report overlays)
    #: a plug-in's method class, ``"module:Class"`` (most built-ins: "", their model's package names it)
    method: ClassVar[str] = ""
    #: a plug-in method's own settings, key -> (default, help): ``--key`` in ``ist run --help``,
    #: parsed as the default's type (int, float, bool or str), read with ``settings.option(key)``
    options: ClassVar[Mapping[str, tuple[Any, str]]] = {}

    @classmethod
    def check(cls, config: Mapping[str, Any], given: Mapping[str, Any], where: Where) -> None:
        """The method's own rules over several settings of a resolved ``config`` (``given``: what
        the user set); raises a one-line ``UserError``."""

    @classmethod
    def preload(cls, settings: Any) -> tuple[str, ...]:
        """What a worker process imports and calls before its first round (``runtime.forkserver``
        entries), named without importing it: the fork server starts warming before the
        coordinator has imported numba itself."""
        raise NotImplementedError

    @classmethod
    def estimate_run(cls, config: Mapping[str, Any]) -> RunEstimate:
        """The memory a run needs, as arena, coordinator and per-worker bytes (on the high side)."""
        raise NotImplementedError

    @classmethod
    def estimate_ranks(cls, config: Mapping[str, Any]) -> RunEstimate:
        """The memory a run needs when its workers are MPI ranks (``RunEstimate.ranks`` for a
        method that sizes each process on its own); by default the shared-memory estimate."""
        return cls.estimate_run(config)

    @classmethod
    def workers_own_model(cls, config: Mapping[str, Any]) -> bool:
        """Does part of the model live in the workers alone, so that a dead worker loses it? Then
        an MPI job outlives a dead rank for rank 0 to record the loss (``runtime/rank_loss.py``)."""
        return False

    @classmethod
    def file_bytes(cls, config: Mapping[str, Any]) -> int:
        """Bytes the run file will take at most."""
        raise NotImplementedError

    @staticmethod
    def metric_bytes(config: Mapping[str, Any]) -> int:
        rounds = int(config["rounds"])
        rows = rounds // int(config["eval_every"]) + 2
        return rows * 32 * 8 + rounds * (6 + 3 * int(config["workers"])) * 8  # /rounds: 6 scalars, 3 per worker


# ----------------------------------------------------------------------------- quadratic
class QuadraticPlan(MethodPlan):
    model = "quadratic"
    settings = QuadraticSettings
    loading_stage = "building the problem"
    theory = True

    @classmethod
    def preload(cls, settings: Any) -> tuple[str, ...]:
        # the sketch plug-ins are read once in the server, not by every worker
        return ("ist_cli.algorithms.quadratic", "ist_cli.kernels.quadratic:warm_up",
                "ist_cli.models.sketches:plugin_sketches")

    @classmethod
    def estimate_run(cls, config: Mapping[str, Any]) -> RunEstimate:
        n, d = int(config["workers"]), int(config["dim"])
        m = int(config.get("client_samples") or 2 * d)
        count = n if config.get("heterogeneity") == "heterogeneous" else 1
        matrices = n * d * d * 8
        # L; per worker 9 float64 rows (b, start, scales, out, down, up, z_*) and 2 int32 ones; x; alignment
        arena = matrices + 10 * n * d * 8 + d * 8 + 64 * 16
        # generation: A (count, m, d), the einsum result and its symmetrised copy, repeated to n clients
        coordinator = 8 * count * m * d + 3 * matrices
        return RunEstimate(arena=arena, coordinator=coordinator, per_worker=WORKER_BASE_BYTES + 3 * d * 8, workers=n)

    @classmethod
    def file_bytes(cls, config: Mapping[str, Any]) -> int:
        rounds, n, d = int(config["rounds"]), int(config["workers"]), int(config["dim"])
        save_every = int(config.get("save_params_every") or 0)
        snapshots = (rounds // save_every + 1) * (d + 1) * 8 if save_every else 0
        return cls.metric_bytes(config) + snapshots + n * (d * d + d) * 8 + 2 * d * 8 + 64 * 1024


class QuadraticISTPlan(QuadraticPlan):
    algorithm = "ist"


class GDPlan(QuadraticPlan):
    algorithm = "gd"

    @classmethod
    def check(cls, config: Mapping[str, Any], given: Mapping[str, Any], where: Where) -> None:
        if given.get("local_steps", 1) != 1:
            raise UserError(f"{where('local_steps')}: {given['local_steps']} is not allowed for {cls.algorithm}; "
                            "expected 1 (local steps are an IST setting)")


class DCGDPlan(GDPlan):
    algorithm = "dcgd"


# ----------------------------------------------------------------------------- MLP
EVAL_CHUNK = 4096  # rows per forward pass at evaluation (also the batch-norm statistics' batch)
#: at most this much of a shard crosses (and is held) at a time while the partitioned server writes /final
FINAL_BLOCK_BYTES = 8 << 20

def mlp_widths(config: Mapping[str, Any]) -> tuple[list[int], int, int]:
    """(widths, samples, bytes of a file source) as far as the config tells."""
    samples, features, classes, raw = dataset_shape(config)
    return [features, *(int(w) for w in config["hidden"]), classes], samples, raw


def mlp_params(config: Mapping[str, Any], widths: Sequence[int]) -> tuple[int, int]:
    """(parameter count, bytes per parameter) of the network ``widths``."""
    itemsize = 8 if config.get("dtype") == "float64" else 4
    params = sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(widths, widths[1:], strict=False))
    if config.get("norm") == "batch":
        params += 2 * sum(widths[1:-1])
    return params, itemsize


class MLPPlan(MethodPlan):
    model = "mlp"
    settings = MLPSettings
    loading_stage = "loading data"

    @classmethod
    def preload(cls, settings: Any) -> tuple[str, ...]:
        """The kernels its workers call, and only those (a first run compiles each of them)."""
        return ("ist_cli.algorithms.mlp", f"ist_cli.kernels.mlp:warm_up_training:{settings.dtype}")
    #: the per-worker arena rows, each the size of what a worker trains (a replica or a subnet)
    rows: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def worker_rows(cls, sparse: bool) -> tuple[str, ...]:
        """Names of the per-worker rows (``sparse``: the run prunes weights)."""
        return cls.rows

    @classmethod
    def row_values(cls, params: int, widths: Sequence[int], n_workers: int) -> int:
        """Values one row holds at most: a whole replica."""
        return params

    @classmethod
    def check(cls, config: Mapping[str, Any], given: Mapping[str, Any], where: Where) -> None:
        if given.get("server", "central") != "central":
            raise UserError(f"{where('server')}: {given['server']!r} is not allowed for {config['algorithm']}; "
                            f"expected central ({config['algorithm']} needs the whole model on every worker)")

    @classmethod
    def estimate_run(cls, config: Mapping[str, Any]) -> RunEstimate:
        n = int(config["workers"])
        widths, samples, raw = mlp_widths(config)
        params, itemsize = mlp_params(config, widths)
        sparse = float(config.get("sparsity") or 0) > 0
        buffers = len(cls.worker_rows(sparse)) * n * cls.row_values(params, widths, n)
        data = samples * (widths[0] * itemsize + 16)
        model = params * (2 if sparse else 1)  # the model, and the pruning mask of a sparse run
        arena = data + (model + buffers) * itemsize + 8 * sum(widths)
        # the loaded dataset (or its file, several times over while parsed) plus the initial model and DP's velocity
        coordinator = data + 4 * raw + 2 * params * itemsize
        activations = 4 * int(config.get("batch_size", 32)) * sum(widths) * itemsize
        return RunEstimate(arena=arena, coordinator=coordinator, per_worker=WORKER_BASE_BYTES + activations, workers=n)

    @classmethod
    def file_bytes(cls, config: Mapping[str, Any]) -> int:
        params, itemsize = mlp_params(config, mlp_widths(config)[0])
        return cls.metric_bytes(config) + params * itemsize + 64 * 1024


class ISTPlan(MLPPlan):
    algorithm = "ist"
    rows = ("sub", "grad", "velocity")

    @classmethod
    def worker_rows(cls, sparse: bool) -> tuple[str, ...]:
        return (*cls.rows, "submask") if sparse else cls.rows  # submask: its share of the pruning mask

    @classmethod
    def workers_own_model(cls, config: Mapping[str, Any]) -> bool:
        return config.get("server") == "partitioned"  # each worker owns a shard

    @classmethod
    def row_values(cls, params: int, widths: Sequence[int], n_workers: int) -> int:
        """About a worker's share of the hidden units' weights (its subnet), and the layers' ends it shares."""
        return params // n_workers + sum(widths)

    @classmethod
    def estimate_run(cls, config: Mapping[str, Any]) -> RunEstimate:
        """The partitioned server adds the owners' shard rows to the arena: about one more model."""
        estimate = super().estimate_run(config)
        if config.get("server") != "partitioned":
            return estimate
        params, itemsize = mlp_params(config, mlp_widths(config)[0])
        return replace(estimate, arena=estimate.arena + params * itemsize)

    @classmethod
    def estimate_ranks(cls, config: Mapping[str, Any]) -> RunEstimate:
        """The partitioned server over MPI, per process (on the high side). A worker rank: its
        shard (a 1/n block of every hidden layer's neurons with their incoming weights, and the
        last hidden block's outgoing ones), its rows of the subnet it trains, the pieces in flight
        (what it sends of its shard, two subnets received), the data, a minibatch's and an
        evaluation chunk's activations. Rank 0, the coordinator: no parameters but the output
        bias; the data, the loader's copy and the owners' partial logits (a pruned run also
        chooses its mask on the whole initial model there)."""
        if config.get("server") != "partitioned":
            return cls.estimate_run(config)
        n = int(config["workers"])
        widths, samples, raw = mlp_widths(config)
        params, itemsize = mlp_params(config, widths)
        sparse = float(config.get("sparsity") or 0) > 0
        norm = 2 if config.get("norm") == "batch" else 0
        blocks = [-(-int(width) // n) for width in widths[1:-1]]  # the largest block of each hidden layer
        sub = [widths[0], *blocks, widths[-1]]  # the largest subnet's widths

        def owned(fan_ins: Sequence[int]) -> int:  # an owner's neurons with fan-ins, and its output weights
            return sum(block * (fan_in + 1 + norm) for block, fan_in in zip(blocks, fan_ins, strict=False)) \
                + blocks[-1] * widths[-1]

        shard = owned(widths)
        sent = owned(sub)  # what of its shard lies in some subnet: the pieces an owner sends in a round
        subnet = sum(a * b + b for a, b in zip(sub, sub[1:], strict=False)) + norm * sum(blocks)
        data = samples * (widths[0] * itemsize + 16)
        chunk = min(EVAL_CHUNK, samples)
        evaluation = (3 * chunk * max(widths[1:-1]) + chunk * widths[0] + 2 * samples * widths[-1]) * itemsize
        activations = 4 * int(config.get("batch_size", 32)) * sum(widths) * itemsize
        values = shard + len(cls.worker_rows(sparse)) * subnet + sent + 2 * subnet
        if sparse:  # the resident pruning mask (the whole model's) and this owner's share of it
            values += params + shard
        worker = WORKER_BASE_BYTES + data + values * itemsize + evaluation + activations
        pruning = params * (5 * itemsize + 9) if sparse else 0  # model, mask, its shards (float64), keep, SNIP
        coordinator = (WORKER_BASE_BYTES + 2 * data + 4 * raw + 2 * n * samples * widths[-1] * itemsize
                       + 2 * FINAL_BLOCK_BYTES + pruning)
        return RunEstimate(arena=0, coordinator=coordinator, per_worker=worker, workers=n, ranks=True)

    @classmethod
    def preload(cls, settings: Any) -> tuple[str, ...]:
        """Also the subnet kernels, which the coordinator compiles meanwhile (``IST.initialize``):
        loaded from numba's cache after ``train_steps``, or compiled here if it is not done yet;
        and under the partitioned server its pieces' kernels."""
        pieces = (f"ist_cli.kernels.mlp:warm_up_pieces:{settings.dtype}",) if settings.server == "partitioned" else ()
        return (*super().preload(settings), f"ist_cli.kernels.mlp:warm_up_subnets:{settings.dtype}", *pieces)

    @classmethod
    def check(cls, config: Mapping[str, Any], given: Mapping[str, Any], where: Where) -> None:
        n = config["workers"]
        for width in config["hidden"]:
            if width < n:
                raise UserError(f"{where('hidden')}: width {width} is smaller than the {n} workers; "
                                f"IST needs every hidden layer to have at least {n} neurons")
        for key in ("lipschitz_every", "noise_scale_every"):  # both need the whole model, which no process holds
            if config.get("server") == "partitioned" and config.get(key):
                raise UserError(f"{where(key)}: {config[key]} is not allowed with --server partitioned; expected 0 "
                                "(the measurement needs the whole model, which no process holds)")


class DPPlan(MLPPlan):
    algorithm = "dp"
    rows = ("grad",)
    allreduce = True

    @classmethod
    def preload(cls, settings: Any) -> tuple[str, ...]:
        """``loss_and_grad``, every DP worker's kernel (compiled once here, not per worker), not ``train_steps``."""
        return ("ist_cli.algorithms.mlp", f"ist_cli.kernels.mlp:warm_up_gradient:{settings.dtype}")


class LocalSGDPlan(MLPPlan):
    algorithm = "local-sgd"
    rows = ("grad", "sub", "velocity")


class SinglePlan(LocalSGDPlan):
    algorithm = "single"
    in_process_alone = True  # plain minibatch SGD: no worker process needed (runtime/choice.py)


# ----------------------------------------------------------------------------- convnets
#: ``--arch`` -> the name of its layer spec's builder in ``models.network`` ((input shape, classes) -> Network)
ARCHS: dict[str, str] = {"simple-cnn": "simple_cnn", "resnet8": "resnet8", "preact-resnet": "preact_resnet"}


def arch_builder(arch: str) -> Callable[..., nw.Network]:
    """The builder of ``--arch``'s layer spec."""
    from ist_cli.models import network

    return getattr(network, ARCHS[arch])


def preact_stages(widths: Sequence[int] | None, blocks: Sequence[int] | None) -> dict[str, tuple[int, ...]]:
    """preact-resnet's ``--widths`` and ``--blocks`` as builder arguments (the given ones); a
    one-line UserError when they disagree on the number of stages."""
    stages = {key: tuple(int(v) for v in value) for key, value in (("widths", widths), ("blocks", blocks))
              if value is not None}
    from ist_cli.models.network import PREACT_BLOCKS, PREACT_WIDTHS

    counts = len(stages.get("widths", PREACT_WIDTHS)), len(stages.get("blocks", PREACT_BLOCKS))
    if counts[0] != counts[1]:
        given = ", ".join(f"--{key} {','.join(map(str, value))}" for key, value in stages.items())
        raise UserError(f"{given}: {counts[0]} widths and {counts[1]} stages of blocks are not allowed; "
                        "expected one width per stage (defaults: --widths 16,32,64 --blocks 2,6,1)")
    return stages


def convnet(arch: str, image_shape: Sequence[int], classes: int, widths: Sequence[int] | None = None,
            blocks: Sequence[int] | None = None) -> nw.Network:
    """The network ``arch`` on images of ``image_shape`` (C, H, W), preact-resnet's stages set by
    ``widths`` and ``blocks`` if given; a one-line UserError when it does not fit."""
    stages = preact_stages(widths, blocks)
    try:
        return arch_builder(arch)(tuple(int(v) for v in image_shape), int(classes), **stages)
    except ValueError as exc:
        raise UserError(f"--arch: {arch} does not fit images of shape {tuple(image_shape)} (C, H, W): {exc}; "
                        "expected a data set of larger images or another --arch") from None


def image_shape_guess(features: int) -> tuple[int, int, int]:
    """(C, H, W) of square images of ``features`` pixels (3 channels if that makes them square,
    else 1); Fashion-MNIST's 28x28 when the count is unknown before the data is read."""
    for channels in (1, 3):
        side = int(round((features / channels) ** 0.5))
        if side >= 8 and channels * side * side == features:
            return channels, side, side
    return 1, 28, 28


class ConvNetPlan(MLPPlan):
    """A convnet (``--arch``) trained by one of the MLP's replica methods (their per-worker rows)."""

    model = "cnn"
    settings = CNNSettings
    loading_stage = "loading images"

    @classmethod
    def preload(cls, settings: Any) -> tuple[str, ...]:
        return ("ist_cli.algorithms.convnet", f"ist_cli.kernels.conv:warm_up:{settings.dtype}",
                f"ist_cli.kernels.sgd:warm_up:{settings.dtype}")

    @classmethod
    def check(cls, config: Mapping[str, Any], given: Mapping[str, Any], where: Where) -> None:
        super().check(config, given, where)
        preact_stages(config.get("widths"), config.get("blocks"))

    @classmethod
    def network(cls, config: Mapping[str, Any]) -> tuple[nw.Network, int, int]:
        """(network, samples, bytes of a file source) as far as the config tells."""
        samples, features, classes, raw = dataset_shape(config)
        shape = image_shape_guess(features)
        return convnet(str(config["arch"]), shape, max(int(classes), 10), config.get("widths"),
                       config.get("blocks")), samples, raw

    @classmethod
    def estimate_run(cls, config: Mapping[str, Any]) -> RunEstimate:
        n = int(config["workers"])
        net, samples, raw = cls.network(config)
        itemsize = 8 if config.get("dtype") == "float64" else 4
        params = net.n_params
        sparse = float(config.get("sparsity") or 0) > 0
        features = math.prod(net.input_shape)
        data = samples * (features * itemsize + 16)
        arena = data + (params * (2 if sparse else 1) + len(cls.rows) * n * params) * itemsize
        coordinator = data + 4 * raw + 3 * params * itemsize
        # every layer's output and its gradient, with the patch matrices of the largest conv, on the high side
        outputs = sum(math.prod(shape) for shape in net.shapes()) + features
        activations = 6 * int(config.get("batch_size", 32)) * outputs * itemsize
        return RunEstimate(arena=arena, coordinator=coordinator + activations,
                           per_worker=WORKER_BASE_BYTES + activations, workers=n)

    @classmethod
    def file_bytes(cls, config: Mapping[str, Any]) -> int:
        itemsize = 8 if config.get("dtype") == "float64" else 4
        return cls.metric_bytes(config) + 2 * cls.network(config)[0].n_params * itemsize + 64 * 1024


class ConvNetISTPlan(ConvNetPlan):
    """Channel-wise IST: every hidden layer's channels partitioned among the workers (``algorithms/channel_ist.py``)."""

    algorithm = "ist"
    rows = ISTPlan.rows
    method = "ist_cli.algorithms.channel_ist:ChannelIST"  # a module of its own, beside convnet.py's methods

    @classmethod
    def worker_rows(cls, sparse: bool) -> tuple[str, ...]:
        return ISTPlan.worker_rows(sparse)

    @classmethod
    def preload(cls, settings: Any) -> tuple[str, ...]:
        return ("ist_cli.algorithms.channel_ist", *super().preload(settings))

    @classmethod
    def check(cls, config: Mapping[str, Any], given: Mapping[str, Any], where: Where) -> None:
        super().check(config, given, where)
        try:
            net = cls.network(config)[0]
        except UserError:
            return  # images the network does not fit: refused once they are loaded, naming the layer
        n = int(config["workers"])
        narrowest = min(count for _, _, count in net.hidden_units())
        if narrowest < n:
            raise UserError(f"{where('workers')}: {n} is not allowed for ist with --arch {config['arch']}; expected at "
                            f"most {narrowest} (IST needs every partitioned layer to have at least n channels or "
                            "neurons)")


class ConvNetDPPlan(ConvNetPlan):
    algorithm = "dp"
    rows = DPPlan.rows


class ConvNetLocalSGDPlan(ConvNetPlan):
    algorithm = "local-sgd"
    rows = LocalSGDPlan.rows


class ConvNetSinglePlan(ConvNetLocalSGDPlan):
    algorithm = "single"


class ConvNetResISTPlan(ConvNetPlan):
    """ResIST (``algorithms/resist.py``): rows of the largest sub-ResNet, but ``velocity``, a
    momentum buffer per parameter of the full model; a spec with partitioned residual blocks."""

    algorithm = "resist"
    rows = ("sub", "grad", "velocity")
    method = "ist_cli.algorithms.resist:ResIST"  # a module of its own, beside convnet.py's methods

    @classmethod
    def preload(cls, settings: Any) -> tuple[str, ...]:
        return ("ist_cli.algorithms.resist", *super().preload(settings)[1:])

    @classmethod
    def worker_rows(cls, sparse: bool) -> tuple[str, ...]:
        return (*cls.rows, "submask") if sparse else cls.rows  # submask: its share of the pruning mask

    @classmethod
    def estimate_run(cls, config: Mapping[str, Any]) -> RunEstimate:
        """A pruned run adds the ``submask`` rows: about one more model per worker."""
        estimate = super().estimate_run(config)
        if not float(config.get("sparsity") or 0) > 0:
            return estimate
        itemsize = 8 if config.get("dtype") == "float64" else 4
        extra = int(config["workers"]) * cls.network(config)[0].n_params * itemsize
        return replace(estimate, arena=estimate.arena + extra)

    @classmethod
    def check(cls, config: Mapping[str, Any], given: Mapping[str, Any], where: Where) -> None:
        super().check(config, given, where)
        blocks = len(cls.network(config)[0].droppable_blocks())
        if not blocks:
            fit = [name for name in ARCHS if arch_builder(name)((1, 28, 28), 10).droppable_blocks()]
            raise UserError(f"{where('algorithm')}: {cls.algorithm} is not allowed with --arch {config['arch']} (its spec has "
                            f"no partitioned residual blocks); expected --arch {' or '.join(fit)}")
        if config["min_blocks"] > blocks:
            raise UserError(f"{where('min_blocks')}: {config['min_blocks']} is not allowed with --arch "
                            f"{config['arch']} ({blocks} partitioned residual blocks); expected 0 to {blocks}")


#: model -> algorithm -> plan, in the order the CLI lists them
PLANS: dict[str, dict[str, type[MethodPlan]]] = {
    family[0].model: {plan.algorithm: plan for plan in family}
    for family in ((QuadraticISTPlan, GDPlan, DCGDPlan), (ISTPlan, DPPlan, LocalSGDPlan, SinglePlan),
                   (ConvNetISTPlan, ConvNetDPPlan, ConvNetLocalSGDPlan, ConvNetSinglePlan, ConvNetResISTPlan))
}


def _plugin_problem(name: str, plan: Any) -> str | None:
    """What keeps an entry point of ``ist_cli.methods`` from being a method (None: nothing)."""
    if not (isinstance(plan, type) and issubclass(plan, MethodPlan)):
        return "expected a subclass of ist_cli.algorithms.plans.MethodPlan"
    if getattr(plan, "model", None) not in PLANS or plan.method.count(":") != 1:
        return f"expected a plan with model one of {', '.join(PLANS)} and method 'module:Class'"
    if getattr(plan, "algorithm", None) != name:
        return f"its plan's algorithm is {getattr(plan, 'algorithm', None)!r}; expected the entry point's name"
    options = getattr(plan, "options", None)
    if options and not (isinstance(options, Mapping) and is_dataclass(getattr(plan, "settings", None))):
        return "expected options as a mapping key -> (default, help) and the settings of a built-in model"
    taken = {field.name for field in fields(plan.settings)} | {"model", "bandwidth", "latency", "topology"} \
        if options else set()
    for key, value in (options or {}).items():
        if not (isinstance(key, str) and key.isidentifier() and key.islower()) or key in taken:
            return f"its option {key!r} is a built-in setting or not a lower-case identifier"
        if not (isinstance(value, tuple) and len(value) == 2 and type(value[0]) in (int, float, bool, str)):
            return f"its option {key!r} is not (default, help) with an int, float, bool or str default"
    return None


# installed plug-ins join their model's methods, listed after the built-ins (docs/extending.md)
for _name, _plan in plugins(METHODS_GROUP, frozenset(name for plans in PLANS.values() for name in plans),
                            _plugin_problem).items():
    PLANS[_plan.model][_name] = _plan


def plan_of(config: Mapping[str, Any]) -> type[MethodPlan]:
    """The plan of a resolved config's method."""
    return PLANS[config["model"]][config["algorithm"]]


def theory_covers(config: Mapping[str, Any]) -> bool:
    """True for a config (a run file's too, of any age) of a model whose methods the closed-form
    mean dynamics cover."""
    return any(plan.theory for plan in PLANS.get(config.get("model"), {}).values())


def runs_in_process(config: Mapping[str, Any]) -> bool:
    """True for a run (resolved ``config``) whose one worker steps in the coordinator's process."""
    return plan_of(config).in_process_alone and int(config["workers"]) == 1


def check_topology(config: Mapping[str, Any]) -> None:
    """Over MPI, ``ps`` sends every message through rank 0; ``ring`` is an all-reduce among the
    worker ranks (``runtime.ring``), which only a method that averages whole gradients has."""
    topology = config["topology"]
    if topology == "ps":
        return
    if topology != "ring" or not plan_of(config).allreduce:
        allowed = ", ".join(plan.algorithm for plan in PLANS[config["model"]].values() if plan.allreduce)
        raise UserError(f"--topology: {topology!r} is not allowed with --transport mpi and --algorithm "
                        f"{config['algorithm']}; expected ps (ring: --algorithm {allowed} only, an all-reduce)")
    if config.get("noise_scale_every"):
        raise UserError(f"--noise-scale-every: {config['noise_scale_every']} is not allowed with --topology ring "
                        "and --transport mpi (the coordinator sees only the averaged gradient); expected 0")
