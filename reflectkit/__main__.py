"""``python -m reflectkit`` runs the command line."""

from reflectkit.cli import main

main()
