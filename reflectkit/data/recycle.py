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

This module runs recycling over a file and is the home of its public names: one record's two
reflections are :mod:`reflectkit.data.oracle`'s, reading an Alpaca file is
:mod:`reflectkit.data.alpaca`'s, and the bounded concurrency :mod:`reflectkit.pool`'s.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reflectkit.config import RetryPolicy
from reflectkit.data.alpaca import FIELDS, MESSAGE_CHARS, read_records, record_hash
from reflectkit.data.oracle import (
    Recycled,
    RecycleError,
    Stages,
    arecycle_record,
    parse_sections,
)
from reflectkit.errors import ConfigurationError, InputError
from reflectkit.models.llm import ModelClient
from reflectkit.pool import progress_bar, run_bounded
from reflectkit.prompts import Prompts
from reflectkit.ray_pool import check_ray, run_on_ray
from reflectkit.redaction import one_line
from reflectkit.runner import run_sync
from reflectkit.stores.jsonl import JsonlWriter, cut_partial_line
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


@dataclass(frozen=True)
class _Failed:
    """What a record's failure said: plain data, so it travels back from a Ray actor."""

    error: str
    stage: str
    message: str
    reply: str | None = None
    usage: Usage = field(default_factory=Usage)

    @classmethod
    def of(cls, error: BaseException) -> _Failed:
        usage = error.usage if isinstance(error, RecycleError) else Usage()
        return cls(
            type(error).__name__,
            getattr(error, "stage", "input"),
            one_line(error, limit=MESSAGE_CHARS),
            getattr(error, "reply", None),
            usage,
        )


def _failure(line: int, record: Any, digest: str | None, failed: _Failed) -> dict[str, Any]:
    return {
        "line": line,
        "source_sha256": digest,
        "stage": failed.stage,
        "error": failed.error,
        "message": failed.message,
        "reply": failed.reply,
        "record": record,
    }


@dataclass(frozen=True)
class _Oracle:
    """The oracle's side of recycling, for one process: the client, the prompts, the stages."""

    client: ModelClient
    prompts: Prompts
    stages: Stages

    async def __call__(self, job: _Job) -> Recycled | _Failed:
        try:
            return await arecycle_record(
                job.record, self.client, stages=self.stages, prompts=self.prompts
            )
        except Exception as error:  # any failure is this record's, never the run's
            return _Failed.of(error)

    def close(self) -> None:
        """Nothing to close: LiteLLM's clients live as long as the process."""


