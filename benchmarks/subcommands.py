"""The command line of a benchmark made of sub-commands, each a function of the parsed options.

    run_subcommand(__doc__, {"step": (step, {"--repeats": {"type": int, "default": 30}}), ...})
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

Options = dict[str, dict]  # "--flag" -> the keywords of argparse's add_argument


def run_subcommand(doc: str, commands: dict[str, tuple[Callable[[argparse.Namespace], None], Options]]) -> None:
    """Parse the command line into one of ``commands`` (name -> its function and options) and
    call that function; ``--help`` shows the first paragraph of ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name, (_, options) in commands.items():
        command = sub.add_parser(name)
        for flag, keywords in options.items():
            command.add_argument(flag, **keywords)
    args = parser.parse_args()
    commands[args.what][0](args)
