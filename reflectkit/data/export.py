"""Recorded runs → fine-tuning data in the tag format, so a model can learn the single-pass
shortcut: reason in ``<thinking>``, correct itself in ``<reflection>``, answer in ``<output>``.

Each finished run becomes one example: the tag protocol's system prompt (the
``protocol_system`` template, or Reflection-70B's own with ``system="tuned"``), the run's
conversation, and one assistant turn (the ``export_assistant`` template) that writes the run
out as if the model had done it all in one reply: each draft's reasoning and the answer it
reached, the critique that made the next draft differ as a reflection, then the final answer.
Critiques that changed nothing (a pass, a revision that gave the same answer) and drafts after
the chosen one are left out.

Sources: a run log (a :class:`~reflectkit.stores.runlog.RunLog` or its SQLite file), or a JSONL file
whose lines are run records (``reflectkit runs export``), batch items (``{"prompt": ...,
"result": {...}}``), or results with their prompt (``{"prompt": ..., **result.to_dict()}``).
Formats: OpenAI chat (``{"messages": [...]}``) or ShareGPT (``{"conversations": [{"from",
"value"}]}``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import ValidationError

from reflectkit.content import message_text
from reflectkit.errors import ConfigurationError
from reflectkit.prompts import Prompts
from reflectkit.result import Iteration, ReflectionResult
from reflectkit.stores.jsonl import dumps_line
from reflectkit.stores.runlog import RunLog
from reflectkit.tags import REFLECTION_TAGS, TagScheme, escape_tags

__all__ = [
    "ExportReport",
    "Format",
    "SystemPrompt",
    "assistant_turn",
    "example_messages",
    "export",
    "to_sharegpt",
]

Format = Literal["openai", "sharegpt"]
"""The example format: OpenAI chat (``{"messages": [...]}``) or ShareGPT."""
SystemPrompt = Literal["protocol", "tuned"]
"""The examples' system prompt: the tag protocol's (``protocol_system`` template), or the one
Reflection-70B was tuned with (``tuned``)."""

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


@dataclass(frozen=True)
class ExportReport:
    """What an export did: ``read`` entries, ``written`` examples, and how many entries were
    ``skipped`` for each reason (``"not finished"``: running or failed runs, failed batch
    items; ``"not passed"``: with ``passed_only``; ``"no answer"``; ``"unreadable"``)."""

    read: int
    written: int
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Entry:
    where: str
    messages: list[Any] | None
    result: Any
    finished: bool


def _changed(before: str, after: str) -> bool:
    return " ".join(before.split()).lower() != " ".join(after.split()).lower()


def _critique(iteration: Iteration) -> str:
    verdict = iteration.verdict
    if verdict is None:
        return ""
    parts = [verdict.feedback.strip()] if verdict.feedback.strip() else []
    parts += [issue.strip() for issue in verdict.issues if issue.strip() not in verdict.feedback]
    return "\n".join(part for part in parts if part)


def _steps(result: ReflectionResult, scheme: TagScheme) -> list[dict[str, Any]]:
    """One step per draft up to the chosen one, with what the template shows of it."""

    def esc(text: str) -> str:
        return escape_tags(text, scheme)

    drafts = [it for it in result.iterations if it.number <= result.final_iteration]
    steps: list[dict[str, Any]] = []
    for position, iteration in enumerate(drafts):
        final = position == len(drafts) - 1
        reflections = list(iteration.draft.reflections)
        critique = _critique(iteration)
        revised = not final and not (iteration.verdict and iteration.verdict.passed)
        if (
            revised
            and critique
            and _changed(iteration.draft.output, drafts[position + 1].draft.output)
        ):
            reflections.append(critique)
        step = {
            "thinking": [esc(t) for t in iteration.draft.thinking if t.strip()],
            "answer": None if final else esc(iteration.draft.output),
            "reflections": [esc(r) for r in reflections if r.strip()],
        }
        if step["thinking"] or step["answer"] or step["reflections"]:
            steps.append(step)
    if not result.iterations and (result.thinking or result.reflections):
        steps.append(
            {
                "thinking": [esc(t) for t in result.thinking],
                "answer": None,
                "reflections": [esc(r) for r in result.reflections],
            }
        )
    return steps


def assistant_turn(
    result: ReflectionResult,
    *,
    scheme: TagScheme = REFLECTION_TAGS,
    prompts: Prompts | None = None,
) -> str:
    """The run written out as one reply in ``scheme``'s tags (see the module docstring)."""
    prompts = prompts or Prompts()
    return prompts.render(
        "export_assistant",
        scheme=scheme,
        steps=_steps(result, scheme),
        output=escape_tags(result.output, scheme),
    )


def example_messages(
    messages: Sequence[Any],
    result: ReflectionResult,
    *,
    scheme: TagScheme = REFLECTION_TAGS,
    system: SystemPrompt = "protocol",
    prompts: Prompts | None = None,
) -> list[dict[str, str]]:
    """One fine-tuning example as chat messages: the system prompt (the conversation's own
    system messages appended to it), the conversation's user and assistant turns as text with
    the scheme's tags escaped (as reflectkit sends them), and the run as the assistant's reply.
    Other messages (tool calls and results) are left out."""
    prompts = prompts or Prompts()
    if system == "tuned":
        system_text = prompts.render("tuned_system", scheme=scheme)
    else:
        system_text = prompts.render(
            "protocol_system", scheme=scheme, exemplar=None, exemplar_question=None
        )
    theirs: list[str] = []
    turns: list[dict[str, str]] = []
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        role, text = message.get("role"), message_text(message.get("content")).strip()
        if role == "system" and text:
            theirs.append(text)
        elif role in ("user", "assistant") and text:
            turns.append({"role": str(role), "content": escape_tags(text, scheme)})
    system_text = "\n\n".join([system_text, *theirs])
    reply = assistant_turn(result, scheme=scheme, prompts=prompts)
    return [
        {"role": "system", "content": system_text},
        *turns,
        {"role": "assistant", "content": reply},
    ]


