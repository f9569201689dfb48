"""What reflectkit knows about a model string, and so how it treats it.

* ``tuned``: trained on the tag protocol (Reflection-70B and its GGUF/Ollama builds).
  ``mode="auto"`` gives it one call with Reflection-70B's own system prompt.
* ``reasoning``: reasons natively (o1/o3, DeepSeek-R1, QwQ ...). ``mode="auto"`` gives it one call
  with the conversation as is; its ``<think>`` blocks or provider reasoning become the thinking.
* ``prefill``: its provider continues an assistant message that ends the conversation (the local
  model, Anthropic). reflectkit then starts the reply with the opening tag for it.
* ``needs_format_help``: a small model that ignores formats unless helped; reflectkit shows it a
  worked example.
* ``grammar``: its provider constrains decoding with a GBNF grammar passed as the ``grammar``
  call parameter (the local model, through llama.cpp). reflectkit's format help then holds the
  reply to the tags while it is written (see :mod:`reflectkit.models.local.grammar`).
* ``self_critique``: its critiques of its own drafts are worth a loop (True unless said
  otherwise). The local 135M model's are not: judging its own answers it writes noise and its
  revisions get worse, so ``mode="auto"`` gives it one pass unless a critic is passed.

Users register their own models with :func:`register_model`. Patterns are shell-style globs
(``*``, ``?``) matched case-insensitively against the whole model string. For each capability the
first pattern that says something about it wins: user registrations (newest first), then the
built-ins; a capability nobody mentions keeps its default (``self_critique`` True, others False).
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass, fields

__all__ = ["ModelProfile", "profile_for", "register_model", "unregister_model"]

_CAPABILITIES = ("tuned", "reasoning", "prefill", "needs_format_help", "self_critique", "grammar")


@dataclass(frozen=True)
class ModelProfile:
    """Capabilities of a model as reflectkit uses them."""

    tuned: bool = False
    """Trained on the tag protocol: it reasons, reflects and answers in tags unprompted."""
    reasoning: bool = False
    """Reasons natively before answering."""
    prefill: bool = False
    """Its provider continues an assistant message that ends the conversation."""
    needs_format_help: bool = False
    """A small model that follows the tag format only with an exemplar."""
    self_critique: bool = True
    """Its critiques of its own drafts are worth a generate-critique-revise loop."""
    grammar: bool = False
    """Its provider constrains decoding with a GBNF grammar (the ``grammar`` call parameter)."""

    @property
    def single_pass(self) -> bool:
        """Whether ``mode="auto"`` gives this model one call and no loop (without a critic)."""
        return self.tuned or self.reasoning or not self.self_critique


_Said = dict[str, bool]

_BUILTIN: tuple[tuple[str, _Said], ...] = (
    ("*reflection-70b*", {"tuned": True}),
    ("*reflection-llama*", {"tuned": True}),
    ("*reflection_70b*", {"tuned": True}),
    ("ollama/reflection", {"tuned": True}),
    ("ollama/reflection:*", {"tuned": True}),
    ("ollama_chat/reflection", {"tuned": True}),
    ("ollama_chat/reflection:*", {"tuned": True}),
    ("o1", {"reasoning": True}),
    ("o1-*", {"reasoning": True}),
    ("o3", {"reasoning": True}),
    ("o3-*", {"reasoning": True}),
    ("o4-mini*", {"reasoning": True}),
    ("*/o1", {"reasoning": True}),
    ("*/o1-*", {"reasoning": True}),
    ("*/o3", {"reasoning": True}),
    ("*/o3-*", {"reasoning": True}),
    ("*/o4-mini*", {"reasoning": True}),
    ("*deepseek-r1*", {"reasoning": True}),
    ("*deepseek-reasoner*", {"reasoning": True}),
    ("*qwq*", {"reasoning": True}),
    (
        "local/*",
        {"prefill": True, "needs_format_help": True, "self_critique": False, "grammar": True},
    ),
    ("anthropic/*", {"prefill": True}),
    ("claude-*", {"prefill": True}),
)

_lock = threading.Lock()
_registered: list[tuple[str, _Said]] = []


def register_model(
    pattern: str,
    *,
    tuned: bool | None = None,
    reasoning: bool | None = None,
    prefill: bool | None = None,
    needs_format_help: bool | None = None,
    self_critique: bool | None = None,
    grammar: bool | None = None,
) -> None:
    """Tell reflectkit what a model (or a glob of models) can do; ``None`` leaves a capability
    to other patterns and the built-ins.

    ``register_model("openai/my-reflection-ft-*", tuned=True)`` makes ``mode="auto"`` give those
    models a single call with the tuned-model system prompt. Registering the same pattern again
    replaces the earlier registration; later registrations win over earlier ones, and all win
    over the built-ins. Each capability is a :class:`~reflectkit.ModelProfile` field.

    Args:
        pattern: A glob over LiteLLM model strings (``fnmatch``, case-insensitive).
        tuned: Trained on the tag protocol.
        reasoning: Reasons natively before answering.
        prefill: Its provider continues an assistant message that ends the conversation.
        needs_format_help: Follows the tag format only with an exemplar.
        self_critique: Its critiques of its own drafts are worth the loop.
        grammar: Its provider takes a GBNF ``grammar`` call parameter.
    """
    said = {
        name: value
        for name, value in zip(
            _CAPABILITIES,
            (tuned, reasoning, prefill, needs_format_help, self_critique, grammar),
            strict=True,
        )
        if value is not None
    }
    key = pattern.casefold()
    with _lock:
        _registered[:] = [(p, s) for p, s in _registered if p != key]
        _registered.insert(0, (key, said))


def unregister_model(pattern: str) -> None:
    """Forget a pattern registered with :func:`register_model` (built-ins stay)."""
    key = pattern.casefold()
    with _lock:
        _registered[:] = [(p, s) for p, s in _registered if p != key]


def profile_for(model: str) -> ModelProfile:
    """The capabilities of ``model``: per capability, the first matching pattern that says (the
    latest registration first, then the built-ins), else the :class:`~reflectkit.ModelProfile`
    default."""
    name = model.casefold()
    with _lock:
        entries = [*_registered, *_BUILTIN]
    known: _Said = {}
    for pattern, said in entries:
        if fnmatch.fnmatchcase(name, pattern):
            for capability, value in said.items():
                known.setdefault(capability, value)
    defaults = ModelProfile()
    return ModelProfile(
        **{f.name: known.get(f.name, getattr(defaults, f.name)) for f in fields(ModelProfile)}
    )
