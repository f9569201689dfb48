"""reflectkit's graph served by LangGraph Platform (LangGraph Server, ``langgraph dev``).

Point a ``langgraph.json`` at :func:`make_graph`::

    {"dependencies": ["reflectkit[local]"],
     "graphs": {"reflect": "reflectkit.integrations.langgraph_platform:make_graph"}}

The platform then runs the loop with its own threads, streaming and checkpoints; the input is
``{"messages": [...]}`` and the output's ``result`` is the :class:`~reflectkit.ReflectionResult`
(as JSON). Settings come from the assistant's or the run's config, under one key so that a
misspelt one is refused rather than ignored among the platform's own keys::

    {"configurable": {"reflectkit": {"model": "gpt-4o-mini", "max_iterations": 2}}}

with the model falling back to ``$REFLECTKIT_MODEL`` and then the embedded local model. Only
plain settings can be set this way (:data:`SETTINGS`): critics that are code, template
directories and provider arguments such as ``api_base`` belong to whoever deploys the graph,
not to whoever calls it: for those, write a factory of your own around
:func:`reflectkit.build_graph`, as this one is.

The server refuses blocking calls on its event loop (it runs graphs under blockbuster), so the
graph is built in a worker thread the first time each distinct setting is asked for, and cached.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from reflectkit.config import ReflectConfig
from reflectkit.errors import ConfigurationError
from reflectkit.graph import build_graph

__all__ = ["CONFIG_KEY", "MODEL_KWARGS", "SETTINGS", "graph_for", "make_graph", "settings_from"]

CONFIG_KEY = "reflectkit"
"""The key of ``config["configurable"]`` that holds reflectkit's settings."""

SETTINGS = (
    "model",
    "critic_model",
    "max_iterations",
    "mode",
    "format_help",
    "timeout",
    "critic_timeout",
    "on_critic_error",
    "token_budget",
    "cost_budget",
    "time_budget",
    "min_score",
)
"""The settings a caller may give (those of :class:`~reflectkit.ReflectConfig` of the same
name)."""

MODEL_KWARGS = ("temperature", "top_p", "max_tokens", "seed")
"""Model arguments a caller may give as well; they go to every generator call."""

_graphs: dict[str, CompiledStateGraph[Any, Any, Any, Any]] = {}
_lock = threading.Lock()


def settings_from(config: RunnableConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """reflectkit's settings in a run's ``config`` (``configurable.reflectkit``), checked:
    unknown names and non-JSON values raise :class:`~reflectkit.ConfigurationError`."""
    configurable = (config or {}).get("configurable") or {}
    given = configurable.get(CONFIG_KEY) or {}
    if not isinstance(given, Mapping):
        raise ConfigurationError(
            f"configurable.{CONFIG_KEY} must be an object of settings, not {type(given).__name__}"
        )
    allowed = (*SETTINGS, *MODEL_KWARGS)
    unknown = sorted(str(name) for name in given if name not in allowed)
    if unknown:
        raise ConfigurationError(
            f"unknown reflectkit setting(s) {', '.join(unknown)}; "
            f"allowed here: {', '.join(allowed)}"
        )
    settings = {name: given[name] for name in SETTINGS if name in given}
    model_kwargs = {name: given[name] for name in MODEL_KWARGS if name in given}
    if model_kwargs:
        settings["model_kwargs"] = model_kwargs
    try:
        json.dumps(settings, allow_nan=False)
    except (TypeError, ValueError):
        raise ConfigurationError("reflectkit settings must be plain JSON values") from None
    return settings


def graph_for(settings: Mapping[str, Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled graph for ``settings`` (see :func:`settings_from`), built once per distinct
    settings in this process. Blocking (it reads templates and may load LiteLLM)."""
    key = _key(settings)
    with _lock:
        graph = _graphs.get(key)
    if graph is None:
        graph = build_graph(ReflectConfig(**settings))
        with _lock:
            graph = _graphs.setdefault(key, graph)
    return graph


async def make_graph(config: RunnableConfig) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph factory for ``langgraph.json``: reflectkit's loop with the settings in
    ``config`` (see the module docstring), built off the event loop and cached."""
    settings = settings_from(config)
    graph = _graphs.get(_key(settings))
    return graph if graph is not None else await asyncio.to_thread(graph_for, settings)


def _key(settings: Mapping[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)
