"""Drafting: every draft the generator writes is made here, with format help, which gets a
usable answer block out of models that do not keep to the tags (this module was ``format_help``).

Small untuned models ignore formats. Four aids, each decided per model from its capabilities
and switchable through :class:`~reflectkit.config.FormatHelp`:

1. an **exemplar**: a worked example, as a demonstration exchange after the system prompt or
   inside it (models marked ``needs_format_help``);
2. a **prefill**: the reply is started with the opening thinking tag as an assistant message,
   for providers that continue one (``prefill`` capability);
3. a **repair** call when a reply has no usable answer block, with a small token budget. Where
   the provider continues prefixes, the model's own reply is sent back as the prefix with its
   open blocks closed and the output tag opened, and the model writes on (it answers right
   after its own reasoning). Elsewhere a short user turn asks for the final answer alone inside
   the output tag. One repair per draft, at most. If the repair gives nothing usable either, the
   draft keeps the answer the parser found in the original reply, so help never replaces an
   answer with nothing;
4. a **grammar**: where the provider constrains decoding (``grammar`` capability: the local
   model), the generator's calls carry a GBNF grammar of the scheme's tags
   (:func:`~reflectkit.models.local.grammar.tag_grammar`), starting after the prefill, with the
   thinking bounded in characters. The reply is then written in the tags and the repair is rarely
   needed; repair calls carry no grammar (they continue a different prefix).

When the generator is offered tools (``tools=`` among its model kwargs) the protocol's system
prompt and the exemplar still apply: they shape the answer turn, and a model calls tools through
the API's own tool-call field, not through the text. The prefill is dropped, since an assistant
message that opens the reply forces a text continuation and keeps most providers from calling a
tool. A reply that calls tools is never repaired: it is not meant to have an answer block, and
no grammar is sent, since one would force a text reply too.

The result records what happened: each :class:`~reflectkit.result.Draft` keeps the parse status
of the reply as written, whether it was repaired, and the repair's raw reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reflectkit.config import ReflectConfig
from reflectkit.messages import Conversation, Layout, Message, PromptBuilder
from reflectkit.models.capabilities import ModelProfile, profile_for
from reflectkit.models.llm import Completion, ModelClient
from reflectkit.models.local.grammar import tag_grammar
from reflectkit.prompts import Prompts
from reflectkit.result import Draft
from reflectkit.tags import (
    PARSE_IN_THREAD_CHARS,
    THINK_TAGS,
    OutputDelta,
    OutputReset,
    ParseStatus,
    StreamParser,
    TagDelta,
    TagScheme,
    ThinkingDelta,
    aparse,
    parse,
)
from reflectkit.usage import Usage

__all__ = [
    "DeltaSink",
    "DraftWriter",
    "FormatPlan",
    "ReplyStream",
    "generator_preamble",
    "plan_format_help",
    "usable",
]

DeltaSink = Callable[[TagDelta], None]
"""Receives the tag deltas of a streamed reply."""


@dataclass(frozen=True)
class FormatPlan:
    """The format help one run gives its generator."""

    layout: Layout
    repair: bool
    repair_prefill: str | None
    repair_max_tokens: int
    grammar: str | None = None
    """A GBNF grammar the generator's calls carry (not the repair's)."""


def plan_format_help(config: ReflectConfig, profile: ModelProfile) -> FormatPlan:
    """Decide exemplar, prefill, repair and grammar for a model that gets the protocol's
    prompt."""
    help_ = config.resolved_format_help
    scheme = config.scheme
    wants_exemplar = help_.exemplar
    if wants_exemplar is None:
        wants_exemplar = profile.needs_format_help and not profile.tuned
    can_prefill = profile.prefill if help_.prefill is None else help_.prefill
    wants_grammar = profile.grammar if help_.grammar is None else help_.grammar
    if config.model_kwargs.get("tools"):
        can_prefill = False  # a prefill forces a text reply: no tool could be called
        wants_grammar = False  # and so does a grammar
    if "grammar" in config.model_kwargs:
        wants_grammar = False  # the caller's own grammar goes as it is
    repair = help_.repair and scheme.output is not None
    grammar = None
    if wants_grammar:
        grammar = tag_grammar(
            scheme, prefilled=can_prefill, max_thinking_chars=help_.max_thinking_chars
        )
    return FormatPlan(
        layout=Layout(
            tuned=profile.tuned,
            exemplar=help_.exemplar_in if wants_exemplar else "off",
            prefill=f"<{scheme.thinking}>\n" if can_prefill else None,
        ),
        repair=repair,
        repair_prefill=f"<{scheme.output}>" if can_prefill and repair else None,
        repair_max_tokens=help_.repair_max_tokens,
        grammar=grammar,
    )


def generator_preamble(config: ReflectConfig, prompts: Prompts | None = None) -> list[Message]:
    """The messages the generator's calls for ``config`` start with, whatever the question
    (see :meth:`PromptBuilder.preamble`); the CLI hands them to the local model's worker to read
    while the rest of the library imports. Empty for a reasoning model, which a single pass
    asks without the protocol (the preamble is a hint: leaving it out only costs speed)."""
    profile = profile_for(config.resolved_model)
    if profile.reasoning and not profile.tuned:
        return []
    builder = PromptBuilder(prompts or Prompts(config.template_dir), config.scheme)
    return builder.preamble(plan_format_help(config, profile).layout)


def usable(draft: Draft) -> bool:
    """Whether the reply gave its answer in an output block (closed, or cut off but non-empty)."""
    return draft.parse_status in (ParseStatus.COMPLETE, ParseStatus.UNCLOSED) and bool(
        draft.output.strip()
    )


def _draft(scheme: TagScheme, text: str, reasoning: str | None) -> Draft:
    """Parse a reply; ``<think>`` blocks and provider reasoning count as thinking."""
    notes = [reasoning] if reasoning else []
    body = text
    if THINK_TAGS.thinking in text.casefold() and scheme.thinking.casefold() != "think":
        split = parse(text, THINK_TAGS)
        if split.thinking:
            notes += split.thinking
            body = split.output
    joined = "\n\n".join(n.strip() for n in notes if n.strip()) or None
    return Draft.from_parsed(text, parse(body, scheme), joined)


class ReplyStream:
    """Parses a streamed reply the way :func:`_draft` parses it whole: ``<think>`` blocks (as
    DeepSeek-R1 and Qwen stream them; LiteLLM splits them only from whole replies) become
    thinking, and the rest goes through the scheme's parser, which starts at ``prefix``."""

    def __init__(self, scheme: TagScheme, prefix: str = "") -> None:
        self.tags = StreamParser(scheme)
        self.tags.feed(prefix)
        separate_think = scheme.thinking.casefold() != THINK_TAGS.thinking
        self.think = StreamParser(THINK_TAGS) if separate_think else None

    def _route(self, deltas: list[TagDelta]) -> list[TagDelta]:
        routed: list[TagDelta] = []
        for delta in deltas:
            if isinstance(delta, ThinkingDelta):
                routed.append(delta)
            else:
                routed += self.tags.feed(delta.text)
        return routed

    def feed(self, text: str) -> list[TagDelta]:
        """The deltas ``text`` makes certain."""
        if not text:
            return []
        if self.think is None:
            return self.tags.feed(text)
        return self._route(self.think.feed(text))

    def close(self) -> list[TagDelta]:
        """The deltas held back until the end of the reply."""
        routed = self._route(self.think.close()) if self.think is not None else []
        return routed + self.tags.close()


