"""One record through the oracle: the two reflections of Reflection-Tuning data recycling.

**Instruction reflection**: the oracle analyses the instruction (topic complexity, detail
required, knowledge required, ambiguity, reasoning required) and writes a new instruction, input
and response (``reflectkit/templates/recycle_instruction.j2``). **Response reflection**: it
analyses the response to that instruction (helpfulness, relevance, accuracy, detail) and writes a
better one (``reflectkit/templates/recycle_response.j2``).

The oracle answers in tagged sections (``<new_instruction>...``), read by
:func:`parse_sections`; a reply without a section recycling needs is a :class:`RecycleError`.
Record text is escaped in the prompts, so a record cannot forge the oracle's sections. The public
names are re-exported by :mod:`reflectkit.data.recycle`, their documented home.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from reflectkit.data.alpaca import FIELDS
from reflectkit.errors import ProviderError, RunError
from reflectkit.models.llm import ModelClient
from reflectkit.prompts import Prompts
from reflectkit.tags import escape_tags
from reflectkit.usage import Usage

__all__ = ["RecycleError", "Recycled", "Stages", "arecycle_record", "parse_sections"]

Stages = Literal["both", "instruction", "response"]
"""Which reflections recycling runs: both, or only the instruction's or the response's."""

_INSTRUCTION_SECTIONS = ("analysis", "new_instruction", "new_input", "new_response")
_RESPONSE_SECTIONS = ("analysis", "new_response")
# Tags the prompts wrap record text in or ask for: escaped in record text, so a record that
# contains "</response>" cannot end its own block early or forge the oracle's sections.
_PROMPT_TAGS = ("instruction", "input", "response", *_INSTRUCTION_SECTIONS)
_NO_INPUT = frozenset({"", "none", "n/a", "na", "no input", "noinput", "<noinput>", "(none)", "-"})


class RecycleError(RunError):
    """Recycling one record failed in ``stage`` (``"instruction"`` or ``"response"``): the
    oracle's call failed (the provider error is the ``__cause__``), or its reply, kept in
    ``reply``, lacked a section recycling needs."""

    def __init__(self, message: str, *, stage: str, reply: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.reply = reply
        self.usage = Usage()
        """What the oracle's calls for this record cost before it failed."""


@dataclass(frozen=True)
class Recycled:
    """One recycled record: the new Alpaca fields, the oracle's analysis per stage, and what
    the oracle's calls cost."""

    instruction: str
    input: str
    output: str
    analysis: dict[str, str] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)

    def to_alpaca(self) -> dict[str, str]:
        """The record in Alpaca format."""
        return {"instruction": self.instruction, "input": self.input, "output": self.output}


def _section_pattern(names: Sequence[str]) -> re.Pattern[str]:
    # A name matches in any case, with its underscores written as "_", "-", a space or nothing.
    spelled = "|".join(r"[_\s-]?".join(map(re.escape, n.split("_"))) for n in names)
    return re.compile(rf"<\s*(/?)\s*({spelled})\s*>", re.IGNORECASE)


def _canonical(name: str) -> str:
    return re.sub(r"[_\s-]+", "", name).lower()


def parse_sections(text: str, names: Sequence[str]) -> dict[str, str]:
    """The stripped text of each ``<name>...</name>`` section of ``text``, by name.

    Tolerant of what models write: tag names in any case, with ``_``, ``-``, a space or nothing
    between words, spaces inside the brackets; a section left open runs to the next section's
    opening tag or the end; a closing tag with no open section is ignored; when a section comes
    more than once, the last non-empty one counts. Sections that are absent are absent.
    """
    by_key = {_canonical(n): n for n in names}
    found: dict[str, str] = {}
    current: str | None = None
    start = 0

    def keep(name: str, body: str) -> None:
        if body.strip() or name not in found:
            found[name] = body.strip()

    for match in _section_pattern(names).finditer(text):
        name = by_key[_canonical(match.group(2))]
        if match.group(1):  # a closing tag
            if name == current:
                keep(name, text[start : match.start()])
                current = None
            continue
        if current is not None:
            keep(current, text[start : match.start()])
        current, start = name, match.end()
    if current is not None:
        keep(current, text[start:])
    return found


def _escaped(pair: Mapping[str, str]) -> dict[str, str]:
    return {name: escape_tags(pair[name], _PROMPT_TAGS) for name in FIELDS}


async def _ask(
    client: ModelClient, prompts: Prompts, template: str, pair: Mapping[str, str], stage: str
) -> tuple[str, Usage]:
    messages = [{"role": "user", "content": prompts.render(template, **_escaped(pair))}]
    try:
        completion = await client.complete(messages)
    except ProviderError as error:
        raise RecycleError(f"{stage} reflection: {error}", stage=stage) from error
    return completion.text, completion.usage


def _required(sections: dict[str, str], names: Sequence[str], stage: str, reply: str) -> None:
    missing = [name for name in names if not sections.get(name)]
    if missing:
        tags = ", ".join(f"<{name}>" for name in missing)
        raise RecycleError(
            f"{stage} reflection: the oracle's reply has no {tags} section",
            stage=stage,
            reply=reply,
        )


async def arecycle_record(
    record: Mapping[str, Any],
    oracle: str | ModelClient,
    *,
    stages: Stages = "both",
    prompts: Prompts | None = None,
) -> Recycled:
    """Recycle one Alpaca record with ``oracle`` (a LiteLLM model string or a configured
    :class:`~reflectkit.models.llm.ModelClient`); raises :class:`RecycleError` when a stage
    fails."""
    client = oracle if isinstance(oracle, ModelClient) else ModelClient(oracle)
    prompts = prompts or Prompts()
    pair = {name: str(record.get(name) or "") for name in FIELDS}
    analysis: dict[str, str] = {}
    usage = Usage()
    try:
        if stages in ("both", "instruction"):
            reply, cost = await _ask(client, prompts, "recycle_instruction", pair, "instruction")
            usage += cost
            sections = parse_sections(reply, _INSTRUCTION_SECTIONS)
            _required(sections, ("new_instruction", "new_response"), "instruction", reply)
            new_input = sections.get("new_input", "")
            pair = {
                "instruction": sections["new_instruction"],
                "input": "" if new_input.strip().strip(".").lower() in _NO_INPUT else new_input,
                "output": sections["new_response"],
            }
            analysis["instruction"] = sections.get("analysis", "")
        if stages in ("both", "response"):
            reply, cost = await _ask(client, prompts, "recycle_response", pair, "response")
            usage += cost
            sections = parse_sections(reply, _RESPONSE_SECTIONS)
            _required(sections, ("new_response",), "response", reply)
            pair = {**pair, "output": sections["new_response"]}
            analysis["response"] = sections.get("analysis", "")
    except RecycleError as error:
        error.usage = usage
        raise
    return Recycled(pair["instruction"], pair["input"], pair["output"], analysis, usage)
