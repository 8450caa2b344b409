"""Typed settings: a resolved config as a frozen dataclass per model.

The option table (``ist_cli.config``) says which keys a method uses and drops the rest, so
a resolved config may lack a key its method ignores; its ``settings_from_config`` gives every
field a value (the option's default stands in for a dropped key, which the method never
reads). Past that point no code reads a settings dict by string key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ist_cli.comm import NetworkModel


@dataclass(frozen=True)
class RunSettings:
    """What every method of every model has."""

    model: str
    algorithm: str
    workers: int
    rounds: int
    lr: float
    local_steps: int
    seed: int
    eval_every: int
    network: NetworkModel
    #: a plug-in method's own settings (its plan's ``options``), as (key, value) pairs
    plugin_options: tuple[tuple[str, object], ...] = field(default=(), kw_only=True)

    def option(self, key: str) -> object:
        """A plug-in method's own setting (docs/extending.md)."""
        return dict(self.plugin_options)[key]


@dataclass(frozen=True)
class QuadraticSettings(RunSettings):
    dim: int
    sketch: str
    sketch_q: int | None
    server_update: str
    heterogeneity: str
    interpolation: bool
    client_samples: int | None
    l2: float
    problem_file: str | None
    save_params_every: int


@dataclass(frozen=True)
class SGDSettings(RunSettings):
    """What the networks trained by minibatch SGD share (the MLP and the convnets)."""

    dataset: str
    batch_size: int
    momentum: float
    partition: str
    dtype: str
    synthetic_samples: int
    synthetic_features: int
    synthetic_classes: int
    # optimizer, sparsity, training to a goal (docs/sparsity.md)
    optimizer: str | None
    lr_schedule: str
    decay_steps: int | None
    end_lr_factor: float
    eval_every_steps: int
    validation_fraction: float
    goal_error: float | None
    goal_metric: str
    max_steps: int
    sparsity: float
    prune: str
    snip_batches: int | str
    prune_biases: bool
    noise_scale_every: int
    lipschitz_every: int
    # Settings not recorded in a config when at their default (older run files lack them):
    # keyword-only, so that the subclasses' own fields may follow without defaults.
    # IST's model placement and partition rule (docs/cluster.md, docs/algorithms.md)
    server: str = field(default="central", kw_only=True)
    partition_rule: str = field(default="random", kw_only=True)
    # with a goal: the full train/test metrics at every K-th evaluation only
    full_eval_every: int = field(default=1, kw_only=True)
    # evaluation on at most this many fixed rows of each set (None: the default limits)
    eval_samples: int | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class MLPSettings(SGDSettings):
    hidden: tuple[int, ...]
    norm: str
    subnet_scale: str

    @property
    def batch_norm(self) -> bool:
        return self.norm == "batch"

    @property
    def scale_by_width(self) -> bool:
        """IST's ``--subnet-scale``; ``auto`` is what trained best on digits (docs/mlp.md): width under batch norm."""
        return self.subnet_scale == "width" or (self.subnet_scale == "auto" and self.batch_norm)


@dataclass(frozen=True)
class CNNSettings(SGDSettings):
    """A convolutional network named by ``arch`` (docs/convnets.md)."""

    arch: str
    # preact-resnet's stages (None: its defaults)
    widths: tuple[int, ...] | None = field(default=None, kw_only=True)
    blocks: tuple[int, ...] | None = field(default=None, kw_only=True)
    min_blocks: int = field(default=0, kw_only=True)  # ResIST's minimum partitioned blocks per worker
