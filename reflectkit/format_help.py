"""Format help: getting a usable answer block out of models that do not keep to the tags.

Small untuned models ignore formats. Three aids, each decided per model from its capabilities
and switchable through :class:`~reflectkit.config.FormatHelp`:

1. an **exemplar** in the protocol's system prompt (models marked ``needs_format_help``);
2. a **prefill**: the reply is started with the opening thinking tag as an assistant message,
   for providers that continue one (``prefill`` capability);
3. a **repair** call when a reply has no usable answer block: the model is shown its reply and
   asked for the final answer alone, inside the output tag (prefilled where possible), with a
   small token budget. One repair per draft, at most. If the repair gives nothing usable either,
   the draft keeps the answer the parser found in the original reply, so help never replaces an
   answer with nothing.

The result records what happened: each :class:`~reflectkit.result.Draft` keeps the parse status
of the reply as written, whether it was repaired, and the repair's raw reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reflectkit.capabilities import ModelProfile
from reflectkit.config import ReflectConfig
from reflectkit.llm import Completion, ModelClient
from reflectkit.messages import Conversation, Layout, Message, PromptBuilder
from reflectkit.result import Draft
from reflectkit.tags import THINK_TAGS, ParseStatus, TagScheme, parse
from reflectkit.usage import Usage

__all__ = ["DraftWriter", "FormatPlan", "plan_format_help", "usable"]


@dataclass(frozen=True)
class FormatPlan:
    """The format help one run gives its generator."""

    layout: Layout
    repair: bool
    repair_prefill: str | None
    repair_max_tokens: int


def plan_format_help(config: ReflectConfig, profile: ModelProfile) -> FormatPlan:
    """Decide exemplar, prefill and repair for a model that gets the protocol's prompt."""
    help_ = config.resolved_format_help
    scheme = config.scheme
    exemplar = help_.exemplar
    if exemplar is None:
        exemplar = profile.needs_format_help and not profile.tuned
    can_prefill = profile.prefill if help_.prefill is None else help_.prefill
    repair = help_.repair and scheme.output is not None
    return FormatPlan(
        layout=Layout(
            tuned=profile.tuned,
            exemplar=exemplar,
            prefill=f"<{scheme.thinking}>\n" if can_prefill else None,
        ),
        repair=repair,
        repair_prefill=f"<{scheme.output}>" if can_prefill and repair else None,
        repair_max_tokens=help_.repair_max_tokens,
    )


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
        return _draft(self.scheme, (prefill or "") + completion.text, completion.reasoning)

    async def write(
        self, messages: list[Message], conversation: Conversation
    ) -> tuple[Draft, Usage]:
        """Call the model on ``messages`` and return the draft and what it cost."""
        prefill = self.plan.layout.prefill if self.plan else None
        completion = await self.client.complete(messages)
        draft = self.parse(completion, prefill)
        if self.plan is None or not self.plan.repair or usable(draft):
            return draft, completion.usage
        repaired, spent = await self._repair(draft, conversation, self.plan)
        return repaired, completion.usage + spent

    async def _repair(
        self, draft: Draft, conversation: Conversation, plan: FormatPlan
    ) -> tuple[Draft, Usage]:
        messages = self.builder.repair(conversation, draft.text, plan.layout, plan.repair_prefill)
        overrides: dict[str, Any] = {"max_tokens": plan.repair_max_tokens}
        if plan.repair_prefill and self.scheme.output:
            overrides["stop"] = [f"</{self.scheme.output}>"]
        completion = await self.client.complete(messages, overrides)
        text = (plan.repair_prefill or "") + completion.text
        if plan.repair_prefill and self.scheme.output and f"</{self.scheme.output}" not in text:
            text += f"</{self.scheme.output}>"  # the stop sequence ate the closing tag
        fixed = parse(text, self.scheme)
        if fixed.status in (ParseStatus.COMPLETE, ParseStatus.UNCLOSED) and fixed.output.strip():
            draft = draft.model_copy(
                update={"output": fixed.output, "repaired": True, "repair_text": completion.text}
            )
        else:
            draft = draft.model_copy(update={"repair_text": completion.text})
        return draft, completion.usage
