"""Nothing reflectkit does inside a run blocks the event loop.

LangGraph's server runs graphs under blockbuster, which raises on any blocking call (a file
read, a stat, an import that touches the disk) made on the event loop thread; an ASGI app's
other requests would wait meanwhile. These tests run the same detector around the graph, the
async API with every store switched on, the LangGraph Platform factory, and the local model.
Building a Reflector is blocking by design (it reads templates and opens stores): the tests
build it before the detector is on, as an app does at start-up, or through ``areflect``, which
builds it in a worker thread.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from langchain_core.runnables import RunnableConfig

import reflectkit as rk
from reflectkit.integrations.langgraph_platform import make_graph
from reflectkit.stores.runlog import RunLog
from reflectkit.testing import ScriptedLLM

QUESTION = {"messages": [{"role": "user", "content": "What is 2+2?"}]}


@pytest.fixture
def detector() -> Iterator[BlockBuster]:
    with blockbuster_ctx() as bb:
        yield bb


def _fail_then_pass() -> tuple[ScriptedLLM, ScriptedLLM]:
    generator = ScriptedLLM(["<output>5</output>", "<output>4</output>"] * 20)
    judge = ScriptedLLM(['{"passed": false, "feedback": "2+2 is 4"}', '{"passed": true}'] * 20)
    return generator, judge


def test_the_detector_is_on(detector: BlockBuster, tmp_path: Path) -> None:
    # The tests below mean nothing if a blocking call on the loop went unnoticed.
    async def reads() -> str:
        return (tmp_path / "x").read_text()

    (tmp_path / "x").write_text("x")
    with pytest.raises(Exception, match="Blocking call"):
        asyncio.run(reads())


async def test_the_graph_runs_without_blocking_the_loop() -> None:
    generator, judge = _fail_then_pass()
    graph = rk.build_graph(model=generator.model, critic=rk.LLMCritic(judge.model))
    with blockbuster_ctx():
        state = await graph.ainvoke(QUESTION)
    result = state["result"]
    assert (result.output, result.stop_reason, len(result.iterations)) == ("4", "passed", 2)


async def test_areflect_with_every_store_on_does_not_block_the_loop(tmp_path: Path) -> None:
    generator, _ = _fail_then_pass()
    lesson_then_pass = ScriptedLLM(
        ["<output>5</output>", "Add, do not guess.", "<output>4</output>"]
    )
    settings = {
        "model": generator.model,
        "critic": lambda question, answer: answer == "4",
        "run_log": tmp_path / "runs.sqlite3",
    }
    with blockbuster_ctx():
        logged = await rk.areflect("2+2?", **settings)
        durable = await rk.areflect(
            "2+2?", thread_id="t1", checkpointer=tmp_path / "checkpoints.sqlite3", **settings
        )
        learned = await rk.areflect(
            "2+2?",
            memory=tmp_path / "memory.sqlite3",
            trials=2,
            max_iterations=1,
            **{**settings, "model": lesson_then_pass.model},
        )
    assert logged.run_id is not None
    assert (logged.output, durable.output, learned.output) == ("4", "4", "4")
    assert durable.thread_id == "t1"
    assert [trial.passed for trial in learned.trials] == [False, True]
    assert learned.lessons == ["Add, do not guess."]
    with RunLog(tmp_path / "runs.sqlite3") as log:
        assert log.get(logged.run_id).status == "finished"


async def test_a_reflectors_stream_does_not_block_the_loop() -> None:
    generator, judge = _fail_then_pass()
    reflector = rk.Reflector(generator.model, critic=rk.LLMCritic(judge.model))
    with blockbuster_ctx():
        async with reflector:
            events = [event async for event in reflector.astream("2+2?", include_thinking=True)]
    assert isinstance(events[-1], rk.ResultEvent)
    assert events[-1].result.output == "4"


async def test_the_platform_factory_builds_off_the_loop_and_caches() -> None:
    generator = ScriptedLLM(["<output>4</output>"] * 5)
    config: RunnableConfig = {
        "configurable": {"reflectkit": {"model": generator.model, "mode": "single"}}
    }
    with blockbuster_ctx():
        graph = await make_graph(config)
        again = await make_graph(config)
        state = await graph.ainvoke(QUESTION)
    assert again is graph
    assert state["result"].output == "4"


def test_a_fresh_process_loads_litellm_off_the_loop(tmp_path: Path) -> None:
    # In the test session LiteLLM is long imported; only a new interpreter shows where its
    # import (which reads .env files and the price map from disk) happens.
    script = tmp_path / "fresh.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio, sys
            from blockbuster import blockbuster_ctx
            import reflectkit as rk
            from reflectkit.testing import ScriptedLLM

            async def main():
                fake = ScriptedLLM(["<output>4</output>"])
                graph = rk.build_graph(model=fake.model, mode="single")
                assert "litellm" not in sys.modules, "building the graph loaded LiteLLM"
                with blockbuster_ctx():
                    state = await graph.ainvoke(
                        {"messages": [{"role": "user", "content": "2+2?"}]}
                    )
                assert "litellm" in sys.modules
                print(state["result"].output)

            asyncio.run(main())
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "4"


@pytest.mark.local
async def test_the_local_model_does_not_block_the_loop() -> None:
    with blockbuster_ctx():
        result = await rk.areflect(
            "What is 2+2?", model="local/smollm2-135m", mode="single", max_tokens=16
        )
    assert result.usage.calls >= 1
    assert result.stop_reason == "single_pass"
