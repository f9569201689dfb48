"""The model layer: the client that every model call goes through.

Everything reflectkit sends to a model goes through :class:`ModelClient`, which

* loads LiteLLM lazily, with its price map read from the package (no network at import) and
  reflectkit's in-process providers (the test fakes, the local model) registered as LiteLLM
  custom providers, so their calls take LiteLLM's real code path
  (:mod:`reflectkit.models.registry`): all but the embedded model's, which it calls directly,
  because that path needs nothing from LiteLLM and importing LiteLLM costs 2.5-3.5 s of a
  first answer that takes about one (:mod:`reflectkit.models.direct`, docs/local-model.md);
* checks a model before its first call: known provider, credentials present, not blocked;
* retries only retryable failures (429 with its Retry-After, 5xx, timeouts, connection errors)
  with backoff and a cap. LiteLLM's own ``num_retries`` is not used: it stacks two retry layers
  (2N+1 calls) and also retries context-window errors;
* maps provider errors into :mod:`reflectkit.errors`, secrets redacted;
* reports usage and cost per call;
* hands back the tool calls a model answers with (``tools=``/``tool_choice=`` among the params),
  in OpenAI's format, from whole and streamed replies alike (:mod:`reflectkit.models.replies`
  reads the replies; its public names are this module's too).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlparse

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from reflectkit.config import RetryPolicy
from reflectkit.errors import (
    MissingCredentialsError,
    ModelRequestsBlockedError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    ReflectkitError,
    UnknownModelError,
)
from reflectkit.models.direct import aclose, direct_backend, send_direct
from reflectkit.models.provider import Message, ProviderFailure, model_requests_allowed
from reflectkit.models.provider_errors import failure_error, map_error, own_error
from reflectkit.models.registry import load_litellm as _load
from reflectkit.models.registry import register_provider, registered_backend
from reflectkit.models.replies import (
    Completion,
    StreamDelta,
    ToolCallAssembly,
    delta_text,
    first_choice,
    token_count,
    tool_call,
)
from reflectkit.redaction import redact
from reflectkit.stores.jsonl import TextRepair, repair_surrogates, repair_text
from reflectkit.usage import Usage

__all__ = [
    "Completion",
    "ModelClient",
    "StreamDelta",
    "check_model",
    "delta_text",
    "first_choice",
    "is_loopback",
    "register_provider",
    "supports_response_schema",
    "token_count",
    "without_tools",
]

logger = logging.getLogger(__name__)


_UNKNOWN = object()

_TOOL_PARAMS = ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call")
"""Call parameters that offer the model tools."""


def without_tools(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` minus the tool parameters: for calls that must answer in text (critiques)."""
    return {k: v for k, v in params.items() if k not in _TOOL_PARAMS}


def supports_response_schema(model: str) -> bool:
    """Whether LiteLLM says ``model``'s provider takes a JSON Schema as ``response_format``
    (structured output). Never for the embedded model, which LiteLLM does not serve."""
    if direct_backend(model) is not None:
        return False
    litellm = _load()
    try:
        return bool(litellm.supports_response_schema(model=model))
    except Exception:  # a model LiteLLM does not know: not as far as it knows
        return False


