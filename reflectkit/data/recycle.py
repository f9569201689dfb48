"""Reflection-Tuning data recycling (Li et al. 2023): an oracle model improves instruction data.

Each Alpaca record (``instruction``, ``input``, ``output``) goes through two stages:

1. **instruction reflection**: the oracle analyses the instruction (topic complexity, detail
   required, knowledge required, ambiguity, reasoning required) and writes a new instruction,
   input and response (``reflectkit/templates/recycle_instruction.j2``);
2. **response reflection**: the oracle analyses the response to that instruction (helpfulness,
   relevance, accuracy, detail) and writes a better one
   (``reflectkit/templates/recycle_response.j2``).

The oracle answers in tagged sections (``<new_instruction>...``), read by
:func:`parse_sections`; a reply without a section recycling needs fails that record. Records
run concurrently; each finished one is appended to the output JSONL at once, with the
``source_sha256`` of the record it came from, so a run that stopped resumes where it was: records
already in the output are skipped. A record that fails (unreadable, a provider error after
retries, a malformed reply) is logged, written to the failures JSONL and skipped; it never stops
the run. :func:`arecycle` is the one implementation; :func:`recycle` is its sync wrapper.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from reflectkit.config import RetryPolicy
from reflectkit.errors import ConfigurationError, InputError, ProviderError, RunError
from reflectkit.models.llm import ModelClient
from reflectkit.prompts import Prompts
from reflectkit.redaction import one_line
from reflectkit.runner import run_sync
from reflectkit.stores.jsonl import canonical_sha256, cut_partial_line, dumps_line
from reflectkit.tags import escape_tags
from reflectkit.usage import Usage

__all__ = [
    "FIELDS",
    "RecycleError",
    "RecycleReport",
    "Recycled",
    "Stages",
    "arecycle",
    "arecycle_record",
    "parse_sections",
    "read_records",
    "record_hash",
    "recycle",
]

logger = logging.getLogger(__name__)

Stages = Literal["both", "instruction", "response"]
FIELDS = ("instruction", "input", "output")
"""The Alpaca fields: what is read, hashed and written."""

_INSTRUCTION_SECTIONS = ("analysis", "new_instruction", "new_input", "new_response")
_RESPONSE_SECTIONS = ("analysis", "new_response")
# Tags the prompts wrap record text in or ask for: escaped in record text, so a record that
# contains "</response>" cannot end its own block early or forge the oracle's sections.
_PROMPT_TAGS = ("instruction", "input", "response", *_INSTRUCTION_SECTIONS)
_NO_INPUT = frozenset({"", "none", "n/a", "na", "no input", "noinput", "<noinput>", "(none)", "-"})
_MESSAGE_CHARS = 500


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


@dataclass(frozen=True)
class RecycleReport:
    """What a recycling run did: ``total`` records read; ``written`` to the output;
    ``skipped`` because the output already had them (or they repeated an earlier record);
    ``failed`` (see ``failures``); the oracle's ``usage``."""

    total: int
    written: int
    skipped: int
    failed: int
    usage: Usage
    output: Path
    failures: Path


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 of a record's Alpaca fields as canonical JSON (other keys do not count; a
    missing field counts as empty): the key resume matches records by."""
    return canonical_sha256({name: record.get(name) or "" for name in FIELDS})


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


def _checked(value: Any) -> dict[str, str]:
    """An input record with its Alpaca fields as strings; raises InputError if it has none."""
    if not isinstance(value, dict):
        raise InputError(f"a record must be a JSON object, not {type(value).__name__}")
    for name in FIELDS:
        if value.get(name) is not None and not isinstance(value[name], str):
            raise InputError(f"{name!r} must be a string, not {type(value[name]).__name__}")
    if not str(value.get("instruction") or "").strip():
        raise InputError("the record has no 'instruction'")
    return {name: value.get(name) or "" for name in FIELDS}


def _parsed(line: str) -> dict[str, str] | InputError:
    try:
        return _checked(json.loads(line))
    except InputError as error:
        return error
    except ValueError as error:
        return InputError(f"not JSON: {error}")


def read_records(
    path: str | os.PathLike[str],
) -> Iterator[tuple[int, dict[str, str] | InputError]]:
    """The records of an Alpaca file, numbered from 1, each a dict of the Alpaca fields or the
    error that makes it unusable: JSON lines, or one JSON array (like ``alpaca_data.json``).
    Blank lines are skipped. A file that cannot be read raises ConfigurationError."""
    try:
        with open(path, encoding="utf-8") as file:
            head = file.read(4096).lstrip()
            file.seek(0)
            if head.startswith("["):
                items = json.load(file)
                for number, item in enumerate(items, start=1):
                    yield number, _parsed(json.dumps(item))
                return
            for number, line in enumerate(file, start=1):
                if line.strip():
                    yield number, _parsed(line)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigurationError(
            f"cannot read {os.fspath(path)}: {one_line(error, limit=_MESSAGE_CHARS)}"
        ) from error


def _done_hashes(path: Path) -> set[str]:
    """``source_sha256`` of every record already in the output; a last line cut short by a
    crash is removed first, so new lines start on a line of their own."""
    if not path.exists():
        return set()
    cut_partial_line(path)
    done: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as file:
        for number, line in enumerate(file, start=1):
            try:
                done.add(str(json.loads(line)["source_sha256"]))
            except (ValueError, KeyError, TypeError):
                if line.strip():
                    logger.warning("%s:%d has no source_sha256; not resumed", path, number)
    return done


@dataclass
class _Job:
    line: int
    record: dict[str, str]
    digest: str


class _Files:
    """The output (appended) and failures (replaced, opened on the first failure) files; each
    line is flushed as it is written."""

    def __init__(self, output: Path, failures: Path) -> None:
        self.output_path, self.failures_path = output, failures
        output.parent.mkdir(parents=True, exist_ok=True)
        self.output: IO[str] = open(output, "a", encoding="utf-8")  # noqa: SIM115
        self.failures: IO[str] | None = None
        failures.unlink(missing_ok=True)

    def write(self, stream: IO[str], data: Mapping[str, Any]) -> None:
        stream.write(dumps_line(data) + "\n")  # a lone surrogate is escaped, not fatal
        stream.flush()

    def fail(self, data: Mapping[str, Any]) -> None:
        if self.failures is None:
            self.failures = open(self.failures_path, "w", encoding="utf-8")  # noqa: SIM115
        self.write(self.failures, data)

    def close(self) -> None:
        self.output.close()
        if self.failures is not None:
            self.failures.close()


def _failure(line: int, record: Any, digest: str | None, error: BaseException) -> dict[str, Any]:
    return {
        "line": line,
        "source_sha256": digest,
        "stage": getattr(error, "stage", "input"),
        "error": type(error).__name__,
        "message": one_line(error, limit=_MESSAGE_CHARS),
        "reply": getattr(error, "reply", None),
        "record": record,
    }


def _check(concurrency: int, stages: str, source: Path) -> None:
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be at least 1, not {concurrency}")
    if stages not in ("both", "instruction", "response"):
        raise ConfigurationError(f"stages must be both, instruction or response, not {stages!r}")
    if not source.is_file():
        raise ConfigurationError(f"no input file {source}")


async def arecycle(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    oracle: str,
    stages: Stages = "both",
    concurrency: int = 4,
    failures: str | os.PathLike[str] | None = None,
    template_dir: str | os.PathLike[str] | None = None,
    keep_analysis: bool = False,
    progress: bool = True,
    retry: RetryPolicy | None = None,
    call_timeout: float | None = 120.0,
    **model_kwargs: Any,
) -> RecycleReport:
    """Recycle every record of ``source`` (Alpaca JSONL or JSON array) with the ``oracle``
    model and append the results to ``output`` (Alpaca JSONL plus ``source_sha256``; with
    ``keep_analysis``, the oracle's analyses too), ``concurrency`` records at a time.

    Records whose hash is already in ``output`` are skipped (resume), as are repeats of an
    earlier record. Failed records go to ``failures`` (default: ``OUTPUT.failures.jsonl``,
    replaced each run) and the ``reflectkit.data.recycle`` logger; run again to retry them.
    ``stages`` runs both reflections or one. ``template_dir`` overrides the two prompts;
    ``retry`` and ``call_timeout`` (seconds) apply to each oracle call; ``model_kwargs`` go to
    LiteLLM. Configuration errors (unknown oracle, missing key, a broken template, an input
    file that cannot be read) are raised before any call. The input is read as it goes, so a
    large file is never held in memory whole (a JSON array file is, by json.load).
    """
    source, target = Path(source), Path(output)
    _check(concurrency, stages, source)
    failures_path = (
        Path(failures) if failures else target.with_name(target.name + ".failures.jsonl")
    )
    prompts = Prompts(Path(template_dir) if template_dir is not None else None)
    prompts.check()
    client = ModelClient(oracle, model_kwargs, retry=retry, timeout=call_timeout)
    client.check()
    done = _done_hashes(target)
    total = _count(source)
    files = _Files(target, failures_path)
    run = _Run(client, prompts, stages, files, keep_analysis)
    try:
        await run.all(read_records(source), done, concurrency, progress, total)
    finally:
        files.close()
    logger.info("recycled %d record(s) of %s, %d failed", run.written, source, run.failed)
    return RecycleReport(
        total=total,
        written=run.written,
        skipped=run.skipped,
        failed=run.failed,
        usage=run.usage,
        output=target,
        failures=failures_path,
    )


def _count(source: Path) -> int:
    """How many records ``source`` holds; reading it whole first also means a file that cannot
    be read fails before any call."""
    return sum(1 for _ in read_records(source))


class _Run:
    """The concurrent part of :func:`arecycle`: one producer reads the input and queues the
    records to do (a few at a time, so a large file is never all in memory); workers recycle
    them and write what they get."""

    def __init__(
        self, client: ModelClient, prompts: Prompts, stages: Stages, files: _Files, keep: bool
    ) -> None:
        self.client, self.prompts, self.stages = client, prompts, stages
        self.files, self.keep = files, keep
        self.written = self.skipped = self.failed = 0
        self.usage = Usage()

    def _job(self, line: int, item: dict[str, str] | InputError, done: set[str]) -> _Job | None:
        """The job for one input record, or None when it is unusable or already done."""
        if isinstance(item, InputError):
            self.failed += 1
            logger.warning("line %d skipped: %s", line, one_line(item, limit=_MESSAGE_CHARS))
            self.files.fail(_failure(line, None, None, item))
            return None
        digest = record_hash(item)
        if digest in done:
            self.skipped += 1
            return None
        done.add(digest)
        return _Job(line, item, digest)

    async def _one(self, job: _Job) -> None:
        try:
            recycled = await arecycle_record(
                job.record, self.client, stages=self.stages, prompts=self.prompts
            )
        except Exception as error:  # any failure is this record's, never the run's
            self.failed += 1
            if isinstance(error, RecycleError):
                self.usage += error.usage
            logger.warning(
                "record at line %d failed: %s", job.line, one_line(error, limit=_MESSAGE_CHARS)
            )
            self.files.fail(_failure(job.line, job.record, job.digest, error))
            return
        self.written += 1
        self.usage += recycled.usage
        data: dict[str, Any] = {**recycled.to_alpaca(), "source_sha256": job.digest}
        if self.keep:
            data["analysis"] = recycled.analysis
        self.files.write(self.files.output, data)

    async def all(
        self,
        records: Iterator[tuple[int, dict[str, str] | InputError]],
        done: set[str],
        concurrency: int,
        progress: bool,
        total: int,
    ) -> None:
        tqdm = importlib.import_module("tqdm.auto").tqdm  # untyped; notebook-aware bars
        queue: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=2 * concurrency)
        with tqdm(total=total, disable=not progress, desc="recycle", unit="record") as bar:

            async def produce() -> None:
                for line, item in records:
                    job = self._job(line, item, done)
                    if job is None:
                        bar.update(1)
                    else:
                        await queue.put(job)
                for _ in range(concurrency):
                    await queue.put(None)

            async def work() -> None:
                while (job := await queue.get()) is not None:
                    await self._one(job)
                    bar.update(1)
                    bar.set_postfix(failed=self.failed, refresh=False)

            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                for _ in range(concurrency):
                    group.create_task(work())


def recycle(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    oracle: str,
    **options: Any,
) -> RecycleReport:
    """Sync :func:`arecycle` (same arguments)."""
    return run_sync(arecycle(source, output, oracle=oracle, **options))
