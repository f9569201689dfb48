"""``reflectkit serve``: an OpenAI-compatible proxy that reflects on any upstream model.

:func:`create_app` builds the ASGI app from :class:`ServerSettings`; run it with uvicorn (the
``server`` extra), or with ``reflectkit serve``. See docs/server.md.

Importing this package loads neither Starlette nor LiteLLM: the names below load on first use,
so the command line can register ``serve`` without paying for the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reflectkit.server.app import create_app
    from reflectkit.server.limits import uvicorn_options
    from reflectkit.server.settings import API_KEY_ENV_VAR, ServerSettings

__all__ = ["API_KEY_ENV_VAR", "ServerSettings", "create_app", "uvicorn_options"]

_WHERE = {
    "create_app": "reflectkit.server.app",
    "uvicorn_options": "reflectkit.server.limits",
    "ServerSettings": "reflectkit.server.settings",
    "API_KEY_ENV_VAR": "reflectkit.server.settings",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'reflectkit.server' has no attribute {name!r}")
    if module in ("reflectkit.server.app", "reflectkit.server.limits"):
        try:
            importlib.import_module("starlette")
            importlib.import_module("uvicorn")
        except ImportError:
            from reflectkit.errors import ConfigurationError

            raise ConfigurationError(
                "the proxy needs the server extra: pip install 'reflectkit[server]'"
            ) from None
    return getattr(importlib.import_module(module), name)
