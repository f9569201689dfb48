"""OpenAI-compatible upstreams called with the ``openai`` SDK, for the proxy's plain calls.

A request the proxy passes through unchanged to ``openai/<name>`` at an ``api_base`` (vLLM, a
llama.cpp server, another gateway) needs nothing LiteLLM adds: no provider translation, no
price lookup, no logging callbacks. Through LiteLLM such a call costs the proxy about 16 ms at
p50 streamed (7 ms whole); through the SDK that LiteLLM itself wraps, about 3.5 ms
(benchmarks/proxy_load.py, docs/server.md). Every other model, and every call of the reflection
loop, still goes through LiteLLM.

The call keeps what the proxy's clients rely on: the same keyword arguments (LiteLLM's own ones
are dropped, anything the SDK does not name travels in ``extra_body`` as LiteLLM would send it),
the same response objects (the SDK's are the ones LiteLLM's are modelled on), and errors mapped
into reflectkit's tree by :func:`~reflectkit.models.provider_errors.map_sdk_error`.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Mapping
from functools import cache
from typing import Any

__all__ = ["SdkUpstream", "sdk_eligible"]

_LITELLM_ONLY = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "organization",
        "max_retries",
        "num_retries",
        "timeout",
        "custom_llm_provider",
        "drop_params",
        "input_cost_per_token",
        "output_cost_per_token",
        "_skip_mcp_handler",
    }
)
"""Call arguments meant for LiteLLM or for the SDK's client, never for the request body."""

_PLACEHOLDER_KEY = "no-key"
"""What the SDK sends when neither the settings nor OPENAI_API_KEY give a key: it refuses to
start without one, and servers on an ``api_base`` commonly need none (as LiteLLM calls them)."""


def sdk_eligible(model: str, params: Mapping[str, Any]) -> bool:
    """Whether a call to ``model`` with ``params`` can go straight to the SDK: an ``openai/``
    model string with an ``api_base`` (or ``base_url``) that says where the server is."""
    base = params.get("api_base") or params.get("base_url")
    return model.startswith("openai/") and isinstance(base, str) and bool(base.strip())


@cache
def _sdk_arguments() -> frozenset[str]:
    """The keyword arguments the SDK's ``chat.completions.create`` names."""
    from openai.resources.chat.completions import AsyncCompletions

    return frozenset(inspect.signature(AsyncCompletions.create).parameters) - {"self"}


class SdkUpstream:
    """One OpenAI-compatible server, reached through one ``AsyncOpenAI`` client per event loop
    (its connection pool belongs to the loop that opened it)."""

    def __init__(self, model: str, params: Mapping[str, Any]) -> None:
        self.name = model.split("/", 1)[1]
        base = params.get("api_base") or params.get("base_url")
        self._base = str(base).strip()
        key = params.get("api_key") or os.environ.get("OPENAI_API_KEY") or _PLACEHOLDER_KEY
        self._key = str(key)
        organization = params.get("organization")
        self._organization = str(organization) if organization else None
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}

    @staticmethod
    def load() -> None:
        """Import the SDK (about half a second the first time): call it off the event loop."""
        _sdk_arguments()

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            from openai import AsyncOpenAI

            for old in [seen for seen in self._clients if seen.is_closed()]:
                del self._clients[old]  # a finished loop's pool cannot be used again
            client = AsyncOpenAI(
                api_key=self._key,
                organization=self._organization,
                base_url=self._base,
                max_retries=0,  # reflectkit's retry policy is the only one
            )
            self._clients[loop] = client
        return client

    def arguments(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """LiteLLM-style call arguments as the SDK takes them."""
        known = _sdk_arguments()
        sent: dict[str, Any] = {}
        extra: dict[str, Any] = dict(kwargs.get("extra_body") or {})
        for key, value in kwargs.items():
            if key in _LITELLM_ONLY or key == "extra_body":
                continue
            if key in known:
                sent[key] = value
            else:
                extra[key] = value
        sent["model"] = self.name
        if kwargs.get("timeout") is not None:
            sent["timeout"] = kwargs["timeout"]
        if extra:
            sent["extra_body"] = extra
        return sent

    async def send(self, kwargs: Mapping[str, Any]) -> Any:
        """One request: the SDK's ``ChatCompletion``, or with ``stream`` its ``AsyncStream``."""
        return await self._client().chat.completions.create(**self.arguments(kwargs))

    async def aclose(self) -> None:
        """Close the connection pool of this loop's client."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()
