"""``python -m tidings`` runs the command-line tool."""

from tidings.cli.main import main

main()
