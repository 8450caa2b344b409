"""``ist run``: flags come from the option table in ``ist_cli.config``.

Precedence, lowest first: defaults, ``--config FILE.toml``, ``--set key=value``, flags.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ist_cli.algorithms.plans import check_topology, plan_of
from ist_cli.cli import allow_fast_exit, say
from ist_cli.config import (
    ALGORITHMS,
    OPTIONS,
    SGD_MODELS,
    STUDY_SECTION,
    Option,
    check_keys,
    default_run_name,
    load_toml,
    parse_set_overrides,
    resolve_config,
    show_value,
)
from ist_cli.errors import UserError, shown
from ist_cli.preflight import check_ranks, check_run_inputs
from ist_cli.progress import print_summary
from ist_cli.runner import RunSummary, prepare_output, run_experiment
from ist_cli.runtime import rank_loss
from ist_cli.runtime.mpi import (
    abort_at_exit,
    check_launcher_size,
    mpi_transport,
    release_workers,
    serve_worker,
    world,
)
from ist_cli.runtime.mpi_launch import launcher_rank, mpiexec_path, relaunch, require_mpi4py
from ist_cli.runtime.watchdog import AUTO, parse_round_timeout

TRANSPORTS = ("shm", "mpi")  # workers as processes on shared memory, or as MPI ranks

# --help sections, in order; options of the table go to their ``Option.section`` if they name one,
# else to their model's if they have one model (network keys apart), else to "common"
MODEL_SECTIONS = {"quadratic": "quadratic", "mlp": "MLP", "cnn": "convnet"}
SECTIONS = ("common", *MODEL_SECTIONS.values(), STUDY_SECTION, "network model", "input and output")
NETWORK_KEYS = ("bandwidth", "latency", "topology")
ALL_ALGORITHMS = tuple(dict.fromkeys(name for names in ALGORITHMS.values() for name in names))


def _section(option: Option) -> str:
    if option.section:
        return option.section
    if option.key in NETWORK_KEYS:
        return "network model"
    if len(option.models) == 1:
        return MODEL_SECTIONS[option.models[0]]
    if option.models == SGD_MODELS:  # shared by the MLP and the convnet: the MLP's section lists them
        return MODEL_SECTIONS[SGD_MODELS[0]]
    return "common"


class _Unchecked:
    """Mixin for click types: show the type, range and choices in --help and completion, but
    hand the raw string on, so ``config.resolve_config`` checks every source (flags, TOML,
    --set) with the same one-line messages."""

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        return value


class ChoiceShown(_Unchecked, click.Choice):
    pass


class IntRangeShown(_Unchecked, click.IntRange):
    pass


class FloatRangeShown(_Unchecked, click.FloatRange):
    pass


def click_type(option: Option, model: str | None = None) -> click.ParamType:
    """The click type of a table option: Choice, IntRange or FloatRange where the table says
    so (``--algorithm`` offers ``model``'s algorithms, or every model's), else a string."""
    if option.choices:
        return ChoiceShown(option.choices)
    if option.key == "algorithm":
        return ChoiceShown(ALGORITHMS[model] if model else ALL_ALGORITHMS)
    kind, minimum, min_open, *upper = getattr(option.parse, "range", (None, None, False))
    maximum, max_open = upper or (None, False)
    if kind is int:
        return IntRangeShown(min=minimum, max=maximum)
    if kind is float:
        return FloatRangeShown(min=minimum, min_open=min_open, max=maximum, max_open=max_open)
    return click.STRING


class SectionedCommand(click.Command):
    """--help with the options grouped into ``SECTIONS`` (each param carries ``section``)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: dict[str, list[tuple[str, str]]] = {name: [] for name in SECTIONS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                rows[getattr(param, "section", "input and output")].append(record)
        for name in SECTIONS:
            if rows[name]:
                with formatter.section(f"{name[0].upper()}{name[1:]} options"):
                    formatter.write_dl(rows[name])


def _in_section(decorator, section: str):
    def apply(function):
        function = decorator(function)
        function.__click_params__[-1].section = section
        return function

    return apply


def _given_once(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> str | None:
    """A setting given twice (``--seed 1 --seed 2``) is refused: click would keep the last silently."""
    if len(values) > 1:
        shown_values = ", ".join(values)
        raise click.UsageError(f"{param.opts[0]} given {len(values)} times ({shown_values}); expected it once "
                               f"(several values: ist sweep --grid {param.name}={','.join(values)} -- ...)")
    return values[0] if values else None


def _option_decorators(model: str | None, exclude: tuple[str, ...]):
    decorators = []
    for option in OPTIONS:
        if option.key in exclude or (model is not None and model not in option.models):
            continue
        help_text = option.help
        if option.is_flag_pair:
            name = option.key.replace("_", "-")
            decorators.append(_in_section(click.option(f"--{name}/--no-{name}", option.key, default=None,
                                                       help=help_text), _section(option)))
        else:
            if option.defaults_by_model and model is not None:
                help_text += f" (default: {show_value(option.default_for(model))})"
            elif option.defaults_by_model:
                shown = ", ".join(f"{name} {show_value(option.default_for(name))}" for name in option.models)
                help_text += f" (default: {shown})"
            elif option.default is not None:
                help_text += f" (default: {show_value(option.default)})"
            decorators.append(_in_section(
                click.option(option.flag, option.key, type=click_type(option, model), default=None, metavar=option.metavar,
                             help=help_text, multiple=True, callback=_given_once),
                _section(option)))
    return decorators


def with_run_options(model: str | None = None, exclude: tuple[str, ...] = ()):
    """Click options for every run setting (of ``model`` only, when given), from the option table,
    typed (``click_type``) and placed in their --help section (``_section``)."""

    def apply(function):
        for decorator in reversed(_option_decorators(model, exclude)):
            function = decorator(function)
        return function

    return apply


def config_layers(config_file: str | None, overrides: tuple[str, ...], flags: dict[str, Any]):
    """(layers, sources) for ``resolve_config``: ``--config`` file, then ``--set``, then flags."""
    layers, sources = [], []
    if config_file:
        layers.append(check_keys(load_toml(config_file), f"config file {config_file}"))
        sources.append(f"config file {config_file}")
    if overrides:
        layers.append(parse_set_overrides(overrides))
        sources.append("--set")
    layers.append({key: value for key, value in flags.items() if value is not None})
    sources.append("cli")
    return layers, sources


@click.command(cls=SectionedCommand, context_settings={"max_content_width": 110})
@with_run_options()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.toml",
              help="Settings from a TOML file (keys as the options, e.g. lr = 0.01).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one setting (repeatable).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="results", show_default=True, help="Output directory.")
@click.option("--name", type=str, default=None, help="Run file name (DIR/NAME.h5); default derived from the config.")
@click.option("--overwrite", is_flag=True, help="Recompute and replace DIR/NAME.h5 (without it, an identical finished run is reported, not rerun).")
@click.option("--round-timeout", "round_timeout", type=str, default=AUTO, show_default=True, metavar="SECONDS|auto",
              help="Fail the run when a round's workers have not all answered in this time; auto: 600 s for the "
                   "first 3 rounds, then 50x the slowest of them (at least 60 s; shared-memory transport).")
@click.option("--quiet", is_flag=True, help="No progress or summary on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--step-budget", type=click.IntRange(min=1), default=None, metavar="STEPS",
              help="Stop a run that trains to a goal at the first evaluation past STEPS steps without "
                   "reaching it (a study's trial pruning; not part of the run id).")
@_in_section(click.option("--transport", type=click.Choice(TRANSPORTS), default="shm", show_default=True,
                          help="Workers as processes over shared memory, or as MPI ranks (docs/cluster.md)."),
             "common")
def run_command(config_file: str | None, overrides: tuple[str, ...], out_dir: str, name: str | None,
                overwrite: bool, round_timeout: str, quiet: bool, as_json: bool, transport: str,
                step_budget: int | None,
                **flags: Any) -> None:
    """Run one experiment and write DIR/NAME.h5.

    Exit codes: 0 completed, 3 diverged, 1 failed (worker fault), 130 interrupted, 2 bad input.
    """
    try:
        timeout = parse_round_timeout(round_timeout)
    except ValueError as exc:
        raise UserError(f"--round-timeout: {shown(round_timeout)} is not allowed; expected {exc}") from None
    rank = launcher_rank() if transport == "mpi" else None
    if rank is not None and rank > 0:
        require_mpi4py()
        serve_worker()  # a worker rank: rank 0 reads the settings and sends what it needs
        return
    layers, sources = config_layers(config_file, overrides, flags)
    config = resolve_config(*layers, sources=sources)
    if transport == "mpi":
        summary = _run_on_mpi(config, out_dir, name, overwrite, quiet, launched=rank is not None,
                              step_budget=step_budget)
    else:
        summary = run_experiment(config, out_dir=out_dir, name=name, overwrite=overwrite, quiet=quiet,
                                 round_timeout=timeout, step_budget=step_budget)
        allow_fast_exit()  # the file is finished and the workers stopped: nothing left for the exit
    if summary.extras.get("reused") and not quiet:
        say(f"ist: {summary.file} already holds this run ({summary.status}); not recomputed "
            "(--overwrite recomputes it)", err=True)
    if as_json:
        say(json.dumps(summary.as_dict(), sort_keys=True, default=float))
    elif not quiet:
        print_summary(summary.as_dict(), sys.stderr)
    if summary.status == "diverged":
        say(f"ist: run diverged at round {summary.rounds_completed} (loss not finite); "
            f"recorded in {summary.file}", err=True)
        sys.exit(3)


def _run_on_mpi(config: dict[str, Any], out_dir: str, name: str | None, overwrite: bool, quiet: bool,
                launched: bool, step_budget: int | None = None) -> RunSummary:
    """Rank 0 of an MPI job; outside any launcher, check the input, then become ``mpiexec``."""
    require_mpi4py()
    check_topology(config)
    if not launched:
        mpiexec_path()  # a missing launcher is reported before the output directory is made
        prepare_output(out_dir, name or default_run_name(config), overwrite)
        check_ranks(config["workers"] + 1, "--workers")  # then the memory estimate, before mpiexec starts
        check_run_inputs(config, ranks=True)
        # single has workers pinned to 1; when workers own the model, rank 0 outlives a lost rank to record it
        relaunch(config["workers"] + 1, sys.argv[1:], survive_rank_loss=plan_of(config).workers_own_model(config))
    rank_loss.listen()  # the launcher's notice that a rank died (sent only to such jobs)
    comm = world()
    started: list[int] = []
    try:
        check_launcher_size(comm, config["workers"])
        return run_experiment(config, out_dir=out_dir, name=name, overwrite=overwrite, quiet=quiet,
                              on_start=started.extend, transport=mpi_transport, step_budget=step_budget)
    except BaseException as exc:
        if started:  # workers may be mid-round: the launcher must end them
            abort_at_exit(comm, getattr(exc, "exit_code", 130 if isinstance(exc, KeyboardInterrupt) else 1))
        raise
    finally:
        release_workers(comm)
