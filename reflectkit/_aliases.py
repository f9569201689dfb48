"""Old import paths of modules that moved when the package was regrouped by layer.

``import reflectkit.runlog`` still works and gives the very module object that
``reflectkit.stores.runlog`` is (not a copy, not a shim re-exporting its names), so
``monkeypatch.setattr(reflectkit.runlog, ...)`` patches the real one. A meta-path finder does
it: it answers only for the names in :data:`MOVED` and loads each from its new home.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

__all__ = ["MOVED", "install"]

MOVED: dict[str, str] = {
    "reflectkit.critics.verdict": "reflectkit.verdict",
    "reflectkit.durability": "reflectkit.stores.durability",
    "reflectkit.jsonl": "reflectkit.stores.jsonl",
    "reflectkit.memory": "reflectkit.stores.memory",
    "reflectkit.run_owner": "reflectkit.stores.run_owner",
    "reflectkit.runlog": "reflectkit.stores.runlog",
    "reflectkit.sqlite": "reflectkit.stores.sqlite",
}
"""Old module name -> the module's home now."""


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self.home_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.home_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module ran when its new home was imported. The import system has just set its
        # __spec__ to the alias's; it keeps its own (reload and tools read it).
        module.__spec__ = self.home_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        home = MOVED.get(fullname)
        if home is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(home))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (reflectkit's ``__init__`` calls it)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
