"""Shared fixtures. Every test runs with hosted-model requests blocked."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from reflectkit.testing import block_model_requests
from tests.postgres import postgres_url  # a session fixture: one server for every module

__all__ = ["QUESTION", "postgres_url", "verdict"]

# Never let a test read a developer's real keys or model choice, or write to their files: the
# run log, checkpoints and lesson memory default to a throw-away user data directory, so every
# test that runs the loop also records it in a real run log file.
_OWN = ("REFLECTKIT_MODEL", "REFLECTKIT_RUN_LOG", "REFLECTKIT_CHECKPOINTS", "REFLECTKIT_MEMORY")
for _name in list(os.environ):
    if _name.endswith(("_API_KEY", "_API_TOKEN")) or _name in _OWN:
        del os.environ[_name]
os.environ["XDG_DATA_HOME"] = _DATA = tempfile.mkdtemp(prefix="reflectkit-tests-")
atexit.register(shutil.rmtree, _DATA, ignore_errors=True)


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


QUESTION = "If a number plus 5 equals 12, what is that number minus 3?"


def verdict(passed: bool, feedback: str = "", score: float | None = None) -> str:
    """A well-formed LLM-critic reply."""
    import json

    body: dict[str, object] = {"verdict": "pass" if passed else "revise", "feedback": feedback}
    if score is not None:
        body["score"] = score
    return json.dumps(body)
