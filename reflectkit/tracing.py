"""OpenTelemetry spans for runs and steps, when the ``otel`` extra is installed.

A run is one ``reflectkit.run`` span; each step of the graph (generate, critique, revise,
finalize) is a child span ``reflectkit.<node>``. Attributes are names and numbers only (model,
mode, iteration, tokens, calls, cost, stop reason, run and thread ids), never prompts, answers or
settings, so nothing the user sends and no secret reaches a trace backend. Exceptions are
recorded on the span that raised them.

Without ``opentelemetry-api`` installed everything here is a no-op and the graph's nodes are not
even wrapped. With it installed but no SDK configured, OpenTelemetry's own no-op tracer answers,
for a few microseconds per step. Configure a ``TracerProvider`` as usual (``opentelemetry-sdk``,
an exporter) and the spans appear.

Why the run span is handed to the nodes explicitly (:data:`PARENT_KEY` in the graph's
configurable) instead of being made "current": the run is an async generator whose steps may
resume in different tasks (the sync API drives it from a background loop), and OpenTelemetry's
context tokens must be detached in the context that attached them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from reflectkit.usage import Usage

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "PARENT_KEY",
    "TRACER_NAME",
    "available",
    "end_run",
    "start_run",
    "traced_node",
    "use_tracer_provider",
]

TRACER_NAME = "reflectkit"
"""The name of reflectkit's OpenTelemetry tracer (its instrumentation scope)."""
PARENT_KEY = "reflectkit_trace_parent"
"""Key in ``config["configurable"]`` holding the run's span, the parent of the step spans."""

Node = Callable[[Any, RunnableConfig], Awaitable[Any]]


_provider: Any = None


@functools.cache
def _tracer() -> Tracer | None:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer(TRACER_NAME, tracer_provider=_provider)


def use_tracer_provider(provider: Any) -> Any:
    """Send reflectkit's spans to ``provider`` (None: the global one, the default) and return
    the provider used before. For applications whose global provider is set elsewhere, and for
    tests: OpenTelemetry lets the global provider be set only once per process."""
    global _provider
    previous, _provider = _provider, provider
    _tracer.cache_clear()
    return previous


def available() -> bool:
    """Whether ``opentelemetry-api`` is importable (the ``otel`` extra)."""
    return _tracer() is not None


def _set_usage(span: Span, usage: Usage) -> None:
    span.set_attribute("reflectkit.prompt_tokens", usage.prompt_tokens)
    span.set_attribute("reflectkit.completion_tokens", usage.completion_tokens)
    span.set_attribute("reflectkit.calls", usage.calls)
    span.set_attribute("reflectkit.cost_usd", usage.cost_usd)


def start_run(attributes: Mapping[str, str | int]) -> Span | None:
    """Start the span of a run, a child of whatever span is current; None without the extra.
    The caller ends it with :func:`end_run`."""
    tracer = _tracer()
    if tracer is None:
        return None
    return tracer.start_span(
        "reflectkit.run", attributes={f"reflectkit.{k}": v for k, v in attributes.items()}
    )


def end_run(
    span: Span | None,
    *,
    stop_reason: str | None = None,
    usage: Usage | None = None,
    error: BaseException | None = None,
) -> None:
    """End a run's span with how it ended: its stop reason and usage, or the error."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if stop_reason is not None:
        span.set_attribute("reflectkit.stop_reason", stop_reason)
    if usage is not None:
        _set_usage(span, usage)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


def _iteration(name: str, state: Mapping[str, Any]) -> int:
    iterations = state.get("iterations") or []
    if not iterations:
        return 1
    number: int = iterations[-1].number
    return number + 1 if name == "revise" else number


@contextmanager
def _step_span(name: str, state: Mapping[str, Any], config: RunnableConfig) -> Iterator[Span]:
    from opentelemetry import trace

    tracer = _tracer()
    assert tracer is not None
    parent = (config.get("configurable") or {}).get(PARENT_KEY)
    context = trace.set_span_in_context(parent) if parent is not None else None
    attributes: dict[str, str | int] = {
        "reflectkit.node": name,
        "reflectkit.iteration": _iteration(name, state),
    }
    with tracer.start_as_current_span(
        f"reflectkit.{name}", context=context, attributes=attributes
    ) as span:
        yield span


def traced_node(name: str, node: Node) -> Node:
    """``node`` inside a ``reflectkit.<name>`` span that records what the step cost (the run's
    usage after the step minus before it); ``node`` itself when OpenTelemetry is missing."""
    if not available():
        return node

    @functools.wraps(node)
    async def wrapper(state: Any, config: RunnableConfig) -> Any:
        with _step_span(name, state, config) as span:
            out = await node(state, config)
            update = out.update if isinstance(out, Command) else out
            after = update.get("usage") if isinstance(update, Mapping) else None
            if isinstance(after, Usage):
                before = state.get("usage") or Usage()
                _set_usage(
                    span,
                    Usage(
                        prompt_tokens=after.prompt_tokens - before.prompt_tokens,
                        completion_tokens=after.completion_tokens - before.completion_tokens,
                        calls=after.calls - before.calls,
                        cost_usd=after.cost_usd - before.cost_usd,
                    ),
                )
            stop = update.get("stop_reason") if isinstance(update, Mapping) else None
            if stop is not None:
                span.set_attribute("reflectkit.stop_reason", str(getattr(stop, "value", stop)))
            return out

    return wrapper