def to_sharegpt(messages: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Chat messages as a ShareGPT record: ``{"conversations": [{"from", "value"}]}`` with
    ``system``, ``human`` and ``gpt`` turns."""
    return {
        "conversations": [
            {"from": _SHAREGPT_ROLES[m["role"]], "value": m["content"]} for m in messages
        ]
    }


def _prompt_messages(data: Mapping[str, Any]) -> list[Any] | None:
    for key in ("messages", "prompt", "question"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return [{"role": "user", "content": value}]
        if isinstance(value, list) and value:
            return value
    return None


def _entry(where: str, data: Any) -> _Entry:
    """What one JSON line holds, in any of the accepted shapes."""
    if not isinstance(data, Mapping):
        return _Entry(where, None, None, False)
    if "steps" in data and "status" in data:  # a run record
        messages = data.get("messages") if isinstance(data.get("messages"), list) else None
        return _Entry(where, messages, data.get("result"), data.get("status") == "finished")
    if "result" in data:  # a batch item, or a result wrapped with its prompt
        result = data.get("result")
        ok = data.get("ok", True) is not False and result is not None
        return _Entry(where, _prompt_messages(data), result, ok)
    if "output" in data and "stop_reason" in data:  # a result with its prompt beside it
        return _Entry(where, _prompt_messages(data), data, True)
    return _Entry(where, None, None, False)


def _is_run_log(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error}") from error


def _lines(stream: IO[str], name: str) -> Iterator[_Entry]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            data = json.loads(line)
        except ValueError:
            yield _Entry(where, None, None, False)
            continue
        yield _entry(where, data)


def _read_entries(source: RunLog | str | os.PathLike[str]) -> Iterator[_Entry]:
    """The entries of ``source``: a run log (or its file), or a JSONL file of run records,
    batch items or results with their prompts."""
    if isinstance(source, RunLog) or _is_run_log(Path(source)):
        log = source if isinstance(source, RunLog) else RunLog(source)
        try:
            with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
                log.export(spool)
                spool.seek(0)
                yield from _lines(spool, str(log.path))
        finally:
            if log is not source:
                log.close()
        return
    path = Path(source)
    if not path.is_file():
        raise ConfigurationError(f"no file {path}")
    with open(path, encoding="utf-8") as stream:
        yield from _lines(stream, str(path))


def _example(
    entry: _Entry, passed_only: bool, build: Any
) -> tuple[list[dict[str, str]] | None, str]:
    """The entry's example, or None and why it is skipped."""
    if entry.result is None and entry.messages is None:
        return None, "unreadable"
    if not entry.finished or not isinstance(entry.result, Mapping):
        return None, "not finished"
    try:
        result = ReflectionResult.model_validate(entry.result)
    except ValidationError:
        return None, "unreadable"
    if entry.messages is None:
        return None, "unreadable"
    if passed_only and not result.passed:
        return None, "not passed"
    if not result.output.strip():
        return None, "no answer"
    return build(entry.messages, result), ""


def export(
    source: RunLog | str | os.PathLike[str],
    destination: str | os.PathLike[str] | IO[str],
    *,
    format: Format = "openai",
    passed_only: bool = False,
    scheme: TagScheme = REFLECTION_TAGS,
    system: SystemPrompt = "protocol",
    template_dir: str | os.PathLike[str] | None = None,
) -> ExportReport:
    """Write one fine-tuning example per finished run of ``source`` to ``destination`` (a path,
    replaced, or a text stream) as JSON lines, in ``format``; with ``passed_only``, only runs
    the critic passed. ``scheme`` names the tags, ``system`` picks the system prompt,
    ``template_dir`` overrides the templates. Entries that cannot become an example are
    counted in the report's ``skipped``, never raised."""
    if format not in ("openai", "sharegpt"):
        raise ConfigurationError(f"format must be openai or sharegpt, not {format!r}")
    if system not in ("protocol", "tuned"):
        raise ConfigurationError(f"system must be protocol or tuned, not {system!r}")
    prompts = Prompts(Path(template_dir) if template_dir is not None else None)
    prompts.check()

    def build(messages: list[Any], result: ReflectionResult) -> list[dict[str, str]]:
        return example_messages(messages, result, scheme=scheme, system=system, prompts=prompts)

    entries = _read_entries(source)
    if isinstance(destination, (str, os.PathLike)):
        target = Path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written next to the target and moved over it, so a failed export leaves it whole.
        partial = target.with_name(target.name + ".partial")
        try:
            with open(partial, "w", encoding="utf-8") as stream:
                report = _write(entries, stream, format, passed_only, build)
            partial.replace(target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return report
    return _write(entries, destination, format, passed_only, build)


def _write(
    entries: Iterator[_Entry], stream: IO[str], format: Format, passed_only: bool, build: Any
) -> ExportReport:
    read = written = 0
    skipped: Counter[str] = Counter()
    for entry in entries:
        read += 1
        messages, reason = _example(entry, passed_only, build)
        if messages is None:
            skipped[reason] += 1
            continue
        record = {"messages": messages} if format == "openai" else to_sharegpt(messages)
        stream.write(dumps_line(record) + "\n")  # a lone surrogate is escaped, not fatal
        written += 1
    return ExportReport(read, written, dict(skipped))
