"""What a wrapped runnable or agent did in one run, as its critic sees it.

:func:`reflectkit.reflective` wraps a LangChain Runnable or a LangGraph graph (an agent that calls
tools, say) and judges each of its runs whole: the request, every assistant turn with the tools
it called and their arguments, every tool result, and the answer. A :class:`Trajectory` is that
run in OpenAI's message format, whatever framework produced it, so critics need to know nothing
about LangChain; it reaches them as ``CritiqueRequest.trajectory``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from reflectkit.content import message_text

__all__ = ["ToolUse", "Trajectory"]

Message = dict[str, Any]


@dataclass(frozen=True)
class ToolUse:
    """One tool call of a run and what the tool gave back."""

    name: str
    """The tool's name."""
    arguments: Any
    """The arguments as the model wrote them: a dict when they were JSON, else the raw text."""
    result: str | None
    """The tool's result text; None when no result came back for the call."""
    id: str | None = None
    """The call's id, which its result refers to; None when the model gave none."""


@dataclass(frozen=True)
class Trajectory:
    """A run of a wrapped runnable (see :func:`reflectkit.reflective`): what a trajectory critic
    is given, and what the LLM critic's template shows.
    """

    messages: list[Message]
    """The messages from the request to the answer, as OpenAI-format dicts (assistant turns with
    ``tool_calls``, ``role: "tool"`` results). On a revision they include the earlier attempts
    and the critique turns that asked for it, since the runnable saw them too."""
    question: str
    """The request's text: the last user turn the caller sent, not a critique."""
    answer: str
    """The final answer's text."""
    input: Any = None
    """What the runnable was given on this run, untouched."""
    output: Any = None
    """What the runnable returned on this run, untouched."""
    iteration: int = 1
    """The attempt, 1-based: 1 for the first run, 2 for the first revision, ..."""
    tool_uses: list[ToolUse] = field(init=False)
    """Every tool call in the messages, in order, each with its result."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_uses", _tool_uses(self.messages))

    def steps(self) -> list[dict[str, Any]]:
        """The messages as the critique template shows them: ``role``, ``content`` (text),
        ``name`` (a tool result's tool), ``tool_calls`` (``name`` and ``arguments`` as text)."""
        names = {use.id: use.name for use in self.tool_uses if use.id}
        steps = []
        for message in self.messages:
            role = str(message.get("role") or "user")
            call_id = message.get("tool_call_id")
            name = message.get("name") or (names.get(str(call_id)) if call_id else None)
            calls = [
                {"name": str(f.get("name") or "tool"), "arguments": _text(f.get("arguments"))}
                for f in (c.get("function") or {} for c in message.get("tool_calls") or [])
            ]
            content = message_text(message.get("content"))
            steps.append(
                {"role": role, "content": content, "name": name or "", "tool_calls": calls}
            )
        return steps

    def __str__(self) -> str:
        lines = []
        for step in self.steps():
            label = f"{step['role']} {step['name']}".strip()
            if step["content"]:
                lines.append(f"{label}: {step['content']}")
            lines += [f"{label} calls {c['name']}({c['arguments']})" for c in step["tool_calls"]]
        return "\n".join(lines)


def _text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def _arguments(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _tool_uses(messages: list[Message]) -> list[ToolUse]:
    results = {
        str(m.get("tool_call_id")): message_text(m.get("content"))
        for m in messages
        if m.get("role") == "tool"
    }
    uses = []
    for message in messages:
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            call_id = call.get("id")
            uses.append(
                ToolUse(
                    name=str(function.get("name") or "tool"),
                    arguments=_arguments(function.get("arguments")),
                    result=results.get(str(call_id)) if call_id else None,
                    id=str(call_id) if call_id else None,
                )
            )
    return uses