@dataclass(frozen=True)
class _OracleFactory:
    """What a Ray actor builds its :class:`_Oracle` from (picklable settings, no client)."""

    oracle: str
    model_kwargs: dict[str, Any]
    retry: RetryPolicy | None
    timeout: float | None
    template_dir: str | None
    stages: Stages

    def __call__(self) -> _Oracle:
        prompts = Prompts(Path(self.template_dir) if self.template_dir is not None else None)
        client = ModelClient(self.oracle, self.model_kwargs, retry=self.retry, timeout=self.timeout)
        client.check()  # loads LiteLLM now, not in the first record's time
        return _Oracle(client, prompts, self.stages)


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
    ray: bool | str | None = None,
    ray_actors: int | None = None,
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

    ``ray=True`` (a local cluster) or a Ray address runs the oracle's calls on ``ray_actors``
    Ray actors (default: the cluster's CPUs), ``concurrency`` records each; this process still
    reads, skips and writes every record, so the files are the same (docs/scale.md).
    """
    source, target = Path(source), Path(output)
    _check(concurrency, stages, source)
    address = check_ray(ray, ray_actors)
    failures_path = (
        Path(failures) if failures else target.with_name(target.name + ".failures.jsonl")
    )
    prompts = Prompts(Path(template_dir) if template_dir is not None else None)
    prompts.check()
    client = ModelClient(oracle, model_kwargs, retry=retry, timeout=call_timeout)
    client.check()
    done = _done_hashes(target)
    total = _count(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    output_file = JsonlWriter(target, "a")
    failures_path.parent.mkdir(parents=True, exist_ok=True)  # as the output's: no error later
    failures_path.unlink(missing_ok=True)
    failures_file = JsonlWriter(failures_path, "w", lazy=True)  # made on the first failure
    run = _Run(_Oracle(client, prompts, stages), output_file, failures_file, keep_analysis)
    if address is not None:
        factory = _OracleFactory(
            oracle,
            model_kwargs,
            retry,
            call_timeout,
            _absolute(template_dir),
            stages,
        )
        run.on_ray(factory, address, ray_actors)
    try:
        await run.all(read_records(source), done, concurrency, progress, total)
    finally:
        output_file.close()
        failures_file.close()
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


def _absolute(path: str | os.PathLike[str] | None) -> str | None:
    """``path`` made absolute here: an actor's working directory is not the driver's."""
    return None if path is None else os.path.abspath(path)


def _count(source: Path) -> int:
    """How many records ``source`` holds; reading it whole first also means a file that cannot
    be read fails before any call."""
    return sum(1 for _ in read_records(source))


class _Run:
    """The concurrent part of :func:`arecycle`: the input is read as workers free up (a few
    records ahead, so a large file is never all in memory); workers recycle the records and
    write what they get."""

    def __init__(
        self, oracle: _Oracle, output: JsonlWriter, failures: JsonlWriter, keep: bool
    ) -> None:
        self.oracle = oracle
        self.output, self.failures, self.keep = output, failures, keep
        self.written = self.skipped = self.failed = 0
        self.usage = Usage()
        self.ray: tuple[_OracleFactory, str, int | None] | None = None

    def on_ray(self, factory: _OracleFactory, address: str, actors: int | None) -> None:
        """Have Ray actors built from ``factory`` call the oracle, not this process."""
        self.ray = (factory, address, actors)

    def _job(self, line: int, item: dict[str, str] | InputError, done: set[str]) -> _Job | None:
        """The job for one input record, or None when it is unusable or already done."""
        if isinstance(item, InputError):
            self.failed += 1
            logger.warning("line %d skipped: %s", line, one_line(item, limit=MESSAGE_CHARS))
            self.failures.write(_failure(line, None, None, _Failed.of(item)))
            return None
        digest = record_hash(item)
        if digest in done:
            self.skipped += 1
            return None
        done.add(digest)
        return _Job(line, item, digest)

    def _record(self, job: _Job, recycled: Recycled | _Failed) -> None:
        """Write what became of one record: its line in the output, or in the failures."""
        if isinstance(recycled, _Failed):
            self.failed += 1
            self.usage += recycled.usage
            logger.warning("record at line %d failed: %s", job.line, recycled.message)
            self.failures.write(_failure(job.line, job.record, job.digest, recycled))
            return
        self.written += 1
        self.usage += recycled.usage
        data: dict[str, Any] = {**recycled.to_alpaca(), "source_sha256": job.digest}
        if self.keep:
            data["analysis"] = recycled.analysis
        self.output.write(data)

    async def all(
        self,
        records: Iterator[tuple[int, dict[str, str] | InputError]],
        done: set[str],
        concurrency: int,
        progress: bool,
        total: int,
    ) -> None:
        with progress_bar(total, enabled=progress, desc="recycle", unit="record") as bar:

            def jobs() -> Iterator[_Job]:
                for line, item in records:
                    job = self._job(line, item, done)
                    if job is None:
                        bar.update(1)
                    else:
                        yield job

            async def record(job: _Job, recycled: Recycled | _Failed) -> None:
                self._record(job, recycled)
                bar.update(1)
                bar.set_postfix(failed=self.failed, refresh=False)

            async def work(job: _Job) -> None:
                await record(job, await self.oracle(job))

            if self.ray is None:
                await run_bounded(jobs(), work, concurrency)
            else:
                factory, address, actors = self.ray
                await run_on_ray(
                    jobs(), factory, record, address=address, actors=actors, concurrency=concurrency
                )


def recycle(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    oracle: str,
    **options: Any,
) -> RecycleReport:
    """Sync :func:`arecycle` (same arguments)."""
    return run_sync(arecycle(source, output, oracle=oracle, **options))
