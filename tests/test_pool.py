"""The worker pool batch and recycle share (reflectkit.pool), and the JSONL writer they append
with (reflectkit.stores.jsonl.JsonlWriter)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reflectkit.errors import ConfigurationError
from reflectkit.pool import progress_bar, run_bounded
from reflectkit.stores.jsonl import JsonlWriter


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_jobs_run_at_most_concurrency_at_a_time_and_start_in_order(
    concurrency: int,
) -> None:
    started: list[int] = []
    in_flight = peak = 0

    async def work(job: int) -> None:
        nonlocal in_flight, peak
        started.append(job)
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001 * (job % 3))
        in_flight -= 1

    await run_bounded(range(10), work, concurrency)
    assert started == list(range(10))
    assert peak == concurrency


async def test_jobs_are_read_a_few_ahead_not_all_at_once() -> None:
    read: list[int] = []
    ahead: list[int] = []
    done = 0

    def jobs() -> Iterator[int]:
        for job in range(50):
            read.append(job)
            yield job

    async def work(job: int) -> None:
        nonlocal done
        await asyncio.sleep(0)
        done += 1
        ahead.append(len(read) - done)

    await run_bounded(jobs(), work, 2)
    assert read == list(range(50))
    assert max(ahead) <= 2 * 2 + 2  # the queue, and the jobs the workers hold


async def test_the_first_failure_is_raised_itself_and_stops_the_rest() -> None:
    finished: list[int] = []

    async def work(job: int) -> None:
        if job == 1:
            raise ConfigurationError("every job would fail the same way")
        await asyncio.sleep(0.05)
        finished.append(job)

    with pytest.raises(ConfigurationError, match="every job"):
        await run_bounded(range(20), work, 2)
    assert len(finished) < 20


async def test_a_failure_reading_the_jobs_is_raised_itself() -> None:
    def jobs() -> Iterator[int]:
        yield 0
        raise ConfigurationError("the input went away")

    async def work(job: int) -> None:
        await asyncio.sleep(0)

    with pytest.raises(ConfigurationError, match="went away"):
        await run_bounded(jobs(), work, 2)


async def test_no_jobs_is_no_work() -> None:
    async def work(job: int) -> None:
        raise AssertionError("no job to run")

    await run_bounded([], work, 4)


def test_a_disabled_progress_bar_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(3, enabled=False, desc="quiet", unit="item") as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""
    with progress_bar(3, enabled=True, desc="shown", unit="item", initial=1) as bar:
        bar.update(2)
    err = capsys.readouterr().err
    assert "shown" in err
    assert "3/3" in err


def test_the_writer_appends_flushed_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"n": 0}\n', encoding="utf-8")
    writer = JsonlWriter(path, "a")
    writer.write({"n": 1, "text": "half an emoji \ud83d"})
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2  # flushed, still open
    writer.write_line('{"n": 2}')
    writer.close()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"n": 0}, {"n": 1, "text": "half an emoji \ud83d"}, {"n": 2}]


def test_a_lazy_writer_makes_its_file_on_the_first_write_only(tmp_path: Path) -> None:
    path = tmp_path / "failures.jsonl"
    unused = JsonlWriter(path, "w", lazy=True)
    unused.close()
    assert not path.exists()
    used = JsonlWriter(path, "w", lazy=True)
    used.write({"line": 3})
    used.close()
    assert path.read_text(encoding="utf-8") == '{"line": 3}\n'


def test_a_value_that_cannot_be_a_line_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    circular: list[object] = []
    circular.append(circular)
    writer = JsonlWriter(path, "w")
    with pytest.raises(ValueError, match="Circular"):
        writer.write({"prompt": circular})
    writer.close()
    assert path.read_text(encoding="utf-8") == ""
