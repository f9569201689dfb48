"""LiteLLM, imported once and lazily, with reflectkit's in-process providers registered in it.

This is the only place that imports LiteLLM. The import waits for the first call that needs it
(LiteLLM costs seconds to import) and reads the price map shipped inside LiteLLM instead of
fetching it. The providers that ship with reflectkit (the test fakes, the local model) are
imported and registered as LiteLLM custom providers at that moment; others join with
:func:`register_provider`. :mod:`reflectkit.models.llm` asks here for the loaded module and for
the backend a provider name stands for.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

from reflectkit.errors import ConfigurationError
from reflectkit.models.adapter import adapter_class
from reflectkit.models.provider import ProviderBackend

__all__ = ["load_litellm", "register_provider", "registered_backend"]

# Providers that ship with reflectkit, imported only when LiteLLM is first loaded.
_BUILTIN_PROVIDERS = {
    "reflectkit-test": "reflectkit.testing:BACKEND",
    "local": "reflectkit.models.local:BACKEND",
}

_lock = threading.Lock()
_litellm: Any = None
_providers: dict[str, ProviderBackend] = {}
_adapter: type | None = None


def load_litellm() -> Any:
    """Import LiteLLM once, offline, and register the in-process providers."""
    global _litellm
    if _litellm is not None:
        return _litellm
    with _lock:
        if _litellm is None:
            # Read the price map shipped inside LiteLLM instead of fetching it at import.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            module: Any = importlib.import_module("litellm")
            module.suppress_debug_info = True
            for name, target in _BUILTIN_PROVIDERS.items():
                module_name, _, attribute = target.partition(":")
                backend = getattr(importlib.import_module(module_name), attribute)
                _install(module, name, backend)
            _litellm = module
    return _litellm


def _install(litellm: Any, name: str, backend: ProviderBackend) -> None:
    global _adapter
    if _adapter is None:
        _adapter = adapter_class(litellm)
    handler = _adapter(name, backend)
    litellm.custom_provider_map = [
        item for item in litellm.custom_provider_map if item["provider"] != name
    ] + [{"provider": name, "custom_handler": handler}]
    litellm.utils.custom_llm_setup()
    _providers[name] = backend


def register_provider(name: str, backend: ProviderBackend) -> None:
    """Make an in-process backend callable as ``"<name>/<model>"`` through LiteLLM (this loads
    LiteLLM). Registering the same backend again does nothing, so callers need not track it."""
    if not name or "/" in name:
        raise ConfigurationError(f"invalid provider name {name!r}")
    with _lock:
        if _providers.get(name) is backend:
            return
    _install(load_litellm(), name, backend)


def registered_backend(provider: str) -> ProviderBackend | None:
    """The in-process backend registered as ``provider``, or None for LiteLLM's own providers."""
    return _providers.get(provider)
