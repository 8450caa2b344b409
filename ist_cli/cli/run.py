"""`ist run` (in progress)."""

import click


@click.command()
def run_command() -> None:
    """Not available yet."""
