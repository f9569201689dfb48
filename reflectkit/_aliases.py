"""Old import paths of modules that moved when the package was regrouped by layer.

``import reflectkit.runlog`` still works and gives the very module object that
``reflectkit.stores.runlog`` is (not a copy, not a shim re-exporting its names), so
``monkeypatch.setattr(reflectkit.runlog, ...)`` patches the real one. A meta-path finder does
it: it answers only for the names in :data:`MOVED` and loads each from its new home.
``python -m`` with an old name runs the new home's code (``python -m reflectkit.server.command``
serves).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import CodeType, ModuleType

__all__ = ["MOVED", "home_of", "install"]

MOVED: dict[str, str] = {
    "reflectkit.critics.verdict": "reflectkit.verdict",
    # stores/
    "reflectkit.durability": "reflectkit.stores.durability",
    "reflectkit.jsonl": "reflectkit.stores.jsonl",
    "reflectkit.memory": "reflectkit.stores.memory",
    "reflectkit.run_owner": "reflectkit.stores.run_owner",
    "reflectkit.runlog": "reflectkit.stores.runlog",
    "reflectkit.sqlite": "reflectkit.stores.sqlite",
    # models/
    "reflectkit.adapter": "reflectkit.models.adapter",
    "reflectkit.capabilities": "reflectkit.models.capabilities",
    "reflectkit.grammar": "reflectkit.models.local.grammar",
    "reflectkit.llm": "reflectkit.models.llm",
    "reflectkit.local": "reflectkit.models.local",
    "reflectkit.local_engine": "reflectkit.models.local.engine",
    "reflectkit.local_supervisor": "reflectkit.models.local.supervisor",
    "reflectkit.local_worker": "reflectkit.models.local.worker",
    "reflectkit.provider": "reflectkit.models.provider",
    "reflectkit.provider_errors": "reflectkit.models.provider_errors",
    # cli/
    "reflectkit.cli_support": "reflectkit.cli.support",
    "reflectkit.datatools_command": "reflectkit.cli.data",
    "reflectkit.evaluation.command": "reflectkit.cli.evaluate",
    "reflectkit.runs_command": "reflectkit.cli.runs",
    "reflectkit.server.command": "reflectkit.cli.serve",
    # data/, integrations/, and the module that makes every draft
    "reflectkit.display": "reflectkit.integrations.display",
    "reflectkit.export": "reflectkit.data.export",
    "reflectkit.format_help": "reflectkit.drafting",
    "reflectkit.recycle": "reflectkit.data.recycle",
    "reflectkit.wrapping": "reflectkit.integrations.wrapping",
}
"""Old module name -> the module's home now. A moved package's submodules follow it
(``reflectkit.local.engine`` is ``reflectkit.models.local.engine``)."""


def home_of(name: str) -> str | None:
    """Where the module once called ``name`` lives now, or None if it did not move."""
    if name in MOVED:
        return MOVED[name]
    package, _, rest = name.rpartition(".")
    while package:
        if package in MOVED:
            return f"{MOVED[package]}.{rest}"
        package, _, head = package.rpartition(".")
        rest = f"{head}.{rest}"
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self.home_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.home_spec = module.__spec__
        return module

    def get_code(self, fullname: str) -> CodeType | None:
        """The new home's code, for ``python -m <old name>`` (runpy asks for it)."""
        spec = importlib.util.find_spec(self.target)
        loader = spec.loader if spec is not None else None
        if not isinstance(loader, importlib.abc.InspectLoader):
            return None
        return loader.get_code(self.target)

    def exec_module(self, module: ModuleType) -> None:
        # The module ran when its new home was imported. The import system has just set its
        # __spec__ to the alias's; it keeps its own (reload and tools read it).
        module.__spec__ = self.home_spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        home = home_of(fullname) if fullname.startswith("reflectkit.") else None
        if home is None:
            return None
        # The home's file as origin: ``python -m <old name>`` puts it in sys.argv[0].
        found = importlib.util.find_spec(home)
        origin = found.origin if found is not None else None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(home), origin=origin)


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (reflectkit's ``__init__`` calls it)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
