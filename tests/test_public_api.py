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
    """The names the API page renders from ``reflectkit`` itself: one mkdocstrings directive
    (``::: reflectkit.Name``) each; the edges' directives name their own modules
    (``::: reflectkit.testing``, ``::: reflectkit.server.create_app``)."""
    package = Path(rk.__file__).parent
    found = re.findall(r"^::: reflectkit\.(\w+)$", API_PAGE.read_text(), re.MULTILINE)
    modules = {
        name for name in found if (package / f"{name}.py").exists() or (package / name).is_dir()
    }
    return set(found) - modules


def test_all_matches_the_api_page() -> None:
    """A new public name needs a ``::: reflectkit.Name`` line in docs/api.md (and a docstring:
    the page is generated from it); a name dropped from ``__all__`` must leave the page."""
    documented = _documented()
    assert set(rk.__all__) - documented == set(), "add '::: reflectkit.<name>' to docs/api.md"
    assert documented - set(rk.__all__) == set(), "docs/api.md renders names not in __all__"
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
