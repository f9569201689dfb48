"""The package regrouped by layer keeps its old import paths: each is the very module object of
its new home (so patching one patches the other), and importing reflectkit loads none of them."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from reflectkit._aliases import MOVED


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
