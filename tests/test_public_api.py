"""The public surface: __all__, the API page and the stable names agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import reflectkit as rk

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"

# Names that checks outside this repository call (the project's design document, which is not
# kept here, names them as the public API); they must never disappear.
STABLE = {
    "reflect",
    "areflect",
    "Reflector",
    "build_graph",
    "parse",
    "Parsed",
    "StreamParser",
    "TagScheme",
    "REFLECTION_TAGS",
    "THINK_TAGS",
    "ReflectkitError",
    "ReflectConfig",
    "ReflectionResult",
}


def _documented() -> set[str]:
    names: set[str] = set()
    for line in API_PAGE.read_text().splitlines():
        if line.startswith("### "):
            names.update(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)", line))
    return names


def test_all_matches_the_api_page() -> None:
    assert set(rk.__all__) == _documented()
    assert len(rk.__all__) == len(set(rk.__all__))


def test_every_exported_name_resolves() -> None:
    for name in rk.__all__:
        assert getattr(rk, name) is not None, name
    assert set(dir(rk)) >= set(rk.__all__)


def test_stable_names_are_exported() -> None:
    assert set(rk.__all__) >= STABLE
    from reflectkit.testing import FunctionLLM, ScriptedLLM

    assert callable(ScriptedLLM)
    assert callable(FunctionLLM)


def test_unknown_attributes_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="not_a_thing"):
        _ = rk.not_a_thing


def test_the_package_is_typed() -> None:
    assert (Path(rk.__file__).parent / "py.typed").exists()
