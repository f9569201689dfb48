"""Shared fixtures. Every test runs with hosted-model requests blocked, and in a throw-away home
so that nothing it does reaches the developer's own files."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reflectkit.testing import block_model_requests
from tests.postgres import postgres_url  # a session fixture: one server for every module

__all__ = ["FILE_VARIABLES", "QUESTION", "postgres_url", "throwaway_files", "verdict"]

FILE_VARIABLES = {
    "REFLECTKIT_RUN_LOG": "runs.sqlite3",
    "REFLECTKIT_CHECKPOINTS": "checkpoints.sqlite3",
    "REFLECTKIT_MEMORY": "memory.sqlite3",
}
"""reflectkit's variables that name a file (else a default in the user data directory)."""

# Never let a test read a developer's real keys or model choice, or write to their files. Set
# here, at import, so that every subprocess and notebook kernel the session starts inherits it:
# - a throw-away HOME (USERPROFILE on Windows) and user data directory (XDG_DATA_HOME, and
#   LOCALAPPDATA on Windows; macOS's is under HOME);
# - no REFLECTKIT_* file variable: the run log, checkpoints and lesson memory default to files
#   in that throw-away directory, so the suite still tests the defaults (every test that runs
#   the loop records it in a real run log file).
# Caches and tools' own configuration (pip's, for the wheel test) stay where they were:
# reflectkit writes to neither. Test modules import this file again as tests.conftest; the
# marker keeps that from making a second home.
_OWN = ("REFLECTKIT_MODEL", *FILE_VARIABLES)
for _name in list(os.environ):
    if _name.endswith(("_API_KEY", "_API_TOKEN")) or _name in _OWN:
        del os.environ[_name]
_MARKER = "REFLECTKIT_TEST_HOME"
if os.environ.get(_MARKER) != os.environ.get("HOME"):
    _real_home = os.path.expanduser("~")
    os.environ.setdefault("XDG_CACHE_HOME", os.path.join(_real_home, ".cache"))
    os.environ.setdefault("XDG_CONFIG_HOME", os.path.join(_real_home, ".config"))
    _scratch = tempfile.mkdtemp(prefix="reflectkit-tests-")
    atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    _home, _data, _state = (os.path.join(_scratch, name) for name in ("home", "data", "state"))
    for _directory in (_home, _data, _state):
        os.mkdir(_directory)
    os.environ["HOME"] = os.environ["USERPROFILE"] = os.environ[_MARKER] = _home
    os.environ["XDG_DATA_HOME"] = os.environ["LOCALAPPDATA"] = _data
    os.environ["XDG_STATE_HOME"] = _state


def pytest_configure(config: pytest.Config) -> None:
    # LiteLLM's streaming types trip a pydantic warning on import of a TypedDict; it is theirs
    # and harmless, and `filterwarnings = error` would turn it into a failure.
    config.addinivalue_line(
        "filterwarnings", "ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"
    )


@pytest.fixture(autouse=True)
def _block_hosted_models() -> Iterator[None]:
    with block_model_requests():
        yield


@pytest.fixture
def throwaway_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For tests that run the documented examples: every reflectkit file variable names a file in
    a directory of this test's own (returned), for the test and what it starts. An example that
    forgot ``run_log=False`` then writes there, not even in the session's throw-away home;
    tests/test_user_data.py is what fails on such an example."""
    folder = tmp_path / "reflectkit-files"
    for name, file in FILE_VARIABLES.items():
        monkeypatch.setenv(name, str(folder / file))
    return folder


QUESTION = "If a number plus 5 equals 12, what is that number minus 3?"


def verdict(passed: bool, feedback: str = "", score: float | None = None) -> str:
    """A well-formed LLM-critic reply."""
    import json

    body: dict[str, object] = {"verdict": "pass" if passed else "revise", "feedback": feedback}
    if score is not None:
        body["score"] = score
    return json.dumps(body)
