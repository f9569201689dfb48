"""What reflectkit knows about a model string: tuned for the tag scheme, or a reasoning model.

``mode="auto"`` consults this registry: a model tuned on the tag protocol (Reflection-70B and
its GGUF/Ollama builds) or a native reasoning model answers in one call; any other model runs the
generate → critique → revise loop. Users register their own fine-tunes with
:func:`register_model`; their entries win over the built-in ones.

Patterns are shell-style globs (``*``, ``?``), matched case-insensitively against the whole model
string as passed to LiteLLM.
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass

__all__ = ["ModelProfile", "profile_for", "register_model", "unregister_model"]


@dataclass(frozen=True)
class ModelProfile:
    """Capabilities of a model as reflectkit uses them."""

    tuned: bool = False
    """Trained on the tag protocol: it reasons, reflects and answers in tags unprompted."""
    reasoning: bool = False
    """Reasons natively before answering (o1/o3, DeepSeek-R1, QwQ ...)."""

    @property
    def single_pass(self) -> bool:
        """Whether ``mode="auto"`` gives this model one call and no loop."""
        return self.tuned or self.reasoning


_TUNED = ModelProfile(tuned=True)
_REASONING = ModelProfile(reasoning=True)

_BUILTIN: tuple[tuple[str, ModelProfile], ...] = (
    ("*reflection-70b*", _TUNED),
    ("*reflection-llama*", _TUNED),
    ("*reflection_70b*", _TUNED),
    ("ollama/reflection", _TUNED),
    ("ollama/reflection:*", _TUNED),
    ("ollama_chat/reflection", _TUNED),
    ("ollama_chat/reflection:*", _TUNED),
    ("o1", _REASONING),
    ("o1-*", _REASONING),
    ("o3", _REASONING),
    ("o3-*", _REASONING),
    ("o4-mini*", _REASONING),
    ("*/o1", _REASONING),
    ("*/o1-*", _REASONING),
    ("*/o3", _REASONING),
    ("*/o3-*", _REASONING),
    ("*/o4-mini*", _REASONING),
    ("*deepseek-r1*", _REASONING),
    ("*deepseek-reasoner*", _REASONING),
    ("*qwq*", _REASONING),
)

_lock = threading.Lock()
_registered: list[tuple[str, ModelProfile]] = []


def register_model(pattern: str, *, tuned: bool = False, reasoning: bool = False) -> None:
    """Tell reflectkit what a model (or a glob of models) can do.

    ``register_model("openai/my-reflection-ft-*", tuned=True)`` makes ``mode="auto"`` give those
    models a single call with the tuned-model system prompt. A later registration of the same
    pattern replaces the earlier one.
    """
    key = pattern.casefold()
    with _lock:
        _registered[:] = [(p, prof) for p, prof in _registered if p != key]
        _registered.insert(0, (key, ModelProfile(tuned=tuned, reasoning=reasoning)))


def unregister_model(pattern: str) -> None:
    """Forget a pattern registered with :func:`register_model` (built-ins stay)."""
    key = pattern.casefold()
    with _lock:
        _registered[:] = [(p, prof) for p, prof in _registered if p != key]


def profile_for(model: str) -> ModelProfile:
    """The profile of ``model``: the first registered match, then the first built-in one."""
    name = model.casefold()
    with _lock:
        entries = [*_registered, *_BUILTIN]
    for pattern, profile in entries:
        if fnmatch.fnmatchcase(name, pattern):
            return profile
    return ModelProfile()
