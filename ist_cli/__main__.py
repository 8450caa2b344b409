from ist_cli.cli import main

main()
