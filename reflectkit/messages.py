"""The one place that builds the messages sent to models.

It takes what the user gave (a string or an OpenAI-style message list, or LangChain messages),
copies it, escapes the protocol's tags in every text that came from outside (user, system and
developer messages, earlier assistant turns, tool results, tool-call arguments) so none can
forge an answer, and lays out the generate, revise and critique prompts. Caller lists are never
mutated.

Tool use is kept intact: assistant turns with ``tool_calls`` and ``role: "tool"`` results go to
the model as they came (only their text and their calls' arguments escaped). A conversation may
end with tool results after the last user turn, as an agent's does after running the tools the
model called: the request is then still that user turn, and the model answers it with the
results in view.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reflectkit.content import message_text
from reflectkit.errors import InputError
from reflectkit.prompts import Prompts
from reflectkit.tags import TagScheme, escape_tags

__all__ = ["Conversation", "Message", "PromptBuilder", "message_text", "to_conversation"]

Message = dict[str, Any]

# Delimiters the built-in templates put around user text; escaped like the protocol's tags.
_TEMPLATE_TAGS = ("question", "answer", "feedback", "draft", "trajectory", "step", "tool_call")
_ROLES = {"system", "user", "assistant", "tool", "function", "developer"}
# What may follow the user's request turn: the model's tool calls and the tools' results.
_TOOL_EXCHANGE = {"assistant", "tool", "function"}
_TOOL_RESULTS = {"tool", "function"}


@dataclass(frozen=True)
class Conversation:
    """The user's messages, copied, and the question: the text of the last user turn.

    ``lessons`` are Reflexion's lessons from earlier attempts, shown with the request.
    ``request`` is the index of the last user turn; messages after it are a tool exchange
    (the model's tool calls and their results).
    """

    messages: tuple[Message, ...]
    question: str
    lessons: tuple[str, ...] = ()
    request: int = -1

    @property
    def _index(self) -> int:
        return self.request % len(self.messages)

    @property
    def history(self) -> list[Message]:
        """Every message before the last user turn (fresh copies)."""
        return [copy.deepcopy(m) for m in self.messages[: self._index]]

    @property
    def last(self) -> Message:
        """The last user turn (a fresh copy)."""
        return copy.deepcopy(self.messages[self._index])

    @property
    def tail(self) -> list[Message]:
        """The tool exchange after the last user turn, if any (fresh copies)."""
        return [copy.deepcopy(m) for m in self.messages[self._index + 1 :]]

    def tool_results(self) -> list[tuple[str, str]]:
        """The ``(tool name, result text)`` of each tool result after the last user turn, the
        name taken from the result's ``name`` or from the tool call it answers."""
        return _tool_results(self.tail)


def tool_results(messages: Sequence[Message]) -> list[tuple[str, str]]:
    """The ``(tool name, result text)`` of each tool result after the last user turn, the name
    taken from the result's ``name`` or from the tool call it answers."""
    return to_conversation(list(messages)).tool_results()


def _tool_results(tail: list[Message]) -> list[tuple[str, str]]:
    names: dict[str, str] = {}
    for message in tail:
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            names[str(call.get("id"))] = str(function.get("name") or "tool")
    return [
        (
            str(m.get("name") or names.get(str(m.get("tool_call_id")), "tool")),
            message_text(m.get("content")),
        )
        for m in tail
        if m.get("role") in _TOOL_RESULTS
    ]


def _as_dicts(prompt: str | Sequence[Any]) -> list[Message]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    items = list(prompt)
    if items and not all(isinstance(m, dict) for m in items):
        try:
            from langchain_core.messages import convert_to_openai_messages

            converted = convert_to_openai_messages(items)
        except Exception as error:  # LangChain raises several types for unusable input
            raise InputError(f"messages could not be read: {error}") from None
        items = converted if isinstance(converted, list) else [converted]
    return [copy.deepcopy(m) for m in items]


def to_conversation(prompt: str | Sequence[Any]) -> Conversation:
    """Validate and copy the user's input. Raises InputError for unusable input."""
    if not isinstance(prompt, (str, Sequence)):
        raise InputError(
            f"prompt must be a string or a list of messages, not {type(prompt).__name__}"
        )
    messages = _as_dicts(prompt)
    if not messages:
        raise InputError("the message list is empty")
    for index, message in enumerate(messages):
        role = message.get("role")
        if role not in _ROLES:
            raise InputError(f"message {index} has no valid role (got {role!r})")
        if "content" not in message and not message.get("tool_calls"):
            raise InputError(f"message {index} ({role}) has no content")
    request = _request_index(messages)
    question = message_text(messages[request].get("content"))
    if not question.strip():
        raise InputError("the prompt is empty")
    return Conversation(tuple(messages), question, request=request)


def _request_index(messages: list[Message]) -> int:
    """The index of the turn to answer: the last message, or the last user turn when only a tool
    exchange (tool calls, then their results) follows it."""
    if messages[-1]["role"] == "user":
        return len(messages) - 1
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    after = messages[users[-1] + 1 :] if users else []
    if (
        not users
        or messages[-1]["role"] not in _TOOL_RESULTS
        or any(m["role"] not in _TOOL_EXCHANGE for m in after)
    ):
        raise InputError(
            "the last message must be the user's turn to answer, or tool results after it"
        )
    return users[-1]


@dataclass(frozen=True)
class Layout:
    """How prompts are laid out for one generator model.

    ``tuned`` picks Reflection-70B's system prompt; ``exemplar`` shows a worked example as a
    demonstration exchange after the system prompt (``"turns"``) or inside it (``"system"``);
    ``prefill`` is opening text of the reply, sent as a final assistant message for providers
    that continue it (the reply then holds only the continuation).
    """

    tuned: bool = False
    exemplar: Literal["off", "turns", "system"] = "off"
    prefill: str | None = None


class PromptBuilder:
    """Lays out the messages of each step from the templates."""

    def __init__(
        self, prompts: Prompts, scheme: TagScheme, output_schema: str | None = None
    ) -> None:
        self.prompts = prompts
        self.scheme = scheme
        self.output_schema = output_schema
        """The JSON Schema a typed answer must match (``output_type``), shown with the request."""
        self._escape_names = (*scheme.names, *_TEMPLATE_TAGS)
        self._systems: dict[tuple[bool, str], str] = {}

    def escape(self, text: str) -> str:
        """Neutralise protocol and template tags in user-supplied or model-written text."""
        return escape_tags(text, self._escape_names)

    def _escaped_message(self, message: Message) -> Message:
        """``message``, a copy of the caller's, with every text in it that reached reflectkit
        from outside escaped: its content (a string or text parts) whatever its role (a
        caller's system message is untrusted text too: in the proxy it is a client's), and
        the arguments of its tool calls (a model wrote them from what a user or a tool said).
        The one place a conversation's text is escaped; it changes the copy in place."""
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = self.escape(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    part["text"] = self.escape(part["text"])
        calls = message.get("tool_calls")
        functions = [c.get("function") for c in calls if isinstance(c, dict)] if calls else []
        functions.append(message.get("function_call"))  # the legacy single call
        for function in functions:
            if isinstance(function, dict) and "arguments" in function:
                function["arguments"] = self._escaped_value(function["arguments"])
        return message

    def _escaped_value(self, value: Any) -> Any:
        """Tool-call arguments as they come: a JSON string (escaped, still JSON: ``&lt;`` needs
        no JSON escape), or, from some clients, already a dict (each string in it escaped)."""
        if isinstance(value, str):
            return self.escape(value)
        if isinstance(value, dict):
            return {key: self._escaped_value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._escaped_value(item) for item in value]
        return value

    def _request_turn(self, conversation: Conversation) -> Message:
        turn = conversation.last
        text = self.prompts.render(
            "generate",
            question=self.escape(conversation.question),
            lessons=[self.escape(lesson) for lesson in conversation.lessons],
            scheme=self.scheme,
        )
        if self.output_schema is not None:
            rule = self.prompts.render(
                "output_format", schema=self.output_schema, scheme=self.scheme
            )
            text = f"{text}\n\n{rule}"
        content = turn.get("content")
        if isinstance(content, list):  # keep images and other parts; replace the text parts
            others = [p for p in content if not (isinstance(p, dict) and p.get("type") == "text")]
            turn["content"] = [{"type": "text", "text": text}, *others]
        else:
            turn["content"] = text
        return turn

    def system(self, layout: Layout) -> str:
        """The system prompt for ``layout`` (rendered once per layout)."""
        key = (layout.tuned, layout.exemplar)
        text = self._systems.get(key)
        if text is None:
            if layout.tuned:
                text = self.prompts.render("tuned_system", scheme=self.scheme)
            elif layout.exemplar == "system":
                question, answer = self.exemplar()
                text = self.prompts.render(
                    "protocol_system",
                    scheme=self.scheme,
                    exemplar=answer,
                    exemplar_question=question,
                )
            else:
                text = self.prompts.render(
                    "protocol_system", scheme=self.scheme, exemplar=None, exemplar_question=None
                )
            self._systems[key] = text
        return text

    def exemplar(self) -> tuple[str, str]:
        """The worked example: its question and its reply in the scheme's tags."""
        return (
            self.prompts.render("exemplar_question", scheme=self.scheme),
            self.prompts.render("exemplar_answer", scheme=self.scheme),
        )

    @staticmethod
    def _with_prefill(messages: list[Message], prefill: str | None) -> list[Message]:
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
        return messages

    def preamble(self, layout: Layout) -> list[Message]:
        """The messages every protocol call for ``layout`` starts with: the system prompt and,
        for ``exemplar="turns"``, the worked example's exchange. The same for every question,
        so a model that caches prompt prefixes (the local model) can read it ahead of time."""
        messages: list[Message] = [{"role": "system", "content": self.system(layout)}]
        if layout.exemplar == "turns" and not layout.tuned:
            question, answer = self.exemplar()
            messages += [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        return messages

    def _conversation(self, conversation: Conversation, layout: Layout) -> list[Message]:
        messages = self.preamble(layout)
        messages += [self._escaped_message(m) for m in conversation.history]
        messages.append(self._request_turn(conversation))
        messages += [self._escaped_message(m) for m in conversation.tail]
        return messages

    def generate(self, conversation: Conversation, layout: Layout | None = None) -> list[Message]:
        """System prompt, the conversation so far, the request, and the prefill if any."""
        layout = layout or Layout()
        return self._with_prefill(self._conversation(conversation, layout), layout.prefill)

    def plain(self, conversation: Conversation) -> list[Message]:
        """The conversation as given, for native reasoning models: no protocol prompt."""
        history = [self._escaped_message(m) for m in conversation.history]
        tail = [self._escaped_message(m) for m in conversation.tail]
        return [*history, self._escaped_message(conversation.last), *tail]

    def _answer_turn(self, answer: str) -> Message:
        previous = self.escape(answer)
        if self.scheme.output is not None:
            previous = f"<{self.scheme.output}>\n{previous}\n</{self.scheme.output}>"
        return {"role": "assistant", "content": previous}

    def revise(
        self,
        conversation: Conversation,
        *,
        answer: str,
        feedback: str,
        issues: list[str],
        score: float | None,
        layout: Layout | None = None,
        plain: bool = False,
    ) -> list[Message]:
        """The conversation, the latest answer as the assistant's turn, then the critique.

        Only the latest draft and its critique are carried, so prompts grow linearly with the
        number of iterations, not with the whole history of drafts. ``plain``: the conversation
        without the protocol (see :meth:`plain`), for replies that cannot hold its tags.
        """
        layout = layout or Layout()
        request = self.prompts.render(
            "revise",
            question=self.escape(conversation.question),
            answer=self.escape(answer),
            feedback=self.escape(feedback),
            issues=[self.escape(i) for i in issues],
            score=score,
            scheme=self.scheme,
            tags=not plain,
        )
        if plain:
            answer_turn = {"role": "assistant", "content": self.escape(answer)}
            return [*self.plain(conversation), answer_turn, {"role": "user", "content": request}]
        messages = [
            *self._conversation(conversation, layout),
            self._answer_turn(answer),
            {"role": "user", "content": request},
        ]
        return self._with_prefill(messages, layout.prefill)

    def repair(
        self, conversation: Conversation, reply: str, layout: Layout, prefill: str | None
    ) -> list[Message]:
        """The conversation, the reply that lacked an answer, then a user turn asking for the
        answer alone (``prefill``, the opening output tag, where the provider continues it)."""
        messages = [
            *self._conversation(conversation, layout),
            {"role": "assistant", "content": self.escape(reply)},
            {"role": "user", "content": self.prompts.render("repair", scheme=self.scheme)},
        ]
        return self._with_prefill(messages, prefill)

    def continuation(
        self, request: list[Message], reply: str, open_tags: list[str]
    ) -> list[Message]:
        """``request`` (which ended in a prefill) with the reply so far as the prefill, its open
        blocks closed and the output block opened: the model is asked to go on writing."""
        assert self.scheme.output is not None
        closing = "".join(f"\n</{name}>" for name in reversed(open_tags))
        text = f"{reply.rstrip()}{closing}\n<{self.scheme.output}>\n"
        return [*request[:-1], {"role": "assistant", "content": text}]

    def lesson(self, question: str, answer: str, feedback: str) -> list[Message]:
        """The request for a Reflexion lesson after a failed trial."""
        text = self.prompts.render(
            "lesson",
            question=self.escape(question),
            answer=self.escape(answer),
            feedback=self.escape(feedback),
            scheme=self.scheme,
        )
        return [{"role": "user", "content": text}]

    def critique(
        self,
        question: str,
        answer: str,
        template: str | None = None,
        tool_results: Sequence[tuple[str, str]] = (),
        trajectory: Sequence[dict[str, Any]] = (),
    ) -> list[Message]:
        """The LLM critic's single user turn, from the ``critique`` template or the critic's own
        ``template`` text (same variables). ``tool_results`` are ``(tool name, result text)``
        pairs the answer was written from: without them a critic would judge facts it cannot
        see. ``trajectory`` is a wrapped agent's whole run (``Trajectory.steps()``)."""
        context = {
            "question": self.escape(question),
            "answer": self.escape(answer),
            "tool_results": [
                {"name": self.escape(name), "content": self.escape(content)}
                for name, content in tool_results
            ],
            "trajectory": [self._escaped_value(step) for step in trajectory],
            "scheme": self.scheme,
        }
        if template is None:
            text = self.prompts.render("critique", **context)
        else:
            text = self.prompts.render_source(template, **context)
        return [{"role": "user", "content": text}]
