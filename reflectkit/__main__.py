"""``python -m reflectkit`` runs the command line."""

from reflectkit.cli.app import main

main()