def is_loopback(url: Any) -> bool:
    """Whether ``url`` (an API base) points at this machine."""
    if not isinstance(url, str) or not url:
        return False
    host = urlparse(url if "//" in url else f"//{url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _provider_of(litellm: Any, model: str, params: Mapping[str, Any]) -> str:
    try:
        _, provider, _, _ = litellm.get_llm_provider(model=model, api_base=params.get("api_base"))
    except Exception as error:
        raise UnknownModelError(model, redact(str(error).splitlines()[0])) from None
    return str(provider)


def check_model(model: str, params: Mapping[str, Any]) -> None:
    """Fail before any call if ``model`` cannot be used: unknown, blocked, or missing its key."""
    direct = direct_backend(model)
    if direct is not None:
        direct[0].check(direct[1])
        if direct[0].local:
            return
    litellm = _load()
    provider = _provider_of(litellm, model, params)
    backend = registered_backend(provider)
    if backend is not None:
        backend.check(model.split("/", 1)[1] if "/" in model else model)
        if backend.local:
            return
    loopback = is_loopback(params.get("api_base") or params.get("base_url"))
    if not model_requests_allowed() and not loopback:
        raise ModelRequestsBlockedError(model)
    if backend is not None or "api_key" in params or loopback:
        return
    try:
        missing = litellm.validate_environment(model=model).get("missing_keys", [])
    except Exception:  # a provider LiteLLM cannot validate: let the call itself tell
        return
    keys = [k for k in missing if str(k).endswith(("_API_KEY", "_TOKEN"))]
    if keys:
        raise MissingCredentialsError(model, keys)


class ModelClient:
    """Calls one model through LiteLLM, with reflectkit's retries and error mapping.

    ``params`` are passed to every call (``temperature``, ``api_base`` ...). The client keeps no
    history: each call's :class:`Completion` carries its own usage for the caller to add up.
    """

    def __init__(
        self,
        model: str,
        params: Mapping[str, Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        self.model = model
        self.params = dict(params or {})
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._checked = False
        self._prices: tuple[float, float] | object | None = _UNKNOWN
        self._secrets = [str(v) for k, v in self.params.items() if "key" in k.lower() and v]
        self._direct = direct_backend(model)

    def check(self) -> None:
        """Run :func:`check_model` once for this client."""
        if not self._checked:
            check_model(self.model, self.params)
            self._checked = True

    async def acheck(self) -> None:
        """:meth:`check`, run in a worker thread the first time: it may import LiteLLM and read
        a model file, which must not hold up the event loop (an ASGI server's other requests
        wait meanwhile, and LangGraph's server refuses blocking calls on its loop)."""
        if not self._checked:
            await asyncio.to_thread(self.check)

    def _kwargs(self, messages: list[Message], stream: bool) -> dict[str, Any]:
        kwargs = {**self.params, "model": self.model, "messages": messages, "max_retries": 0}
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        if stream:
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
        return kwargs

    def _prepared(
        self, messages: list[Message], stream: bool, overrides: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        kwargs = self._kwargs(messages, stream)
        if overrides:
            kwargs.update(overrides)
        if kwargs.get("tools"):
            # Any call with tools makes LiteLLM import its MCP gateway, which needs the optional
            # `mcp` package; reflectkit never offers MCP tools, so it skips that path.
            kwargs["_skip_mcp_handler"] = True
        # A lone surrogate (half an emoji) cannot be encoded for the wire: sent as U+FFFD.
        repaired: dict[str, Any] = repair_surrogates(kwargs)
        return repaired

    def _retryable(self, error: BaseException) -> bool:
        if not isinstance(error, ProviderError) or not error.retryable:
            return False
        after = getattr(error, "retry_after", None)
        return after is None or after <= self.retry.max_retry_after

    def _wait(self, failed_attempt: int, error: BaseException | None) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` failed with ``error``."""
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            return float(error.retry_after)
        # Exponential backoff with up to 50% jitter, so clients that failed together spread.
        base = self.retry.initial_wait * 2 ** (failed_attempt - 1)
        return float(min(self.retry.max_wait, base * (1 + random.random() / 2)))

    def _log_retry(self, failed_attempt: int, error: BaseException | None) -> None:
        logger.warning("retrying %s after attempt %d failed: %s", self.model, failed_attempt, error)

    def _retrying(self) -> AsyncRetrying:
        """Tenacity's loop for attempts 2..max_attempts (attempt 1 has already failed)."""

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return self._wait(state.attempt_number + 1, error)

        def log(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            self._log_retry(state.attempt_number + 1, error)

        return AsyncRetrying(
            stop=stop_after_attempt(self.retry.max_attempts - 1),
            wait=wait,
            retry=retry_if_exception(self._retryable),
            before_sleep=log,
            reraise=True,
        )

    def _mapped(self, error: Exception) -> ReflectkitError:
        """The reflectkit error for a failed call: a backend's ProviderFailure by its status, a
        reflectkit error a backend raised as it is, anything else from LiteLLM by its class."""
        if isinstance(error, ProviderFailure):
            return failure_error(error, self.model, self._secrets)
        own = own_error(error)
        if own is not None:
            return own
        if self._direct is not None:  # a fault inside a built-in backend: no status to map
            text = redact(str(error), self._secrets).strip().splitlines()
            detail = text[0] if text else type(error).__name__
            return ProviderError(f"{self.model}: {detail}", model=self.model)
        return map_error(_load(), error, self.model, self._secrets)

    async def _send(self, kwargs: dict[str, Any]) -> Any:
        """One request: to the built-in backend directly, or through LiteLLM."""
        if self._direct is None:
            return await _load().acompletion(**kwargs)
        return await send_direct(*self._direct, kwargs)

    async def _call(self, kwargs: dict[str, Any]) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._send(kwargs)
        except TimeoutError:
            raise ProviderTimeoutError(
                f"{self.model}: no answer within {self.timeout} s", model=self.model
            ) from None
        except ProviderError:
            raise
        except Exception as error:
            raise self._mapped(error) from None
        if not kwargs.get("stream"):
            first_choice(response, self.model)  # a malformed reply fails here, so it is retried
        return response

    async def _call_with_retries(self, kwargs: dict[str, Any]) -> Any:
        """Attempt 1 runs bare (the common case pays nothing for retries); tenacity takes over
        only once it has failed with a retryable error."""
        try:
            return await self._call(kwargs)
        except ProviderError as error:
            if self.retry.max_attempts < 2 or not self._retryable(error):
                raise
            first_failure = error
        self._log_retry(1, first_failure)
        await asyncio.sleep(self._wait(1, first_failure))
        async for attempt in self._retrying():
            with attempt:
                return await self._call(kwargs)
        raise AssertionError("unreachable: tenacity reraises the last failure")

    def _price(self) -> tuple[float, float] | None:
        """(input, output) USD per token from LiteLLM's price map, looked up once per client.

        LiteLLM's own ``completion_cost`` re-resolves the model on every call (hundreds of µs);
        the per-token prices it resolves to are what this multiplies out.
        """
        if self._prices is _UNKNOWN and self._direct is not None:
            self._prices = None  # not in LiteLLM's price map, which is not loaded for it
        if self._prices is _UNKNOWN:
            try:
                info = _load().get_model_info(model=self.model)
                prices = (info.get("input_cost_per_token"), info.get("output_cost_per_token"))
            except Exception:
                prices = (None, None)
            if prices[0] is None and prices[1] is None:
                self._prices = None
            else:
                self._prices = (float(prices[0] or 0.0), float(prices[1] or 0.0))
        return self._prices if isinstance(self._prices, tuple) else None

    def _usage(self, raw: Any) -> Usage:
        prompt = token_count(raw, "prompt_tokens")
        completion = token_count(raw, "completion_tokens")
        price = self._price()
        cost = prompt * price[0] + completion * price[1] if price is not None else 0.0
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            calls=1,
            cost_usd=cost,
            unpriced_calls=0 if price is not None else 1,
        )

    async def complete(
        self, messages: list[Message], overrides: Mapping[str, Any] | None = None
    ) -> Completion:
        """One call, retried as the policy allows; raises a ProviderError when it gives up.

        ``overrides`` replace this client's params for this call only (e.g. ``max_tokens``).
        """
        await self.acheck()
        kwargs = self._prepared(messages, False, overrides)
        response = await self._call_with_retries(kwargs)
        choice, message = first_choice(response, self.model)
        reasoning = getattr(message, "reasoning_content", None)
        calls = getattr(message, "tool_calls", None) or ()
        # What a model wrote reaches files, logs and HTTP bodies: valid Unicode only (U+FFFD).
        return Completion(
            text=repair_text(message.content or ""),
            reasoning=repair_text(reasoning) if isinstance(reasoning, str) else None,
            usage=self._usage(getattr(response, "usage", None)),
            model=self.model,
            finish_reason=getattr(choice, "finish_reason", None),
            tool_calls=tuple(repair_surrogates(tool_call(c)) for c in calls),
        )

    async def stream(
        self, messages: list[Message], overrides: Mapping[str, Any] | None = None
    ) -> AsyncIterator[StreamDelta | Completion]:
        """Stream one call: :class:`StreamDelta` pieces, then the :class:`Completion`.

        Opening the stream is retried like :meth:`complete`; a failure after the first piece is
        raised as it comes, since the caller has already seen part of the reply.
        """
        await self.acheck()
        kwargs = self._prepared(messages, True, overrides)
        response = await self._call_with_retries(kwargs)
        tool_calls = ToolCallAssembly()
        text: list[str] = []
        reasoning: list[str] = []
        usage_raw: Any = None
        finish: str | None = None
        repair = (TextRepair(), TextRepair())  # a surrogate pair may be split between chunks
        try:
            async for chunk in response:
                usage_raw = getattr(chunk, "usage", None) or usage_raw
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                thought = getattr(delta, "reasoning_content", None)
                piece = StreamDelta(
                    text=repair[0].feed(delta_text(delta, self.model)),
                    reasoning=repair[1].feed(thought if isinstance(thought, str) else ""),
                )
                finish = chunk.choices[0].finish_reason or finish
                tool_calls.add(getattr(delta, "tool_calls", None))
                if piece.text or piece.reasoning:
                    text.append(piece.text)
                    reasoning.append(piece.reasoning)
                    yield piece
        except ProviderError:
            raise
        except Exception as error:
            raise self._mapped(error) from None
        finally:
            if self._direct is not None:  # a reader that stops early stops the generation now
                await aclose(response)
        last = StreamDelta(text=repair[0].flush(), reasoning=repair[1].flush())
        if last.text or last.reasoning:
            text.append(last.text)
            reasoning.append(last.reasoning)
            yield last
        yield Completion(
            text="".join(text),
            reasoning="".join(reasoning) or None,
            usage=self._usage(usage_raw),
            model=self.model,
            finish_reason=finish,
            tool_calls=tuple(repair_surrogates(call) for call in tool_calls.calls()),
        )