class _ShownAnswer:
    """Passes a draft's deltas on and keeps what the consumer was shown of the answer, so that
    the stream ends on the draft's answer whatever came between (a repair, a withdrawn answer).

    With ``hold_provisional`` (a repair may follow), outside text that the parser streams as a
    provisional answer is not passed on: a reply without an output block gets repaired, and its
    answer is known only then."""

    def __init__(self, sink: DeltaSink, hold_provisional: bool) -> None:
        self.sink = sink
        self.hold_provisional = hold_provisional
        self.shown: list[str] = []

    def __call__(self, delta: TagDelta) -> None:
        if isinstance(delta, OutputReset):
            if not self.shown:
                return  # what it withdraws was held back
            delta = OutputReset(withdrawn="".join(self.shown))
            self.shown = []
        elif isinstance(delta, OutputDelta):
            if delta.provisional and self.hold_provisional:
                return
            self.shown.append(delta.text)
        self.sink(delta)

    def settle(self, answer: str) -> None:
        """End on ``answer``: withdraw what was shown if it differs, and send the rest."""
        shown = "".join(self.shown)
        if shown == answer:
            return
        if answer.startswith(shown):
            self.sink(OutputDelta(answer[len(shown) :]))
        else:
            self.sink(OutputReset(withdrawn=shown))
            if answer:
                self.sink(OutputDelta(answer))
        self.shown = [answer]


