"""The exception tree: one root, drawn in errors.py's docstring, retryable where it should be."""

from __future__ import annotations

import inspect
import re

import pytest

import reflectkit as rk
from reflectkit import errors
from reflectkit.result import partial_result
from reflectkit.testing import ScriptedLLM


def _classes() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }


def test_every_error_is_rooted_and_exported() -> None:
    for name, cls in _classes().items():
        assert issubclass(cls, rk.ReflectkitError), name
        assert getattr(rk, name) is cls
        assert name in rk.__all__


def test_the_docstring_draws_the_real_tree() -> None:
    doc = errors.__doc__ or ""
    drawn: dict[str, int] = {}
    for line in doc.splitlines():
        match = re.match(r"^(\s*)(?:[│ ]*[├└]── )?([A-Z][A-Za-z]+Error)\b", line)
        if match:
            drawn[match.group(2)] = line.index(match.group(2))
    assert set(drawn) == set(_classes())
    # Each class is drawn under its real parent: the nearest shallower line above it.
    lines = [line for line in doc.splitlines() if any(n in line for n in drawn)]
    for name, cls in _classes().items():
        if cls is rk.ReflectkitError:
            continue
        row = next(i for i, line in enumerate(lines) if re.search(rf"\b{name}\b", line))
        depth = drawn[name]
        parent = next(
            n
            for line in reversed(lines[:row])
            for n in drawn
            if re.search(rf"\b{n}\b", line) and drawn[n] < depth
        )
        assert cls.__bases__[0].__name__ == parent, f"{name} drawn under {parent}"


def test_configuration_errors_are_value_errors_and_run_errors_are_not() -> None:
    assert issubclass(rk.ConfigurationError, ValueError)
    assert not issubclass(rk.RunError, ValueError)


def test_retryable_flags() -> None:
    retryable = {
        rk.RateLimitedError,
        rk.ProviderTimeoutError,
        rk.ProviderConnectionError,
        rk.ProviderServerError,
    }
    for cls in _classes().values():
        if issubclass(cls, rk.ProviderError):
            assert cls("x").retryable is (cls in retryable), cls.__name__
    assert rk.ProviderError("x", retryable=True).retryable


def test_messages_name_what_to_do() -> None:
    assert "OPENAI_API_KEY" in str(rk.MissingCredentialsError("gpt-4o-mini", ["OPENAI_API_KEY"]))
    assert "prefix it" in str(rk.UnknownModelError("mystery"))
    assert "blocked" in str(rk.ModelRequestsBlockedError("gpt-4o"))
    assert rk.RateLimitedError("slow", retry_after=2.5).retry_after == 2.5
    assert rk.RunError("x").partial is None


def test_a_failed_runs_partial_is_its_result_and_has_the_shape_errors_declares() -> None:
    def fails(question: str, answer: str) -> bool:
        raise RuntimeError("critic broke")

    fake = ScriptedLLM(["<thinking>t</thinking><output>x</output>"])
    with pytest.raises(rk.CriticError) as caught:
        rk.reflect("q", model=fake.model, critic=fails)
    partial = caught.value.partial
    assert isinstance(partial, rk.ReflectionResult)
    assert partial_result(caught.value) is partial
    assert partial.stop_reason == "error"
    for member in ("output", "thinking", "reflections", "iterations", "stop_reason", "usage"):
        assert member in vars(errors.PartialResult), member
        assert getattr(partial, member) is not None
    assert partial.to_dict()["output"] == "x"
    assert partial_result(RuntimeError("x")) is None
    assert partial_result(rk.RunError("x")) is None
