"""Observability: LangChain callbacks see the graph's steps (what LangSmith traces), OpenTelemetry
spans per run and step carry numbers and names but no text or secret, and the library logs
through one logger per module and never prints."""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import AsyncCallbackHandler, BaseCallbackHandler
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import reflectkit as rk
from reflectkit import tracing
from reflectkit.testing import ScriptedLLM
from tests.conftest import QUESTION, verdict

PACKAGE = Path(rk.__file__).parent


class Chains(BaseCallbackHandler):
    """Records the chain runs LangChain reports: name, run id and parent."""

    def __init__(self) -> None:
        self.started: list[tuple[str, UUID, UUID | None]] = []
        self.ended: list[UUID] = []
        self.errors: list[BaseException] = []

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.started.append((kwargs.get("name") or "", run_id, parent_run_id))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.ended.append(run_id)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.errors.append(error)


async def test_langchain_callbacks_see_the_run_and_every_step() -> None:
    fake = ScriptedLLM(
        ["<output>5</output>", verdict(False, "no"), "<output>4</output>", verdict(True)]
    )
    handler = Chains()
    result = await rk.areflect(QUESTION, fake.model, callbacks=[handler])
    assert result.output == "4"
    names = [name for name, _, _ in handler.started]
    assert names[0] == "reflectkit"
    steps = [n for n in names if n in {"generate", "critique", "revise", "finalize"}]
    assert steps == ["generate", "critique", "revise", "critique", "finalize"]
    root = handler.started[0][1]
    parents = {parent for name, _, parent in handler.started if name in steps}
    assert parents == {root}  # the steps nest under the run, as LangSmith shows them
    assert set(handler.ended) >= {run_id for _, run_id, _ in handler.started}


async def test_async_callbacks_see_a_failed_step() -> None:
    class Errors(AsyncCallbackHandler):
        def __init__(self) -> None:
            self.errors: list[BaseException] = []

        async def on_chain_error(self, error: BaseException, **kwargs: Any) -> None:
            self.errors.append(error)

    handler = Errors()
    fake = ScriptedLLM(["<output>5</output>"])  # the critique call finds no reply left
    with pytest.raises(rk.RunError):
        await rk.areflect(QUESTION, fake.model, callbacks=[handler])
    assert handler.errors
    assert all(isinstance(e, rk.RunError) for e in handler.errors)


def test_sync_stream_passes_callbacks() -> None:
    fake = ScriptedLLM(["<output>4</output>"])
    handler = Chains()
    events = list(rk.Reflector(fake.model, mode="single").stream(QUESTION, callbacks=[handler]))
    assert isinstance(events[-1], rk.ResultEvent)
    assert [n for n, _, _ in handler.started][:2] == ["reflectkit", "generate"]


@pytest.fixture(scope="module")
def provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    before = tracing.use_tracer_provider(provider)
    yield provider
    tracing.use_tracer_provider(before)
    provider.shutdown()


@pytest.fixture
def spans(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    exporter.shutdown()  # the processor then drops what later tests produce


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_otel_spans_per_run_and_step(spans: InMemorySpanExporter) -> None:
    fake = ScriptedLLM(
        ["<output>5</output>", verdict(False, "no"), "<output>4</output>", verdict(True)]
    )
    result = await rk.areflect(QUESTION, fake.model, api_key="sk-otel-secret-123456789")
    finished = spans.get_finished_spans()
    (run,) = [s for s in finished if s.name == "reflectkit.run"]
    steps = [s for s in finished if s.name != "reflectkit.run"]
    assert [s.name for s in steps] == [
        "reflectkit.generate",
        "reflectkit.critique",
        "reflectkit.revise",
        "reflectkit.critique",
        "reflectkit.finalize",
    ]
    assert [_attributes(s)["reflectkit.iteration"] for s in steps] == [1, 1, 2, 2, 2]
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in steps)
    assert all(s.context.trace_id == run.context.trace_id for s in steps)
    attrs = _attributes(run)
    assert attrs["reflectkit.model"] == fake.model
    assert attrs["reflectkit.stop_reason"] == "passed"
    assert attrs["reflectkit.calls"] == 4
    assert attrs["reflectkit.run_id"] == result.run_id
    assert sum(_attributes(s).get("reflectkit.calls", 0) for s in steps) == 4
    assert _attributes(steps[0])["reflectkit.completion_tokens"] > 0
    everything = repr([(s.name, _attributes(s), s.events) for s in finished])
    assert "sk-otel-secret" not in everything
    assert QUESTION not in everything  # prompts and answers stay out of traces


async def test_otel_records_a_failed_run(spans: InMemorySpanExporter) -> None:
    from opentelemetry.trace import StatusCode

    fake = ScriptedLLM(["<output>5</output>"])
    with pytest.raises(rk.RunError):
        await rk.areflect(QUESTION, fake.model)
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert by_name["reflectkit.run"].status.status_code is StatusCode.ERROR
    assert by_name["reflectkit.critique"].status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in by_name["reflectkit.run"].events)


async def test_a_run_inside_a_users_span_is_its_child(
    provider: TracerProvider, spans: InMemorySpanExporter
) -> None:
    fake = ScriptedLLM(["<output>4</output>"])
    with provider.get_tracer("app").start_as_current_span("request") as outer:
        await rk.areflect(QUESTION, fake.model, mode="single")
    (run,) = [s for s in spans.get_finished_spans() if s.name == "reflectkit.run"]
    assert run.parent is not None
    assert run.parent.span_id == outer.get_span_context().span_id


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "templates" not in p.parts)


def test_the_library_never_prints() -> None:
    for path in _modules():
        if path.name == "cli.py":
            continue  # the command line writes to its terminal through click
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                pytest.fail(f"{path.relative_to(PACKAGE)}:{node.lineno} calls print()")


def test_modules_log_through_their_own_logger() -> None:
    for path in _modules():
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                target = node.func.value
                if getattr(target, "id", None) == "logging" and node.func.attr in {
                    "debug",
                    "info",
                    "warning",
                    "error",
                    "exception",
                    "critical",
                    "log",
                }:
                    pytest.fail(f"{path.name}:{node.lineno} logs on the root logger")
                if node.func.attr == "getLogger" and node.args:
                    arg = node.args[0]
                    assert getattr(arg, "id", None) == "__name__", f"{path.name}:{node.lineno}"


def test_the_package_logger_is_silent_unless_configured(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("reflectkit")
    assert any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    fake = ScriptedLLM(["<output>4</output>"])
    with caplog.at_level(logging.DEBUG, logger="reflectkit"):
        rk.reflect(QUESTION, fake.model, mode="single")
    assert all(r.name.startswith("reflectkit.") for r in caplog.records)