class DraftWriter:
    """Makes one draft: the call, the prefill put back in front, parsing, and repair."""

    def __init__(
        self, client: ModelClient, builder: PromptBuilder, plan: FormatPlan | None
    ) -> None:
        self.client = client
        self.builder = builder
        self.plan = plan
        self.scheme = builder.scheme

    def parse(self, completion: Completion, prefill: str | None = None) -> Draft:
        """The draft of one completion whose request ended with ``prefill``."""
        draft = _draft(self.scheme, (prefill or "") + completion.text, completion.reasoning)
        if completion.tool_calls:
            draft = draft.model_copy(update={"tool_calls": list(completion.tool_calls)})
        return draft

    async def _call(
        self,
        messages: list[Message],
        overrides: dict[str, Any] | None,
        prefix: str,
        on_delta: DeltaSink | None,
    ) -> Completion:
        """One call; with ``on_delta``, streamed through a tag parser that starts at ``prefix``."""
        if on_delta is None:
            return await self.client.complete(messages, overrides)
        parser = ReplyStream(self.scheme, prefix)
        completion: Completion | None = None
        async for piece in self.client.stream(messages, overrides):
            if isinstance(piece, Completion):
                completion = piece
                continue
            if piece.reasoning:
                on_delta(ThinkingDelta(piece.reasoning))
            if len(piece.text) > PARSE_IN_THREAD_CHARS:  # one huge piece: off the event loop
                deltas = await asyncio.to_thread(parser.feed, piece.text)
            else:
                deltas = parser.feed(piece.text)
            for delta in deltas:
                on_delta(delta)
        for delta in parser.close():
            on_delta(delta)
        assert completion is not None  # a stream always ends with its Completion
        return completion

    async def write(
        self,
        messages: list[Message],
        conversation: Conversation,
        on_delta: DeltaSink | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> tuple[Draft, Usage]:
        """Call the model on ``messages`` and return the draft and what it cost.

        With ``on_delta`` the reply is streamed and every tag delta (of the reply, then of the
        repair if one is made) is handed to it as soon as it is certain; the output deltas after
        the last :class:`~reflectkit.tags.OutputReset` join to the draft's answer. ``overrides``
        replace call parameters for this draft (not for its repair). A long reply (over
        :data:`~reflectkit.tags.PARSE_IN_THREAD_CHARS`) is parsed in a worker thread.
        """
        prefill = self.plan.layout.prefill if self.plan else None
        if self.plan is not None and self.plan.grammar is not None:
            overrides = {"grammar": self.plan.grammar, **(overrides or {})}
        shown = None
        if on_delta is not None:
            repairs = self.plan is not None and self.plan.repair
            on_delta = shown = _ShownAnswer(on_delta, hold_provisional=repairs)
        completion = await self._call(messages, overrides or None, prefill or "", on_delta)
        if len(completion.text) > PARSE_IN_THREAD_CHARS:
            draft = await asyncio.to_thread(self.parse, completion, prefill)
        else:
            draft = self.parse(completion, prefill)
        spent = completion.usage
        plan = self.plan
        if plan is not None and plan.repair and not usable(draft) and not draft.tool_calls:
            draft, repair_spent = await self._repair(draft, messages, conversation, plan, on_delta)
            spent = spent + repair_spent
        if shown is not None:
            shown.settle(draft.output)
        return draft, spent

    async def _repair(
        self,
        draft: Draft,
        request: list[Message],
        conversation: Conversation,
        plan: FormatPlan,
        on_delta: DeltaSink | None,
    ) -> tuple[Draft, Usage]:
        output = self.scheme.output
        assert output is not None  # the plan repairs only schemes with an output tag
        overrides: dict[str, Any] = {"max_tokens": plan.repair_max_tokens}
        continued = plan.layout.prefill is not None and request[-1].get("role") == "assistant"
        if continued:
            parser = StreamParser(self.scheme)
            if len(draft.text) > PARSE_IN_THREAD_CHARS:
                await asyncio.to_thread(parser.feed, draft.text)
            else:
                parser.feed(draft.text)
            parser.close()  # the blocks still open at the end, as parsing the draft saw them
            messages = self.builder.continuation(request, draft.text, parser.open_tags)
            prefix = f"<{output}>"
            overrides["stop"] = [f"</{output}>"]
        else:
            messages = self.builder.repair(
                conversation, draft.text, plan.layout, plan.repair_prefill
            )
            prefix = plan.repair_prefill or ""
            if prefix:
                overrides["stop"] = [f"</{output}>"]
        completion = await self._call(messages, overrides, prefix, on_delta)
        text = prefix + completion.text
        if prefix and f"</{output}" not in text:
            text += f"</{output}>"  # the stop sequence ate the closing tag
        fixed = await aparse(text, self.scheme)
        update: dict[str, Any] = {"repair_text": completion.text}
        if fixed.status in (ParseStatus.COMPLETE, ParseStatus.UNCLOSED) and fixed.output.strip():
            update |= {"output": fixed.output, "repaired": True}
        return draft.model_copy(update=update), completion.usage
