"""Shared fixtures. Every test runs with hosted-model requests blocked."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from reflectkit.testing import block_model_requests

# Never let a test read a developer's real keys or model choice.
for _name in list(os.environ):
    if _name.endswith(("_API_KEY", "_API_TOKEN")) or _name == "REFLECTKIT_MODEL":
        del os.environ[_name]


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
