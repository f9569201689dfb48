"""reflective(runnable): a LangChain Runnable or a LangGraph agent, judged on its whole run and
asked again with the critique, inside the caller's run (callbacks, config, checkpointer)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from blockbuster import blockbuster_ctx
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import reflectkit as rk
from reflectkit.critics import TrajectoryCritic
from reflectkit.integrations.langchain.fake import FakeChatModel
from reflectkit.testing import Reply, ScriptedLLM, tool_call
from reflectkit.trajectory import ToolUse, Trajectory
from tests.conftest import verdict

QUESTION = "What is 6 times 7?"


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def _agent(fake: ScriptedLLM, checkpointer: Any = None) -> CompiledStateGraph[Any, Any, Any, Any]:
    """A tool-calling agent: the model, then its tools, until it answers without calling one."""
    model = FakeChatModel(fake).bind_tools([multiply])

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([multiply]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer)


def _wrong_then_right() -> ScriptedLLM:
    """The agent multiplies with its tool, misreads the result, then answers right."""
    return ScriptedLLM(
        [
            Reply(tool_calls=[tool_call("multiply", {"a": 6, "b": 7}, id="call_m")]),
            "6 times 7 is 43.",
            "6 times 7 is 42.",
        ]
    )


def _tool_checker(seen: list[Trajectory]) -> Any:
    def check(trajectory: Trajectory) -> bool | str:
        seen.append(trajectory)
        if not trajectory.tool_uses:
            return True
        result = trajectory.tool_uses[-1].result or ""
        return result in trajectory.answer or f"The multiply tool returned {result}."

    return check


def test_an_agent_is_revised_once_from_a_critique_that_saw_its_tool_call() -> None:
    fake, seen = _wrong_then_right(), []
    app = rk.reflective(_agent(fake), critic=_tool_checker(seen))

    state = asyncio.run(app.ainvoke({"messages": [("user", QUESTION)]}))

    assert state["messages"][-1].content == "6 times 7 is 42."
    record = state["messages"][-1].response_metadata["reflectkit"]
    assert (record["stop_reason"], record["iterations"], record["passed"]) == ("passed", 2, True)
    # The critic saw the whole run: the request, the call with its arguments, the tool's result.
    first = seen[0]
    assert (first.question, first.answer, first.iteration) == (QUESTION, "6 times 7 is 43.", 1)
    assert first.tool_uses == [ToolUse("multiply", {"a": 6, "b": 7}, "42", "call_m")]
    assert [m["role"] for m in first.messages] == ["user", "assistant", "tool", "assistant"]
    # One revision: the agent's third model call got the critique after its own tool call.
    assert len(fake.requests) == 3
    assert fake.remaining == 0
    again = fake.requests[2]
    assert "The multiply tool returned 42." in again.last_user_text
    assert [m["role"] for m in again.messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert seen[1].iteration == 2
    assert seen[1].answer == "6 times 7 is 42."


def test_an_llm_critic_reads_the_tool_calls_and_results() -> None:
    fake = _wrong_then_right()
    critic = ScriptedLLM([verdict(False, "The tool said 42, not 43.", score=2), verdict(True)])
    app = rk.reflective(_agent(fake), critic_model=critic.model)

    result = asyncio.run(app.areflect({"messages": [("user", QUESTION)]}))

    assert (result.output, result.stop_reason, result.critic) == (
        "6 times 7 is 42.",
        rk.StopReason.PASSED,
        f"llm:{critic.model}",
    )
    shown = critic.requests[0].last_user_text
    assert '<tool_call name="multiply">{"a": 6, "b": 7}</tool_call>' in shown
    assert '<step role="tool" name="multiply">\n42\n</step>' in shown
    assert "<answer>\n6 times 7 is 43.\n</answer>" in shown
    assert "The tool said 42, not 43." in fake.requests[2].last_user_text
    assert [len(i.draft.tool_calls) for i in result.iterations] == [1, 0]
    assert result.iterations[0].verdict is not None
    assert result.iterations[0].verdict.score == 2
    assert result.usage.calls == 5  # three agent calls, two critiques


def test_a_langchain_chat_model_can_be_the_critic() -> None:
    fake = _wrong_then_right()
    judge = ScriptedLLM([verdict(False, "Use the tool's result."), verdict(True)])
    app = rk.reflective(_agent(fake), critic_model=FakeChatModel(judge), max_iterations=2)
    state = asyncio.run(app.ainvoke({"messages": [("user", QUESTION)]}))
    assert state["messages"][-1].content == "6 times 7 is 42."
    assert "<tool_call name=" in judge.requests[0].last_user_text


def test_a_plain_runnable_is_asked_again_in_its_own_input_shape() -> None:
    answers = iter(["Paris is in Germany.", "Paris is in France."])
    inputs: list[str] = []

    def bot(text: str) -> str:
        inputs.append(text)
        return next(answers)

    app = rk.reflective(
        RunnableLambda(bot), critic=lambda question, answer: "France" in answer or "Which country?"
    )
    assert app.invoke("Where is Paris?") == "Paris is in France."
    assert inputs[0] == "Where is Paris?"
    # Text in, text out: the second input restates the request, the answer and the critique.
    for part in ("Where is Paris?", "Paris is in Germany.", "Which country?"):
        assert part in inputs[1]


def test_a_chat_model_gets_its_answer_and_the_critique_as_turns() -> None:
    fake = ScriptedLLM(["3", "4"])
    app = rk.reflective(FakeChatModel(fake), critic=lambda q, a: a == "4" or "12 - 5 is 7.")
    reply = app.invoke([("user", "x + 5 = 12; x - 3?")])
    assert isinstance(reply, AIMessage)
    assert reply.content == "4"
    assert reply.response_metadata["reflectkit"]["stop_reason"] == "passed"
    assert [m["role"] for m in fake.requests[1].messages] == ["user", "assistant", "user"]
    assert fake.requests[1].messages[1]["content"] == "3"


def test_with_no_pass_the_best_judged_run_is_kept() -> None:
    outputs = iter(["draft one", "draft two"])
    scores = iter([7, 3])
    app = rk.reflective(
        RunnableLambda(lambda _: next(outputs)),
        critic=lambda t: rk.Verdict(passed=False, score=next(scores), feedback="Better."),
        max_iterations=2,
    )
    result = app.reflect("Write a draft.")
    assert (result.output, result.stop_reason, result.selection) == (
        "draft one",
        rk.StopReason.MAX_ITERATIONS,
        "best",
    )
    assert [i.verdict.score for i in result.iterations if i.verdict] == [7, 3]


class _Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.tags: dict[str, list[str]] = {}

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        name = str(kwargs.get("name"))
        self.names.append(name)
        self.tags[name] = list(kwargs.get("tags") or [])


def test_the_callers_callbacks_config_and_checkpointer_reach_the_agent() -> None:
    fake, seen = _wrong_then_right(), []
    graph = _agent(fake, checkpointer=InMemorySaver())
    app = rk.reflective(graph, critic=_tool_checker(seen))
    runs = _Runs()
    config: RunnableConfig = {
        "callbacks": [runs],
        "tags": ["mine"],
        "configurable": {"thread_id": "t1"},
    }

    state = asyncio.run(app.ainvoke({"messages": [("user", QUESTION)]}, config))

    assert state["messages"][-1].content == "6 times 7 is 42."
    assert runs.names[0] == "reflective"
    for inner in ("LangGraph", "agent", "tools", "critique"):
        assert inner in runs.names
    assert "mine" in runs.tags["agent"]
    # The thread kept both runs; the revision sent only the critique, the rest was the graph's.
    kept = graph.get_state(config).values["messages"]
    assert [m.type for m in kept] == ["human", "ai", "tool", "ai", "human", "ai"]
    assert "The multiply tool returned 42." in str(kept[4].content)

    # The next turn on the thread: the critic judges that turn, not the history before it.
    fake.enqueue("Yes: 42.")
    asyncio.run(app.ainvoke({"messages": [("user", "Sure?")]}, config))
    assert seen[-1].question == "Sure?"
    assert [m["role"] for m in seen[-1].messages] == ["user", "assistant"]
    assert fake.requests[-1].messages[0]["content"] == QUESTION


def test_a_trajectory_critic_in_the_plain_loop_says_it_has_no_trajectory() -> None:
    fake = ScriptedLLM(["<output>4</output>"])
    critic = TrajectoryCritic(lambda trajectory: True, name="tools")
    with pytest.raises(rk.CriticError, match="tools judges a trajectory"):
        rk.reflect("2+2?", model=fake.model, critic=critic, run_log=False)


def test_the_runnables_own_error_comes_through_unchanged() -> None:
    def broken(_: str) -> str:
        raise KeyError("no such city")

    app = rk.reflective(RunnableLambda(broken), critic=lambda q, a: True)
    with pytest.raises(KeyError, match="no such city"):
        app.invoke("Where?")


def test_a_critic_that_raises_fails_the_run_with_a_critic_error() -> None:
    def crashing(trajectory: Trajectory) -> bool:
        raise RuntimeError("boom")

    app = rk.reflective(RunnableLambda(lambda s: s), critic=crashing)
    with pytest.raises(rk.CriticError, match="boom"):
        app.invoke("hi")
    keep = rk.reflective(RunnableLambda(lambda s: s), critic=crashing, on_critic_error="keep_best")
    result = keep.reflect("hi")
    assert (result.output, result.stop_reason) == ("hi", rk.StopReason.CRITIC_ERROR)
    assert result.critic_error is not None
    assert "boom" in result.critic_error


@pytest.mark.parametrize(
    ("runnable", "settings", "message"),
    [
        (lambda s: s, {"critic": bool}, "needs a LangChain Runnable"),
        (RunnableLambda(lambda s: s), {}, "needs a critic"),
        (RunnableLambda(lambda s: s), {"critic": bool, "max_iterations": 0}, "at least 1"),
        (RunnableLambda(lambda s: s), {"critic": rk.LLMCritic()}, "critic_model"),
        (RunnableLambda(lambda s: s), {"critic": bool, "critic_model": 3}, "critic_model"),
    ],
)
def test_bad_settings_fail_at_once_in_one_line(
    runnable: Any, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(rk.ConfigurationError, match=message) as caught:
        rk.reflective(runnable, **settings)
    assert "\n" not in str(caught.value)


def test_an_input_it_cannot_revise_needs_revise_before_anything_runs() -> None:
    calls: list[Any] = []
    app = rk.reflective(RunnableLambda(calls.append), critic=lambda q, a: True)
    with pytest.raises(rk.ConfigurationError, match="revise="):
        app.invoke({"q": "hi"})
    assert calls == []
    asked = rk.reflective(
        RunnableLambda(lambda d: d["q"].upper()),
        critic=lambda q, a: a == "HI!" or "Add an exclamation mark.",
        revise=lambda first, output, verdict: {"q": first["q"] + "!"},
    )
    assert asked.invoke({"q": "hi"}) == "HI!"


async def test_a_reflective_agent_does_not_block_the_loop() -> None:
    fake = _wrong_then_right()
    critic = ScriptedLLM([verdict(False, "The tool said 42."), verdict(True)])
    app = rk.reflective(
        _agent(fake, InMemorySaver()),
        critic=[lambda t: bool(t.tool_uses), rk.LLMCritic(critic.model)],
    )
    with blockbuster_ctx():
        state = await app.ainvoke(
            {"messages": [("user", QUESTION)]}, {"configurable": {"thread_id": "t"}}
        )
    assert state["messages"][-1].content == "6 times 7 is 42."
