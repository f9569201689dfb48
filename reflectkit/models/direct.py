"""The direct path: built-in backends that :class:`~reflectkit.models.llm.ModelClient` calls
without LiteLLM.

The embedded model's calls need nothing from LiteLLM, and importing LiteLLM costs 2.5-3.5 s of
a first answer that takes about one (see docs/local-model.md), so the client sends them straight
to the backend. Its replies are shaped as LiteLLM shapes them (:mod:`reflectkit.models.adapter`),
so the client reads both paths with one code. The backends named here stay registered in LiteLLM
too (:mod:`reflectkit.models.registry`), for anyone who calls litellm with their model strings.
Nothing here imports LiteLLM.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import Any

from reflectkit.models.adapter import direct_chunk, direct_reply
from reflectkit.models.provider import ProviderBackend

__all__ = ["aclose", "direct_backend", "send_direct"]

# Built-in providers that ModelClient calls without LiteLLM.
_DIRECT_PROVIDERS = {"local": "reflectkit.models.local:BACKEND"}
# Call arguments that are not the backend's parameters (LiteLLM keeps them out of its
# ``optional_params`` as well).
_CALL_ARGUMENTS = frozenset({"model", "messages", "stream", "stream_options", "timeout"})


def direct_backend(model: str) -> tuple[ProviderBackend, str] | None:
    """The built-in backend ``model`` names and the model name it takes, when that backend is
    called without LiteLLM (see ``_DIRECT_PROVIDERS``); None for every other model."""
    provider, slash, name = model.partition("/")
    target = _DIRECT_PROVIDERS.get(provider) if slash else None
    if target is None:
        return None
    module_name, _, attribute = target.partition(":")
    backend: ProviderBackend = getattr(importlib.import_module(module_name), attribute)
    return backend, name


async def send_direct(backend: ProviderBackend, name: str, kwargs: dict[str, Any]) -> Any:
    """One request to ``backend``, with the keyword arguments a LiteLLM call would take: a whole
    reply, or (``stream``) an async iterator of chunks, both shaped as LiteLLM's."""
    messages = kwargs["messages"]
    params = {k: v for k, v in kwargs.items() if k not in _CALL_ARGUMENTS}
    if kwargs.get("stream"):
        return _direct_stream(backend.astream(name, messages, params))
    return direct_reply(await backend.acomplete(name, messages, params), messages)


async def _direct_stream(pieces: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A built-in backend's stream as OpenAI-shaped chunks; closing it closes the backend's."""
    try:
        async for piece in pieces:
            yield direct_chunk(piece)
    finally:
        await aclose(pieces)


async def aclose(iterator: AsyncIterator[Any]) -> None:
    """Close ``iterator`` if it can be closed (an async generator), so its backend stops now."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
