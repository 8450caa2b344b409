"""The ``ist`` command: a thin layer that parses arguments and calls the library.

Every user mistake becomes one line on stderr and exit code 2; see ``ist_cli.errors``.
``ist`` (or ``ist sweep``, ...) without arguments prints its help on stdout and exits 0;
Ctrl-C prints ``ist: interrupted`` and exits 130.
"""

from __future__ import annotations

import sys

import click

from ist_cli._version import __version__
from ist_cli.cli.calibrate import calibrate_command
from ist_cli.cli.report import report_command
from ist_cli.cli.run import run_command
from ist_cli.cli.study import study_command
from ist_cli.cli.sweep import sweep_command
from ist_cli.cli.theory import theory_command
from ist_cli.errors import RunFailed, RunInterrupted, UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ist")
def cli() -> None:
    """A command-line lab for Independent Subnetwork Training (IST) research."""


cli.add_command(run_command, "run")
cli.add_command(sweep_command, "sweep")
cli.add_command(study_command, "study")
cli.add_command(report_command, "report")
cli.add_command(theory_command, "theory")
cli.add_command(calibrate_command, "calibrate")


def fail(message: str, code: int) -> None:
    """Print one line to stderr and exit; the single place the CLI reports an error."""
    first_line = " ".join(str(message).split())
    click.echo(f"ist: error: {first_line}", err=True)
    sys.exit(code)


def interrupted(detail: str = "") -> None:
    """Ctrl-C is the user's choice, not an error: say so, exit 130."""
    click.echo(f"ist: interrupted{': ' + detail if detail else ''}", err=True)
    sys.exit(RunInterrupted.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="ist", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # `ist` alone: the help, readable, on stdout
        click.echo(exc.ctx.get_help())
        sys.exit(0)
    except click.exceptions.Abort:
        interrupted()
    except click.ClickException as exc:
        fail(exc.format_message(), 2)
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    except RunInterrupted as exc:
        interrupted(" ".join(str(exc).split()))
    except RunFailed as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        interrupted()
