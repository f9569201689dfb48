"""The ``reflectkit`` command line: the main group and ``run`` and ``templates``
(:mod:`.app`), each other command in a module of its own (:mod:`.runs`, :mod:`.data` for
``recycle`` and ``export``, :mod:`.evaluate`, :mod:`.serve`), the options they share
(:mod:`.options`) and what every command does alike (:mod:`.support`).

The command line is the top of the house: it imports every layer; nothing imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reflectkit.cli.app import cli, main

__all__ = ["cli", "main"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so ``python -m reflectkit.cli.serve`` runs serve.py once, as __main__.
    if name in __all__:
        from reflectkit.cli import app

        return getattr(app, name)
    raise AttributeError(f"module 'reflectkit.cli' has no attribute {name!r}")
