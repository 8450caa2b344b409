"""`ist report` (in progress)."""

import click

from ist_cli.errors import UserError


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1)
def report_command(args: tuple[str, ...]) -> None:
    """Not available yet."""
    raise UserError("ist report is not available yet")
