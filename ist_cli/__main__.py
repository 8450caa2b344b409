from ist_cli.cli import entry

entry()
