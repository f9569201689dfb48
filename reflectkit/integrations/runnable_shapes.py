"""How :func:`reflectkit.reflective` reads a runnable's runs and asks it again, by input shape.

A runnable is revised in the shape it was first called with, so the wrapper stays a drop-in:

- **graph state** (a dict with ``"messages"``, as a LangGraph agent takes): the next run gets the
  messages the last run ended with plus a user turn carrying the critique, so the agent sees its
  own tool calls. When the graph keeps the thread itself (a checkpointer and a ``thread_id`` in
  the config), only the critique turn is sent: the graph appends it to the history it holds.
- **messages** (a list of messages or a prompt value, as a chat model takes): the list, the
  answer as the assistant's turn, the critique as a user turn.
- **text** (a ``str``): one text that restates the request, the answer and the critique.
- anything else needs ``revise=``: a function ``(input, output, verdict) -> next input``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    convert_to_messages,
    convert_to_openai_messages,
)
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig

from reflectkit.content import message_text
from reflectkit.errors import ConfigurationError
from reflectkit.usage import Usage
from reflectkit.verdict import Verdict

__all__ = ["Attempt", "Revise", "Shape", "keeps_thread", "shape_of"]

Revise = Callable[[Any, Any, Verdict], Any]
"""A caller's own way to ask again: ``(input, output, verdict) -> the next input``."""
Message = dict[str, Any]


def keeps_thread(runnable: Runnable[Any, Any], config: RunnableConfig) -> bool:
    """Whether ``runnable`` is a LangGraph graph that keeps this run's thread itself: it has a
    checkpointer and the config names a ``thread_id``."""
    while isinstance(runnable, RunnableBinding):
        runnable = runnable.bound
    checkpointer = getattr(runnable, "checkpointer", None)
    thread = (config.get("configurable") or {}).get("thread_id")
    return checkpointer not in (None, False) and thread is not None


