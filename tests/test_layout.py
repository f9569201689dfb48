"""The package's layers (docs/architecture.md): the core never imports an edge, models/ and
stores/ never import the loop. And the package regrouped by layer keeps its old import paths:
each is the very module object of its new home (so patching one patches the other), and
importing reflectkit loads none of them."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from reflectkit._aliases import MOVED

PACKAGE = Path(__file__).resolve().parents[1] / "reflectkit"

EDGES = ("cli", "data", "evaluation", "integrations", "server")
LOOP = (
    "api",
    "batch_items",
    "batching",
    "batching_ray",
    "critics",
    "drafting",
    "graph",
    "messages",
    "pauses",
    "pool",
    "prompts",
    "ray_pool",
    "reflexion",
    "run_setup",
    "runner",
    "runtime",
    "stopping",
    "testing",
    "tracing",
    "typed",
)

# The module paths the docs, README and examples named before the regrouping (and the modules
# the regrouping renamed); every one must still import.
DOCUMENTED_OLD_PATHS = [
    "reflectkit.display",
    "reflectkit.durability",
    "reflectkit.export",
    "reflectkit.format_help",
    "reflectkit.grammar",
    "reflectkit.llm",
    "reflectkit.local",
    "reflectkit.local_engine",
    "reflectkit.local_supervisor",
    "reflectkit.local_worker",
    "reflectkit.memory",
    "reflectkit.provider",
    "reflectkit.recycle",
    "reflectkit.runlog",
    "reflectkit.server.command",
    "reflectkit.sqlite",
]


def _imports(path: Path) -> set[str]:
    """Every reflectkit module ``path`` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("reflectkit.")}


def _layer_of(name: str) -> str:
    return name.split(".")[1]


def _modules(where: Path) -> list[Path]:
    return sorted(where.rglob("*.py") if where.is_dir() else [where])


def test_the_core_never_imports_an_edge() -> None:
    core = [
        p for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")
    ] + _modules(PACKAGE / "critics")
    for path in core + _modules(PACKAGE / "models") + _modules(PACKAGE / "stores"):
        upward = {name for name in _imports(path) if _layer_of(name) in EDGES}
        assert not upward, f"{path.relative_to(PACKAGE)} imports {sorted(upward)}"


@pytest.mark.parametrize("layer", ["models", "stores"])
def test_models_and_stores_never_import_the_loop(layer: str) -> None:
    for path in _modules(PACKAGE / layer):
        upward = {name for name in _imports(path) if _layer_of(name) in LOOP}
        assert not upward, f"{path.relative_to(PACKAGE)} imports {sorted(upward)}"


@pytest.mark.parametrize("old", DOCUMENTED_OLD_PATHS)
def test_a_documented_old_path_still_imports(old: str) -> None:
    assert old in MOVED
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_path_is_its_new_home(old: str, new: str) -> None:
    moved = importlib.import_module(old)
    home = importlib.import_module(new)
    assert moved is home
    assert sys.modules[old] is home
    assert home.__name__ == new
    assert home.__spec__ is not None
    assert home.__spec__.name == new
    parent, _, name = old.rpartition(".")
    assert getattr(importlib.import_module(parent), name) is home


def test_from_an_old_path_imports_the_same_names() -> None:
    from reflectkit.runlog import RunLog

    from reflectkit.stores.runlog import RunLog as Home

    assert RunLog is Home


def test_patching_an_old_path_patches_the_new_home(monkeypatch: pytest.MonkeyPatch) -> None:
    import reflectkit.sqlite

    import reflectkit.stores.sqlite

    monkeypatch.setattr(reflectkit.sqlite, "BUSY_TIMEOUT", 1.5)
    assert reflectkit.stores.sqlite.BUSY_TIMEOUT == 1.5


def test_importing_reflectkit_loads_no_moved_module() -> None:
    code = (
        "import sys, reflectkit\n"
        f"moved = {sorted({*MOVED, *MOVED.values()})!r}\n"
        "print([m for m in moved if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_an_unknown_name_is_still_missing() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("reflectkit.no_such_module")
