"""batch / abatch: concurrency, order, per-item errors, the JSONL file and resume."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reflectkit.api
from reflectkit.api import Reflector
from reflectkit.batching import BatchItem, abatch, batch, prompt_hash, read_batch_file
from reflectkit.config import RetryPolicy
from reflectkit.errors import ConfigurationError, ModelRequestsBlockedError
from reflectkit.stores.jsonl import TextRepair, dumps_line, repair_surrogates, repair_text
from reflectkit.testing import FunctionLLM, Request, ScriptedLLM, fail
from tests.conftest import verdict


def echo_model(delay: float = 0.0) -> FunctionLLM:
    """Answers each question in upper case; 'slow' questions take longer; 'boom' fails."""

    async def answer(request: Request) -> str:
        text = request.last_user_text
        if "boom" in text:
            raise fail(400, "the provider refused\nsecond line")
        await asyncio.sleep(delay * (3 if "slow" in text else 1))
        return f"<output>{text.upper()}</output>"

    return FunctionLLM(answer)


def test_results_come_back_in_input_order_whatever_order_they_finish_in() -> None:
    fake = echo_model(delay=0.01)
    prompts = ["slow a", "b", "slow c", "d", "e"]
    items = batch(prompts, fake.model, mode="single", concurrency=3, progress=False, run_log=False)
    assert [item.index for item in items] == [0, 1, 2, 3, 4]
    assert [item.output for item in items] == ["SLOW A", "B", "SLOW C", "D", "E"]
    assert all(item.ok and item.error is None and item.seconds > 0 for item in items)
    assert [item.prompt for item in items] == prompts


async def test_never_more_than_concurrency_runs_at_once() -> None:
    running = peak = 0

    async def answer(request: Request) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return "<output>ok</output>"

    fake = FunctionLLM(answer)
    items = await abatch(
        [f"q{i}" for i in range(12)], fake.model, mode="single", concurrency=4, progress=False
    )
    assert len(items) == 12
    assert all(item.ok for item in items)
    assert peak == 4


def test_one_reflector_is_built_and_compiled_for_the_whole_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled = []
    real = reflectkit.api.compile_runtime
    monkeypatch.setattr(
        reflectkit.api, "compile_runtime", lambda *a: compiled.append(1) or real(*a)
    )
    fake = echo_model()
    items = batch([f"q{i}" for i in range(6)], fake.model, mode="single", progress=False)
    assert len(items) == 6
    assert len(compiled) == 1


def test_a_failed_item_is_recorded_and_the_others_finish() -> None:
    fake = echo_model()
    items = batch(["a", "boom", "c"], fake.model, mode="single", progress=False, run_log=False)
    assert [item.ok for item in items] == [True, False, True]
    failed = items[1]
    assert failed.result is None
    assert failed.output is None
    assert failed.error is not None
    assert failed.error.type == "ProviderRequestError"
    assert "the provider refused" in failed.error.message
    assert "\n" not in failed.error.message  # one line
    assert failed.error.retryable is False
    assert type(failed.exception).__name__ == "ProviderRequestError"


def test_a_run_that_fails_midway_keeps_its_partial_result() -> None:
    # generate, critique (revise), then the revision fails: the first draft survives.
    fake = ScriptedLLM(["<output>5</output>", verdict(False, "7 - 3 is 4"), fail(400, "gone")])
    (item,) = batch(["q"], fake.model, mode="loop", progress=False)
    assert item.error is not None
    assert item.error.partial is not None
    assert item.error.partial.output == "5"
    assert item.error.partial.usage.calls == 2
    assert item.to_dict()["error"]["partial"]["output"] == "5"


def test_unusable_input_fails_that_item_only() -> None:
    fake = echo_model()
    conversation = [{"role": "assistant", "content": "no user turn"}]
    items = batch(["a", "", conversation], fake.model, mode="single", progress=False)
    assert items[0].ok
    assert items[1].error is not None
    assert items[1].error.type == "InputError"
    assert items[2].error is not None
    assert items[2].error.type == "InputError"


def test_conversations_are_prompts_too() -> None:
    fake = echo_model()
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    items = batch(["hi", conversation], fake.model, mode="single", progress=False)
    assert [item.output for item in items] == ["HI", "HELLO"]
    assert any("Be brief." in request.system_text for request in fake.requests)


def test_a_configuration_error_stops_the_batch_before_any_call() -> None:
    with pytest.raises(ModelRequestsBlockedError):
        batch(["a", "b"], "gpt-4o-mini", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"resume": True}, "resume=True needs output"),
        ({"reflector": "x", "mode": "single"}, "either reflector"),
    ],
)
def test_bad_arguments_raise_configuration_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        batch(["a"], **kwargs)  # type: ignore[arg-type]


def test_one_string_is_not_a_list_of_prompts() -> None:
    with pytest.raises(ConfigurationError, match="not one string"):
        batch("abc", progress=False)  # type: ignore[arg-type]


def test_a_ready_reflector_can_be_passed_and_stays_open() -> None:
    fake = echo_model()
    with Reflector(fake.model, mode="single") as reflector:
        items = batch(["a", "b"], reflector=reflector, progress=False)
        assert [item.output for item in items] == ["A", "B"]
        assert reflector.run("c").output == "C"  # still usable


def test_each_item_is_written_as_it_finishes(tmp_path: Path) -> None:
    out = tmp_path / "out" / "results.jsonl"
    seen: list[int] = []

    def on_item(item: BatchItem) -> None:
        # The line of the item that just finished is already in the file, flushed.
        lines = out.read_text().splitlines()
        assert len(lines) == len(seen) + 1
        assert json.loads(lines[-1])["index"] == item.index
        seen.append(item.index)

    fake = echo_model()
    prompts = ["a", "boom", "c"]
    batch(prompts, fake.model, mode="single", output=out, on_item=on_item, progress=False)
    assert sorted(seen) == [0, 1, 2]
    records = read_batch_file(out)
    assert records[0]["ok"] is True
    assert records[0]["result"]["output"] == "A"
    assert records[0]["prompt"] == "a"
    assert records[0]["prompt_sha256"] == prompt_hash("a")
    assert records[1]["ok"] is False
    assert records[1]["error"]["type"] == "ProviderRequestError"
    assert records[1]["result"] is None


async def test_an_async_on_item_is_awaited() -> None:
    got: list[int] = []

    async def on_item(item: BatchItem) -> None:
        await asyncio.sleep(0)
        got.append(item.index)

    fake = echo_model()
    await abatch(["a", "b"], fake.model, mode="single", on_item=on_item, progress=False)
    assert sorted(got) == [0, 1]


def test_resume_skips_done_items_and_retries_failed_ones(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    broken = {"on": True}

    def answer(request: Request) -> str:
        if broken["on"] and request.last_user_text == "b":
            raise fail(503, "overloaded")
        return f"<output>{request.last_user_text.upper()}</output>"

    fake = FunctionLLM(answer)
    once = RetryPolicy(max_attempts=1)
    settings = {"mode": "single", "progress": False, "retry": once, "output": out}
    first = batch(["a", "b", "c"], fake.model, **settings)  # type: ignore[arg-type]
    assert [item.ok for item in first] == [True, False, True]
    assert first[1].error is not None
    assert first[1].error.retryable
    calls = len(fake.requests)

    broken["on"] = False
    second = batch(["a", "b", "c"], fake.model, resume=True, **settings)  # type: ignore[arg-type]
    assert [item.output for item in second] == ["A", "B", "C"]
    assert [item.resumed for item in second] == [True, False, True]
    assert len(fake.requests) == calls + 1  # only "b" ran again
    assert second[0].result == first[0].result  # read back from the file, intact

    third = batch(["a", "b", "c"], fake.model, resume=True, **settings)  # type: ignore[arg-type]
    assert all(item.resumed for item in third)
    assert len(fake.requests) == calls + 1
    # The file keeps every attempt; the last line for an index wins.
    assert len(out.read_text().splitlines()) == 4
    assert read_batch_file(out)[1]["ok"] is True


def test_resume_runs_a_changed_prompt_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "results.jsonl"
    fake = echo_model()
    batch(["a", "b"], fake.model, mode="single", output=out, progress=False)
    items = batch(["a", "B2"], fake.model, mode="single", output=out, resume=True, progress=False)
    assert [item.resumed for item in items] == [True, False]
    assert items[1].output == "B2"
    assert "changed" in caplog.text


def test_resume_recovers_from_a_line_cut_short_by_a_crash(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    fake = echo_model()
    batch(["a", "b"], fake.model, mode="single", output=out, progress=False)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1][:40])  # the second write was cut off
    items = batch(["a", "b"], fake.model, mode="single", output=out, resume=True, progress=False)
    kept = json.loads(lines[0])["index"]
    assert [item.resumed for item in items] == [i == kept for i in (0, 1)]
    indexes = [json.loads(line)["index"] for line in out.read_text().splitlines()]
    assert sorted(indexes) == [0, 1]  # the cut line is gone, the new one on a line of its own


def test_without_resume_the_file_is_started_afresh(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    fake = echo_model()
    batch(["a", "b"], fake.model, mode="single", output=out, progress=False)
    batch(["c"], fake.model, mode="single", output=out, progress=False)
    assert len(out.read_text().splitlines()) == 1


async def test_an_interrupted_batch_resumes_where_it_stopped(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    gate = asyncio.Event()
    two_waiting = asyncio.Event()

    async def answer(request: Request) -> str:
        if int(request.last_user_text[1:]) >= 3:
            if len(fake.requests) == 5:  # three done, two waiting inside the model
                two_waiting.set()
            await gate.wait()  # the rest hang until the batch is interrupted
        return f"<output>{request.last_user_text.upper()}</output>"

    fake = FunctionLLM(answer)
    prompts = [f"q{i}" for i in range(10)]
    settings = {"mode": "single", "concurrency": 2, "output": out, "progress": False}
    task = asyncio.create_task(abatch(prompts, fake.model, **settings))  # type: ignore[arg-type]
    await asyncio.wait_for(two_waiting.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(read_batch_file(out)) == [0, 1, 2]
    gate.set()
    items = await abatch(prompts, fake.model, resume=True, **settings)  # type: ignore[arg-type]
    assert [item.output for item in items] == [p.upper() for p in prompts]
    assert [item.resumed for item in items] == [True] * 3 + [False] * 7
    assert len(fake.requests) == 5 + 7


def test_prompt_hash_tells_conversations_apart() -> None:
    one = [{"role": "user", "content": "hi"}]
    assert prompt_hash(one) == prompt_hash([{"content": "hi", "role": "user"}])
    assert prompt_hash(one) != prompt_hash("hi ")
    assert prompt_hash("hi") != prompt_hash("Hi")


def test_progress_bar_on_stderr_or_off(capsys: pytest.CaptureFixture[str]) -> None:
    fake = echo_model()
    batch(["a", "b"], fake.model, mode="single", progress="labelled")
    err = capsys.readouterr().err
    assert "labelled" in err
    assert "2/2" in err
    batch(["a", "b"], fake.model, mode="single", progress=False)
    assert capsys.readouterr().err == ""


def test_resume_runs_again_an_item_whose_result_cannot_be_read(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    record = {"index": 0, "prompt_sha256": prompt_hash("a"), "ok": True, "result": {"x": 1}}
    out.write_text(json.dumps(record) + "\n")
    fake = echo_model()
    (item,) = batch(["a"], fake.model, mode="single", output=out, resume=True, progress=False)
    assert not item.resumed
    assert item.output == "A"


def test_what_json_cannot_hold_is_written_as_its_repr(tmp_path: Path) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    async def critic(request: object) -> object:
        from reflectkit.critics import Verdict

        return Verdict(passed=True, parsed=Opaque())

    class Parsing:
        name = "parsing"
        acritique = staticmethod(critic)

    out = tmp_path / "results.jsonl"
    fake = echo_model()
    (item,) = batch(["a"], fake.model, critic=Parsing(), output=out, progress=False)
    assert item.ok
    line = json.loads(out.read_text())
    assert line["result"]["iterations"][0]["verdict"]["parsed"] == "<opaque>"


def test_long_error_messages_are_cut_to_one_short_line() -> None:
    fake = ScriptedLLM([fail(400, "x" * 2000)])
    (item,) = batch(["a"], fake.model, mode="single", progress=False)
    assert item.error is not None
    assert len(item.error.message) <= 500
    assert item.error.message.endswith("...")


def test_reading_a_batch_file_skips_what_is_not_a_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "results.jsonl"
    good = {"index": 0, "prompt_sha256": prompt_hash("a"), "ok": False, "result": None}
    far = {"index": 7, "prompt_sha256": "x", "ok": True, "result": None}
    lines = ["", "not json", '{"no": "index"}', json.dumps(good), json.dumps(far)]
    out.write_text("\n".join(lines) + "\n")
    assert sorted(read_batch_file(out)) == [0, 7]
    fake = echo_model()
    (item,) = batch(["a"], fake.model, mode="single", output=out, resume=True, progress=False)
    assert item.output == "A"
    assert "not a batch record" in caplog.text
    assert "beyond the 1 prompts" in caplog.text


def test_prompts_must_be_iterable() -> None:
    with pytest.raises(ConfigurationError, match="iterable of prompts"):
        batch(3, progress=False)  # type: ignore[arg-type]


# Defect: a lone surrogate (half an emoji) in a prompt or a reply raised UnicodeEncodeError out
# of batch() when its line was written, after the items before it; each resume advanced one line
# and crashed again. Every item is kept: the model gets U+FFFD, the file the escaped text.

HALF = "\ud83d"  # the first half of 😀's UTF-16 pair, alone


def test_lone_surrogates_in_prompts_and_replies_lose_no_item(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"

    def answer(request: Request) -> str:
        text = request.last_user_text
        return f"<output>{HALF} {text}</output>" if "reply" in text else f"<output>{text}</output>"

    fake = FunctionLLM(answer)
    prompts: list[Any] = [f"q{i}" for i in range(20)]
    prompts[5] = f"half {HALF} an emoji"
    prompts[8] = "reply with half an emoji"
    prompts[11] = [{"role": "user", "content": f"a pair split \ud83d\ude00 and {HALF}"}]
    settings: dict[str, Any] = {"mode": "single", "progress": False, "run_log": False}
    items = batch(prompts, fake.model, output=out, concurrency=3, **settings)
    assert all(item.ok for item in items), [item.error for item in items if item.error]
    assert items[8].output == "\ufffd reply with half an emoji"  # the model layer's repair...
    sent = {request.last_user_text for request in fake.requests}
    assert "half \ufffd an emoji" in sent  # ...and what the model was sent: valid Unicode
    assert any("a pair split \U0001f600 and \ufffd" in text for text in sent)
    raw = out.read_bytes()
    raw.decode("utf-8")  # the file is valid UTF-8 text
    assert len(raw.splitlines()) == 20
    records = read_batch_file(out)
    assert records[5]["prompt"] == prompts[5]  # read back exactly as it was
    # JSON spells a split pair as the pair's escapes, which read back as the character itself.
    assert records[11]["prompt"][0]["content"] == f"a pair split \U0001f600 and {HALF}"
    calls = len(fake.requests)
    again = batch(prompts, fake.model, output=out, resume=True, **settings)
    assert all(item.resumed for item in again)  # the prompts' hashes still match
    assert len(fake.requests) == calls
    assert [item.output for item in again] == [item.output for item in items]


def test_a_result_holding_a_lone_surrogate_is_written_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    fake = echo_model()

    def critic(question: str, answer: str) -> bool | str:  # code critics' text is not repaired
        return answer == "B" or f"not quite {HALF}"

    settings: dict[str, Any] = {"critic": critic, "max_iterations": 2, "progress": False}
    items = batch(["a", "b"], fake.model, output=out, run_log=False, **settings)
    assert items[0].result is not None
    feedback = items[0].result.iterations[0].verdict
    assert feedback is not None
    assert feedback.feedback == f"not quite {HALF}"
    records = read_batch_file(out)
    assert records[0]["result"]["iterations"][0]["verdict"]["feedback"] == f"not quite {HALF}"
    again = batch(["a", "b"], fake.model, output=out, resume=True, run_log=False, **settings)
    assert [item.resumed for item in again] == [True, True]
    assert again[0].result == items[0].result


def test_an_item_that_cannot_be_written_is_recorded_as_a_failure(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    looped: dict[str, Any] = {"role": "user", "content": "hi"}
    looped["self"] = looped  # JSON cannot hold it, nor hash it
    fake = echo_model()
    items = batch(["a", [looped], "c"], fake.model, mode="single", output=out, progress=False)
    assert [item.ok for item in items] == [True, False, True]
    records = read_batch_file(out)
    assert sorted(records) == [0, 1, 2]
    assert records[1]["ok"] is False
    assert records[1]["error"]["type"] == "OutputError"
    assert "could not be written" in records[1]["error"]["message"]


def test_reading_a_batch_file_skips_lines_that_are_not_utf8(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    good = {"index": 0, "prompt_sha256": prompt_hash("a"), "ok": False, "result": None}
    odd = [b"\xff\xfe not text", b'{"index": Infinity}', b'{"index": 1e999}', b"[1, 2]", b'"x"']
    out.write_bytes(b"\n".join([*odd, json.dumps(good).encode()]) + b"\n")
    assert sorted(read_batch_file(out)) == [0]
    fake = echo_model()
    (item,) = batch(["a"], fake.model, mode="single", output=out, resume=True, progress=False)
    assert item.output == "A"


ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
"""Text with lone surrogates too (Hypothesis leaves them out unless told)."""


@settings(max_examples=300, deadline=None)
@given(st.recursive(ANY_TEXT | st.integers(), lambda inner: st.lists(inner, max_size=4)))
def test_a_line_holds_any_text_and_reads_back_as_json_spells_it(value: Any) -> None:
    line = dumps_line({"value": value})
    line.encode("utf-8")  # never fails to encode
    assert "\n" not in line
    assert json.loads(line) == json.loads(json.dumps({"value": value}))  # the ASCII spelling


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT, st.lists(st.integers(0, 40), max_size=5))
def test_text_repaired_whole_or_in_pieces_is_valid_unicode(text: str, cuts: list[int]) -> None:
    repaired = repair_text(text)
    repaired.encode("utf-8")
    if not any("\ud800" <= c <= "\udfff" for c in text):
        assert repaired is text
    bounds = [0, *sorted(set(cuts)), len(text)]
    pieces = TextRepair()
    streamed = "".join(pieces.feed(text[a:b]) for a, b in itertools.pairwise(bounds))
    assert streamed + pieces.flush() == repaired
    nested = repair_surrogates({text: [text, (text,)]})
    assert nested == {repaired: [repaired, (repaired,)]}
