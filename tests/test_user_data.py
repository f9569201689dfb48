"""The documented examples leave nothing in a reader's own files.

Every example on a fake model passes ``run_log=False`` (or a throw-away path), so that a reader
who runs it does not find fake runs in ``reflectkit runs list``, or as fine-tuning data in
``reflectkit export``, later. These tests run the ```python blocks of README.md and docs/, the
scripts in examples/ and the notebook as a reader would: in a fresh HOME, with no reflectkit
variable set. Then nothing may be there: no reflectkit file in the default places, and no file
anywhere under that HOME holding the examples' questions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reflectkit.stores import durability, memory, runlog
from tests.conftest import FILE_VARIABLES
from tests.test_docs import _blocks
from tests.test_examples import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"

# Words from the examples' questions: a file that holds one of them holds a run.
QUESTIONS = (
    "number plus 5 equals 12",
    "strawberry",
    "17 + 25",
    "add(a, b)",
    "capital of France",
    "Paris",
    "7 - 3",
    "shout this",
)
STORES = ("runs.sqlite3", "checkpoints.sqlite3", "memory.sqlite3")

RUNNER = """
import json, runpy, sys
from reflectkit.testing import block_model_requests

work = json.load(sys.stdin)
with block_model_requests():
    for where, code in work["blocks"]:
        exec(compile(code, where, "exec"), {"__name__": "__docs__"})
    for script in work["scripts"]:
        runpy.run_path(script, run_name="__main__")
"""


def _readers_environment(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A new reader's environment: a fresh, empty HOME, which is also the working directory,
    holding the user data directory (no XDG_* variable, so the defaults under HOME apply); no
    reflectkit variable; temporary files (the examples' throw-away paths) outside HOME."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "tmp").mkdir()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("REFLECTKIT_", "XDG_", "IPYTHON", "JUPYTER", "MPLCONFIGDIR"))
    }
    env.update(
        HOME=str(home),
        USERPROFILE=str(home),
        LOCALAPPDATA=str(home / "AppData" / "Local"),
        APPDATA=str(home / "AppData" / "Roaming"),
        TMPDIR=str(tmp_path / "tmp"),
        # Ray's session sockets must fit AF_UNIX's 107 bytes, which the test's TMPDIR does not.
        RAY_TMPDIR="/tmp/reflectkit-tests-ray",
    )
    return home, env


def _left_behind(home: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the examples left under ``home``: reflectkit's files, and files with questions."""
    found = []
    with monkeypatch.context() as patch:
        for name in list(os.environ):
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        defaults = [runlog.default_path(), durability.default_path(), memory.default_path()]
    folders = set()
    for path in defaults:
        assert path is not None
        assert path.is_relative_to(home), path  # the check looks in the right place
        folders.add(path.parent)
    found += [f"{f.relative_to(home)}: reflectkit's data directory" for f in folders if f.exists()]
    for path in sorted(home.rglob("*")):
        where = path.relative_to(home)
        if path.name.startswith(STORES):
            found.append(f"{where}: a reflectkit file")
        elif path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            held = [question for question in QUESTIONS if question in text]
            if held:
                found.append(f"{where}: holds {held}")
    return found


def test_the_docs_and_example_scripts_leave_nothing_in_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, env = _readers_environment(tmp_path)
    work = {"blocks": _blocks(), "scripts": [str(script) for script in EXAMPLES]}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(work),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=home,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert _left_behind(home, env, monkeypatch) == []


def test_the_notebook_leaves_nothing_in_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    from tests.test_notebook import _kernel

    home, env = _readers_environment(tmp_path)
    kernel = _kernel(tmp_path, monkeypatch)  # found or installed with the session's environment
    env.update({k: v for k, v in os.environ.items() if k == "JUPYTER_PATH"})
    env["IPYTHONDIR"] = str(tmp_path / "ipython")  # IPython's history holds the cells' code
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(home)}}
    )
    client.execute(env=env)
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    assert _left_behind(home, env, monkeypatch) == []


def test_every_file_variable_of_reflectkit_is_known_to_the_harness() -> None:
    """tests/conftest.py moves each variable that names a file; a new one must join them."""
    read = set()
    for source in (ROOT / "reflectkit").rglob("*.py"):
        read |= set(re.findall(r"\"(REFLECTKIT_[A-Z_]+)\"", source.read_text()))
    # REFLECTKIT_SERVER_ is the prefix of every proxy setting (ServerSettings reads them all).
    known = {"REFLECTKIT_MODEL", "REFLECTKIT_SERVER_API_KEY", "REFLECTKIT_SERVER_"}
    assert read - known == set(FILE_VARIABLES)