def _with_ids(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """Copies of ``messages`` with an id each (LangGraph keeps ids), to find them in the output."""
    return [m if m.id else m.model_copy(update={"id": str(uuid.uuid4())}) for m in messages]


def _as_messages(value: Any) -> list[BaseMessage]:
    """A messages input (a list of anything LangChain reads as messages, or a prompt value) as
    messages; anything else as none."""
    if isinstance(value, PromptValue):
        return value.to_messages()
    return convert_to_messages(value) if isinstance(value, list) else []


def _question(messages: Sequence[BaseMessage]) -> str:
    humans = [m for m in messages if m.type == "human"]
    return message_text(humans[-1].content) if humans else ""


def _answer(output: Any) -> str:
    """The answer's text in what a runnable returned: its last message, a str, an ``output``."""
    if isinstance(output, Mapping):
        messages = output.get("messages")
        if isinstance(messages, Sequence) and messages and isinstance(messages[-1], BaseMessage):
            return message_text(messages[-1].content)
        if isinstance(output.get("output"), str):
            return str(output["output"])
    if isinstance(output, BaseMessage):
        return message_text(output.content)
    if isinstance(output, str):
        return output
    return _text(output)


def _text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:  # a circular structure
        return repr(value)


def _usage(messages: Sequence[BaseMessage]) -> Usage:
    """What the assistant turns say they cost (models that report no usage count zero tokens)."""
    usage = Usage()
    for message in messages:
        if isinstance(message, AIMessage):
            meta = message.usage_metadata
            usage = usage + Usage(
                prompt_tokens=meta["input_tokens"] if meta else 0,
                completion_tokens=meta["output_tokens"] if meta else 0,
                calls=1,
                unpriced_calls=1,
            )
    return usage


def _openai(messages: Sequence[BaseMessage]) -> list[Message]:
    return list(convert_to_openai_messages(list(messages))) if messages else []


@dataclass(frozen=True)
class Attempt:
    """One run read back: the whole turn so far (for the critic), what this run added (its
    tool calls and usage), and the answer."""

    turn: list[Message]
    context: list[Message]
    new: list[BaseMessage]
    answer: str

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls this run made, in OpenAI's format."""
        return [call for m in _openai(self.new) for call in m.get("tool_calls") or []]

    @property
    def usage(self) -> Usage:
        return _usage(self.new)


@dataclass
class Shape:
    """The first input's shape and what the wrapper learnt from it: the request's text and the
    input of the run in progress. :meth:`attempt` reads a run; :meth:`next_input` asks again."""

    kind: str
    first: Any
    question: str
    keeps_thread: bool = False
    revise: Revise | None = None
    current: Any = None
    _first_ids: list[str] = field(default_factory=list)

    def attempt(self, output: Any) -> Attempt:
        """Read the run that turned ``self.current`` into ``output``."""
        answer = _answer(output)
        if self.kind == "state" and isinstance(output, Mapping):
            messages = list(output.get("messages") or [])
            ids = [m.id for m in messages]
            start = ids.index(self._first_ids[0]) if self._first_ids[0] in ids else 0
            given = self.current.get("messages") if isinstance(self.current, Mapping) else None
            sent = [getattr(m, "id", None) for m in given or []]
            last = max((ids.index(i) for i in sent if i in ids), default=len(ids) - 2)
            turn = _openai(messages[start:])
            return Attempt(turn, _openai(messages[:start]), messages[last + 1 :], answer)
        if self.kind == "messages":
            new: list[BaseMessage] = [
                output if isinstance(output, BaseMessage) else AIMessage(answer)
            ]
            return Attempt(_openai([*_as_messages(self.current), *new]), [], new, answer)
        request = self.question if self.kind == "text" else _text(self.first)
        turn = [{"role": "user", "content": request}, {"role": "assistant", "content": answer}]
        return Attempt(turn, [], [], answer)

    def next_input(self, output: Any, verdict: Verdict, critique: str) -> Any:
        """The input of the next run: the critique, in the shape of the first input."""
        if self.revise is not None:
            self.current = self.revise(self.first, output, verdict)
        elif self.kind == "state":
            ask = HumanMessage(critique, id=str(uuid.uuid4()))
            ended = list(output.get("messages") or []) if isinstance(output, Mapping) else []
            messages = [ask] if self.keeps_thread else [*ended, ask]
            base = {} if self.keeps_thread else dict(self.current)
            self.current = {**base, "messages": messages}
        elif self.kind == "messages":
            answer = output if isinstance(output, BaseMessage) else AIMessage(_answer(output))
            self.current = [*_as_messages(self.current), answer, HumanMessage(critique)]
        else:
            self.current = critique
        return self.current


def shape_of(
    value: Any, runnable: Runnable[Any, Any], config: RunnableConfig, revise: Revise | None
) -> Shape:
    """The shape of a first input (the input to pass on is ``shape.current``). An input the
    wrapper cannot revise by itself and no ``revise`` is a ConfigurationError, raised before the
    runnable runs."""
    if isinstance(value, Mapping) and "messages" in value:
        messages = _with_ids(convert_to_messages(value["messages"]))
        shape = Shape("state", value, _question(messages), keeps_thread(runnable, config), revise)
        shape.current = {**value, "messages": messages}
        shape._first_ids = [m.id for m in messages if m.id] or [""]
        return shape
    if isinstance(value, PromptValue) or (isinstance(value, list) and value):
        converted = _as_messages(value)
        return Shape("messages", value, _question(converted), revise=revise, current=value)
    if isinstance(value, str):
        return Shape("text", value, value, revise=revise, current=value)
    if revise is None:
        raise ConfigurationError(
            f"reflective() cannot ask again with a {type(value).__name__} input by itself: "
            "pass revise=lambda input, output, verdict: <the next input>"
        )
    return Shape("other", value, _text(value), revise=revise, current=value)
