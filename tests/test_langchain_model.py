"""ReflectiveChatModel: reflectkit as a LangChain chat model, in chains, agents and graphs.

Generators are reflectkit fakes (LiteLLM strings) or LangChain chat models served through
LiteLLM's custom-provider path; nothing leaves the process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import Field

import reflectkit as rk
from reflectkit.integrations.langchain import ReflectiveChatModel
from reflectkit.testing import FunctionLLM, Reply, Request, ScriptedLLM, tool_call
from tests.conftest import QUESTION, verdict


class RecordingChat(BaseChatModel):
    """A LangChain chat model that answers from a script, records what it was sent and which
    tools were bound, and reports token usage like a provider would."""

    replies: list[AIMessage]
    sent: list[list[BaseMessage]] = Field(default_factory=list)
    bound: list[list[dict[str, Any]]] = Field(default_factory=list)
    called_with: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake-recording"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, AIMessage]:
        self.bound.append(list(tools))
        return self.bind(**kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.sent.append(list(messages))
        self.called_with.append(dict(kwargs))
        reply = self.replies.pop(0)
        usage = {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12}
        message = reply.model_copy(update={"usage_metadata": usage})
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop, **kwargs)


def recording(*replies: str | AIMessage) -> RecordingChat:
    messages = [r if isinstance(r, AIMessage) else AIMessage(r) for r in replies]
    return RecordingChat(replies=messages)


WRONG_THEN_RIGHT = [
    "<thinking>12 - 5 = 6</thinking><output>3</output>",
    verdict(False, "12 - 5 is 7, not 6."),
    "<thinking>12 - 5 = 7, 7 - 3 = 4</thinking><output>4</output>",
    verdict(True),
]


def test_in_an_lcel_chain_the_answer_is_the_revised_one() -> None:
    fake = ScriptedLLM(WRONG_THEN_RIGHT)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a maths tutor."), ("user", "{question}")]
    )
    chain = prompt | ReflectiveChatModel(fake.model) | StrOutputParser()
    assert chain.invoke({"question": QUESTION}) == "4"
    assert len(fake.requests) == 4  # draft, critique, revision, critique
    assert "12 - 5 is 7, not 6." in fake.requests[2].last_user_text
    assert "You are a maths tutor." in fake.requests[0].system_text


async def test_a_wrapped_langchain_model_goes_through_the_real_loop() -> None:
    chat = recording(*WRONG_THEN_RIGHT)
    model = ReflectiveChatModel(chat, max_iterations=2)
    reply = await model.ainvoke([HumanMessage(QUESTION)])
    assert reply.content == "4"
    assert len(chat.sent) == 4
    assert "<output>" in str(chat.sent[0][0].content)  # the protocol's system prompt
    # Usage is what the wrapped model reported, for every call of the run.
    assert reply.usage_metadata == {"input_tokens": 40, "output_tokens": 8, "total_tokens": 48}
    meta = reply.response_metadata
    assert meta["reflectkit"]["stop_reason"] == "passed"
    assert meta["reflectkit"]["calls"] == 4
    assert meta["model_name"].startswith("langchain/RecordingChat-")


async def test_a_separate_critic_model_or_a_code_critic() -> None:
    generator = recording("<output>3</output>", "<output>4</output>")
    critic = recording(verdict(False, "Subtract again."), verdict(True))
    reply = await ReflectiveChatModel(generator, critic=critic).ainvoke(QUESTION)
    assert reply.content == "4"
    assert len(critic.sent) == 2
    assert len(generator.sent) == 2

    fake = ScriptedLLM(["<output>3</output>", "<output>4</output>"])
    code = ReflectiveChatModel(fake.model, critic=lambda q, a: a == "4" or "Not 4.")
    assert (await code.ainvoke(QUESTION)).content == "4"


async def test_the_whole_chat_is_the_context_and_the_last_turn_is_answered() -> None:
    fake = ScriptedLLM(["<output>Your name is Ada.</output>", verdict(True)])
    history = [
        ("system", "Be brief."),
        ("user", "My name is Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
    ]
    reply = await ReflectiveChatModel(fake.model).ainvoke(history)
    assert reply.content == "Your name is Ada."
    sent = fake.requests[0].messages
    assert [m["content"] for m in sent if m["role"] == "assistant"] == ["Nice to meet you, Ada."]
    assert "My name is Ada." in [m["content"] for m in sent if m["role"] == "user"]
    assert "What is my name?" in fake.requests[1].last_user_text  # the critic judges the last turn


def test_stream_yields_only_the_answer_and_batch_runs_each_prompt() -> None:
    fake = ScriptedLLM(WRONG_THEN_RIGHT, chunk_size=2)
    model = ReflectiveChatModel(fake.model)
    chunks = list(model.stream(QUESTION))
    assert "".join(str(c.content) for c in chunks) == "4"  # never the wrong draft "3"
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata["total_tokens"] > 0

    def answer(request: Request) -> str:
        if "verdict" in request.last_user_text:
            return verdict(True)
        return f"<output>{request.last_user_text.upper()}</output>"

    echo = ReflectiveChatModel(FunctionLLM(answer).model)
    assert [m.content for m in echo.batch(["a", "b", "c"])] == ["A", "B", "C"]


async def test_single_pass_answers_stream_while_they_are_written() -> None:
    fake = ScriptedLLM(["<thinking>hmm</thinking><output>The answer is four.</output>"])
    model = ReflectiveChatModel(fake.model, mode="single")
    chunks = [chunk async for chunk in model.astream("2+2?")]
    texts = [str(c.content) for c in chunks if c.content]
    assert len(texts) > 1
    assert "".join(texts) == "The answer is four."
    assert "hmm" not in "".join(texts)


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    WEATHER_CALLS.append(city)
    return f"21 C and sunny in {city}"


WEATHER_CALLS: list[str] = []


async def test_bind_tools_passes_tool_calls_through_unjudged() -> None:
    call = tool_call("get_weather", {"city": "Paris"}, id="call_paris")
    fake = ScriptedLLM([Reply(tool_calls=[call]), Reply(tool_calls=[call])], chunk_size=3)
    model = ReflectiveChatModel(fake.model).bind_tools([get_weather], tool_choice="any")
    reply = await model.ainvoke("Weather in Paris?")
    assert reply.tool_calls == [
        {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_paris", "type": "tool_call"}
    ]
    assert reply.response_metadata["reflectkit"]["stop_reason"] == "tool_calls"
    tools = fake.requests[0].params["tools"]
    assert [t["function"]["name"] for t in tools] == ["get_weather"]
    assert fake.requests[0].params["tool_choice"] == "required"
    # Streamed, the calls arrive whole in the closing chunk.
    merged: AIMessageChunk | None = None
    async for chunk in model.astream("Weather in Paris?"):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert merged.tool_calls == reply.tool_calls
    assert len(fake.requests) == 2  # no critique of either


def agent_graph(model: Runnable[Any, Any], checkpointer: Any = None) -> Any:
    """The classic tool-calling agent: the model, then tools while it calls them, then done."""

    async def call_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", call_model)
    graph.add_node("tools", ToolNode([get_weather]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer)


async def test_a_langgraph_agent_calls_the_tool_then_answers_with_reflection() -> None:
    WEATHER_CALLS.clear()
    asks = AIMessage(
        "", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}]
    )
    chat = recording(
        asks,
        "<output>It is 21 C in Paris.</output>",
        verdict(False, "Say that it is sunny too."),
        "<output>It is 21 C and sunny in Paris.</output>",
        verdict(True),
    )
    agent = agent_graph(ReflectiveChatModel(chat).bind_tools([get_weather]))
    state = await agent.ainvoke({"messages": [("user", "What is the weather in Paris?")]})
    assert WEATHER_CALLS == ["Paris"]  # the Python tool really ran
    assert [type(m).__name__ for m in state["messages"]] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    assert state["messages"][-1].content == "It is 21 C and sunny in Paris."
    # The inner model was offered the tool, and saw its result when it answered.
    assert chat.bound
    assert chat.bound[0][0]["function"]["name"] == "get_weather"
    answered_with = chat.sent[1]
    assert answered_with[-1].type == "tool"
    assert "21 C and sunny" in str(answered_with[-1].content)
    assert answered_with[-2].tool_calls[0]["id"] == "call_1"


async def test_inside_a_graph_the_messages_stream_carries_only_the_answer() -> None:
    chat = recording(
        "<thinking>12 - 5 = 6</thinking><output>DRAFT-3</output>",
        verdict(False, "12 - 5 is 7."),
        "<output>4</output>",
        verdict(True),
    )
    saver = InMemorySaver()
    graph = agent_graph(ReflectiveChatModel(chat), saver)
    config: RunnableConfig = {"configurable": {"thread_id": "t1"}}
    streamed: list[str] = []
    # subgraphs=True: even streams of nested graphs do not see the reflection's inner run.
    async for namespace, (message, metadata) in graph.astream(
        {"messages": [("user", QUESTION)]}, config, stream_mode="messages", subgraphs=True
    ):
        assert namespace == ()
        assert metadata["langgraph_node"] == "agent"
        streamed.append(str(message.content))
    assert "".join(streamed) == "4"
    assert len(chat.sent) == 4  # the drafts and critiques happened, out of the stream
    # Nor does the outer graph's checkpointer hold the reflection's steps.
    namespaces = {c.config["configurable"]["checkpoint_ns"] for c in saver.list(None)}
    assert namespaces == {""}


def test_calls_to_a_hosted_langchain_model_are_blocked_in_tests() -> None:
    hosted = ChatOpenAI(model="gpt-4o-mini", api_key="sk-test")
    with pytest.raises(rk.ModelRequestsBlockedError, match="langchain/ChatOpenAI"):
        ReflectiveChatModel(hosted).invoke("hi")


async def test_a_failing_wrapped_model_fails_the_run_with_a_provider_error() -> None:
    class Unauthorised(Exception):
        status_code = 401

    class Broken(RecordingChat):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            raise Unauthorised("bad key")

    model = ReflectiveChatModel(Broken(replies=[]))
    with pytest.raises(rk.ProviderAuthError, match="bad key"):
        await model.ainvoke("hi")


async def test_areflect_gives_the_whole_result() -> None:
    fake = ScriptedLLM(WRONG_THEN_RIGHT)
    result = await ReflectiveChatModel(fake.model).areflect(QUESTION)
    assert isinstance(result, rk.ReflectionResult)
    assert [i.draft.output for i in result.iterations] == ["3", "4"]


def test_settings_are_checked_when_the_model_is_made() -> None:
    with pytest.raises(rk.ConfigurationError, match="max_iteration"):
        ReflectiveChatModel("gpt-4o-mini", max_iteration=2)
    with pytest.raises(rk.ConfigurationError, match="LangChain chat model"):
        ReflectiveChatModel(42)
    model = ReflectiveChatModel("gpt-4o-mini", temperature=0, token_budget=500)
    assert model.settings == {"temperature": 0, "token_budget": 500}


def test_concurrent_runs_keep_their_own_answers() -> None:
    def answer(request: Request) -> str:
        if "verdict" in request.last_user_text:
            return verdict(True)
        return "<output>" + json.dumps(request.last_user_text) + "</output>"

    model = ReflectiveChatModel(FunctionLLM(answer, chunk_delay=0.001).model)

    async def many() -> list[str]:
        replies = await asyncio.gather(*(model.ainvoke(f"q{i}") for i in range(8)))
        return [str(r.content) for r in replies]

    assert asyncio.run(many()) == [json.dumps(f"q{i}") for i in range(8)]


def test_sampling_settings_reach_the_wrapped_model() -> None:
    chat = recording("<output>4</output>")
    model = ReflectiveChatModel(chat, mode="single", temperature=0, max_tokens=64)
    assert model.invoke(QUESTION).content == "4"
    assert chat.called_with[0]["temperature"] == 0
    assert chat.called_with[0]["max_tokens"] == 64
