"""Plain calls: a request for a bare model goes to the upstream once, as it came.

The call still takes reflectkit's model layer (:class:`~reflectkit.models.llm.ModelClient`): the
model is checked before the first call, retryable failures are retried with backoff, and errors are
mapped into reflectkit's tree with secrets redacted. What comes back is the provider's response
object itself, so tool calls, finish reasons and provider reasoning survive: LiteLLM's, or, for an
OpenAI-compatible server at an ``api_base``, the ``openai`` SDK's, called directly because LiteLLM
would add several times the SDK's own cost per call (:mod:`reflectkit.models.compatible`).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from typing import Any

from reflectkit.errors import ProviderError, ReflectkitError
from reflectkit.models.compatible import SdkUpstream, sdk_eligible
from reflectkit.models.llm import ModelClient, delta_text, first_choice, token_count
from reflectkit.models.provider_errors import map_sdk_error
from reflectkit.models.replies import malformed
from reflectkit.server.protocol import Answer, Delta, Usage
from reflectkit.stores.jsonl import TextRepair, repair_surrogates, repair_text

__all__ = ["UpstreamClient", "answer_of", "stream_of"]

Message = dict[str, Any]


class UpstreamClient(ModelClient):
    """A model client that returns the provider's raw response instead of reflectkit's summary."""

    @functools.cached_property
    def _sdk(self) -> SdkUpstream | None:
        """The SDK client of an OpenAI-compatible upstream; None: the call goes through
        LiteLLM (or, for the embedded model, straight to it)."""
        eligible = self._direct is None and sdk_eligible(self.model, self.params)
        return SdkUpstream(self.model, self.params) if eligible else None

    def check(self) -> None:
        """The model's check, and the SDK's import when the calls go through it."""
        super().check()
        if self._sdk is not None:
            self._sdk.load()

    async def _send(self, kwargs: dict[str, Any]) -> Any:
        if self._sdk is None:
            return await super()._send(kwargs)
        return await self._sdk.send(kwargs)

    def _mapped(self, error: Exception) -> ReflectkitError:
        if self._sdk is None:
            return super()._mapped(error)
        import openai  # loaded by check(), before any call

        return map_sdk_error(openai, error, self.model, self._secrets)

    async def aclose(self) -> None:
        """Close the SDK client's connections on this event loop (nothing for LiteLLM's)."""
        if self._sdk is not None:
            await self._sdk.aclose()

    async def open(self, messages: list[Message], params: Mapping[str, Any], stream: bool) -> Any:
        """Make the call (retried as the policy allows) and return LiteLLM's response: a
        ``ModelResponse``, or, with ``stream``, the stream to iterate."""
        await self.acheck()  # off the event loop: it may import LiteLLM
        kwargs = self._prepared(messages, stream, params)
        if self._direct is None and self._sdk is None:
            # LiteLLM prices every call for its logging and re-resolves the model each time to
            # do it (milliseconds per call, more for a model its price map lacks). The proxy
            # never reads that cost, so LiteLLM gets the per-token prices resolved once per
            # client (0 for an unpriced model): the same figure, without the lookup.
            price = self._price() or (0.0, 0.0)
            kwargs.setdefault("input_cost_per_token", price[0])
            kwargs.setdefault("output_cost_per_token", price[1])
        return await self._call_with_retries(kwargs)

    async def chunks(self, response: Any) -> AsyncIterator[Any]:
        """The stream's chunks; a failure midway is raised as reflectkit's error."""
        try:
            async for chunk in response:
                choices = getattr(chunk, "choices", ())
                if choices is not None and not isinstance(choices, list):
                    raise malformed(self.model, "a streamed piece has no list of choices")
                if choices and getattr(choices[0], "delta", None) is None:
                    raise malformed(self.model, "a streamed choice has no delta")
                yield chunk
        except ProviderError:
            raise
        except Exception as error:
            raise self._mapped(error) from None
        finally:
            if self._sdk is not None:  # a reader that stops early frees the connection now
                await response.close()


def _tool_call(call: Any, index: int | None = None) -> dict[str, Any]:
    function = getattr(call, "function", None)
    body: dict[str, Any] = {}
    if index is not None:
        given = getattr(call, "index", None)
        body["index"] = given if isinstance(given, int) else index
    if getattr(call, "id", None):
        body["id"] = call.id
        body["type"] = getattr(call, "type", None) or "function"
    if function is not None:
        parts = {
            "name": getattr(function, "name", None),
            "arguments": getattr(function, "arguments", None),
        }
        body["function"] = {k: v for k, v in parts.items() if v is not None}
    return body


def _usage(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    return Usage(token_count(raw, "prompt_tokens"), token_count(raw, "completion_tokens"))


def _reasoning(holder: Any) -> str:
    value = getattr(holder, "reasoning_content", None)
    return value if isinstance(value, str) else ""


def answer_of(response: Any, include_reasoning: bool, model: str) -> Answer:
    """The whole reply of a non-streamed call; a malformed one (no choices, no message, content
    that is not text) is a ProviderServerError, which the client gets as a 502."""
    choice, message = first_choice(response, model)
    calls = [_tool_call(call) for call in (getattr(message, "tool_calls", None) or [])]
    content = message.content
    # What the upstream wrote goes to the client as valid Unicode: a lone surrogate is U+FFFD.
    return Answer(
        content=repair_text(content) if content is not None else None,
        reasoning=(repair_text(_reasoning(message)) or None) if include_reasoning else None,
        tool_calls=repair_surrogates(calls) or None,
        finish_reason=choice.finish_reason or "stop",
        usage=_usage(getattr(response, "usage", None)),
    )


async def stream_of(
    client: UpstreamClient, response: Any, include_reasoning: bool
) -> AsyncIterator[Delta | Answer]:
    """A streamed reply as deltas, then an :class:`Answer` with its finish reason and usage."""
    finish: str | None = None
    usage: Any = None
    content, reasoning = TextRepair(), TextRepair()  # a surrogate pair split between chunks
    async for chunk in client.chunks(response):
        usage = getattr(chunk, "usage", None) or usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        delta = choice.delta
        if delta is None:
            continue
        calls = getattr(delta, "tool_calls", None) or []
        piece = Delta(
            content=content.feed(delta_text(delta, client.model)),
            reasoning=reasoning.feed(_reasoning(delta)) if include_reasoning else "",
            tool_calls=repair_surrogates([_tool_call(call, i) for i, call in enumerate(calls)])
            or None,
        )
        if piece.content or piece.reasoning or piece.tool_calls:
            yield piece
    rest = Delta(content=content.flush(), reasoning=reasoning.flush())
    if rest.content or rest.reasoning:
        yield rest
    yield Answer(content=None, finish_reason=finish or "stop", usage=_usage(usage))
