"""The graph's shape per configuration (snapshot-tested), and the graph as a subgraph."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

import reflectkit as rk
from reflectkit.stopping import recursion_limit
from reflectkit.testing import ScriptedLLM
from tests.conftest import verdict

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("REFLECTKIT_UPDATE_SNAPSHOTS") == "1"


def _matches_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / f"{name}.mmd"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"no snapshot {path.name}; create it with REFLECTKIT_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(), (
        "graph shape changed; if intended, REFLECTKIT_UPDATE_SNAPSHOTS=1"
    )


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("loop", {}),
        ("single", {"mode": "single"}),
        ("code_critic", {"critic": lambda question, answer: True}),
        ("tuned_auto", {"_model_name": "reflection-70b-shape"}),
    ],
)
def test_graph_shape(name: str, settings: dict[str, Any]) -> None:
    model_name = settings.pop("_model_name", None)
    fake = ScriptedLLM([], name=model_name) if model_name else ScriptedLLM([])
    graph = rk.build_graph(model=fake.model, **settings)
    _matches_snapshot(name, graph.get_graph().draw_mermaid())


def test_the_recursion_limit_follows_max_iterations() -> None:
    fake = ScriptedLLM([])
    for k in (1, 3, 50):
        graph = rk.build_graph(model=fake.model, max_iterations=k)
        assert graph.config is not None
        assert graph.config["recursion_limit"] == recursion_limit(
            rk.ReflectConfig(max_iterations=k)
        )
        assert graph.config["recursion_limit"] > 2 * k + 1


async def test_build_graph_from_a_config_and_run_it_directly() -> None:
    fake = ScriptedLLM(
        ["<output>5</output>", verdict(False, "no"), "<output>4</output>", verdict(True)]
    )
    config = rk.ReflectConfig(model=fake.model, max_iterations=2)
    graph = rk.build_graph(config)
    out = await graph.ainvoke({"messages": [{"role": "user", "content": "q"}]})
    assert set(out) == {"result", "output", "stop_reason"}
    assert out["output"] == "4"
    assert out["stop_reason"] is rk.StopReason.PASSED
    assert isinstance(out["result"], rk.ReflectionResult)


async def test_the_graph_works_as_a_subgraph_of_a_larger_graph() -> None:
    fake = ScriptedLLM(["<output>Paris</output>", verdict(True)])

    class Outer(TypedDict, total=False):
        messages: list[Any]
        output: str
        shouted: str

    def shout(state: Outer) -> dict[str, str]:
        return {"shouted": state["output"].upper()}

    outer = StateGraph(Outer)
    outer.add_node("reflect", rk.build_graph(model=fake.model))
    outer.add_node("shout", shout)
    outer.add_edge(START, "reflect")
    outer.add_edge("reflect", "shout")
    outer.add_edge("shout", END)
    out = await outer.compile().ainvoke({"messages": [{"role": "user", "content": "Capital?"}]})
    assert out["shouted"] == "PARIS"


def test_settings_override_a_config_and_are_validated() -> None:
    fake = ScriptedLLM([])
    base = rk.ReflectConfig(model=fake.model)
    assert rk.build_graph(base, max_iterations=7).config["recursion_limit"] == 19
    with pytest.raises(rk.ConfigurationError, match="max_iterations"):
        rk.build_graph(base, max_iterations=0)
