"""A LangGraph agent with a tool, judged on its whole run and revised once (offline).

Run it with ``python examples/reflective_agent.py``. The agent multiplies with a tool and
misreads the result; an LLM critic (a scripted fake here) sees the tool call, its arguments and
its result, and asks for a revision; the agent's second run sees its own tool call and the
critique, and answers right. A checkpointer keeps the thread, critique and revision included.
Swap ``FakeChatModel(...)`` for your chat model and the critic's fake for a model string
(``critic_model="gpt-4o-mini"``) to run it for real.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

import reflectkit as rk
from reflectkit.integrations.langchain import FakeChatModel
from reflectkit.testing import Reply, ScriptedLLM, tool_call


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


def build_agent(model: Any) -> Any:
    """The usual tool-calling agent: the model, then its tools, until it answers."""

    async def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([multiply]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=InMemorySaver())


async def main() -> None:
    agent_model = ScriptedLLM(
        [
            Reply(tool_calls=[tool_call("multiply", {"a": 17, "b": 23})]),
            "17 times 23 is 381.",  # the tool said 391
            "17 times 23 is 391.",
        ]
    )
    critic_model = ScriptedLLM(
        [
            '{"verdict": "revise", "score": 2, "feedback": "multiply returned 391, not 381."}',
            '{"verdict": "pass", "score": 10}',
        ]
    )
    graph = build_agent(FakeChatModel(agent_model).bind_tools([multiply]))
    app = rk.reflective(graph, critic_model=critic_model.model, max_iterations=3)

    config: RunnableConfig = {"configurable": {"thread_id": "maths-1"}}
    result = await app.areflect({"messages": [("user", "What is 17 times 23?")]}, config)

    print("What the critic was shown first (excerpt):")
    shown = critic_model.requests[0].last_user_text
    print("   " + shown[shown.index("<trajectory>") : shown.index("</trajectory>")].strip())
    print()
    for iteration in result.iterations:
        verdict = iteration.verdict
        calls = [c["function"]["name"] for c in iteration.draft.tool_calls]
        judged = "-" if verdict is None else ("pass" if verdict.passed else "revise")
        print(f"run {iteration.number}: {iteration.draft.output!r} tools={calls} -> {judged}")
        if verdict is not None and verdict.feedback:
            print(f"   feedback: {verdict.feedback}")
    print(f"answer: {result.output!r} ({result.stop_reason.value})")

    thread = graph.get_state(config).values["messages"]
    print(f"the thread keeps {len(thread)} messages: {[m.type for m in thread]}")
    assert result.output == "17 times 23 is 391."
    assert "multiply returned 391" in agent_model.requests[-1].last_user_text


if __name__ == "__main__":
    asyncio.run(main())
