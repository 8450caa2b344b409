"""``ist run``: flags come from the option table in ``ist_cli.config``.

Precedence, lowest first: defaults, ``--config FILE.toml``, ``--set key=value``, flags.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ist_cli.config import (
    OPTIONS,
    check_keys,
    load_toml,
    parse_set_overrides,
    resolve_config,
    show_value,
)
from ist_cli.progress import print_summary
from ist_cli.runner import run_experiment


def _option_decorators(model: str | None, exclude: tuple[str, ...]):
    decorators = []
    for option in OPTIONS:
        if option.key in exclude or (model is not None and model not in option.models):
            continue
        help_text = option.help
        if option.choices:
            help_text += f" [{'|'.join(option.choices)}]"
        if option.is_flag_pair:
            name = option.key.replace("_", "-")
            decorators.append(click.option(f"--{name}/--no-{name}", option.key, default=None, help=help_text))
        else:
            if option.defaults_by_model and model is not None:
                help_text += f" (default: {show_value(option.default_for(model))})"
            elif option.defaults_by_model:
                shown = ", ".join(f"{name} {show_value(option.default_for(name))}" for name in option.models)
                help_text += f" (default: {shown})"
            elif option.default is not None:
                help_text += f" (default: {show_value(option.default)})"
            decorators.append(
                click.option(option.flag, option.key, type=str, default=None, metavar=option.metavar or "VALUE",
                             help=help_text)
            )
    return decorators


class SectionedCommand(click.Command):
    """``--help`` lists the options of each ``Option.section`` under its own heading."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        section_of = {option.key: option.section for option in OPTIONS}
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                groups.setdefault(section_of.get(param.name or "", ""), []).append(record)
        for title, records in sorted(groups.items(), key=lambda item: item[0] != ""):
            with formatter.section(title or "Options"):
                formatter.write_dl(records)


def with_run_options(model: str | None = None, exclude: tuple[str, ...] = ()):
    """Click options for every run setting (of ``model`` only, when given), from the option table."""

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
@click.option("--config", "config_file", type=str, default=None, metavar="FILE.toml", help="Settings from a TOML file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one setting (repeatable).")
@click.option("--out", "out_dir", type=str, default="results", show_default=True, help="Output directory.")
@click.option("--name", type=str, default=None, help="Run file name (DIR/NAME.h5); default derived from the config.")
@click.option("--overwrite", is_flag=True, help="Replace an existing DIR/NAME.h5.")
@click.option("--quiet", is_flag=True, help="No progress or summary on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def run_command(config_file: str | None, overrides: tuple[str, ...], out_dir: str, name: str | None,
                overwrite: bool, quiet: bool, as_json: bool, **flags: Any) -> None:
    """Run one experiment and write DIR/NAME.h5.

    Exit codes: 0 completed, 3 diverged, 1 failed (worker fault), 130 interrupted, 2 bad input.
    """
    layers, sources = config_layers(config_file, overrides, flags)
    config = resolve_config(*layers, sources=sources)
    summary = run_experiment(config, out_dir=out_dir, name=name, overwrite=overwrite, quiet=quiet)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), sort_keys=True, default=float))
    elif not quiet:
        print_summary(summary.as_dict(), sys.stderr)
    if summary.status == "diverged":
        click.echo(f"ist: run diverged at round {summary.rounds_completed} (loss not finite); "
                   f"recorded in {summary.file}", err=True)
        sys.exit(3)
