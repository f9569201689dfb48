"""reflectkit: make any LLM reason, check itself and correct itself before it answers.

>>> import reflectkit as rk
>>> rk.parse("<thinking>12 - 5 = 7, 7 - 3 = 4</thinking><output>4</output>").output
'4'

Importing reflectkit is cheap: the tag protocol and the errors load at once, everything else
(pydantic models, LangGraph, and LiteLLM on the first model call) on first use.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from reflectkit import _aliases
from reflectkit._lazy import lazy_attributes
from reflectkit.errors import (
    ConfigurationError,
    ContextWindowError,
    CriticError,
    InputError,
    LocalModelCrashError,
    LocalModelError,
    MissingCredentialsError,
    ModelRequestsBlockedError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderRequestError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitedError,
    ReflectkitError,
    RunError,
    TemplateError,
    UnknownModelError,
)
from reflectkit.tags import (
    REFLECTION_TAGS,
    THINK_TAGS,
    OutputDelta,
    OutsideDelta,
    Parsed,
    ParseStatus,
    ReflectionDelta,
    StreamParser,
    TagDelta,
    TagScheme,
    ThinkingDelta,
    escape_tags,
    parse,
)

if TYPE_CHECKING:
    from reflectkit.api import Reflector, areflect, reflect
    from reflectkit.batching import BatchError, BatchItem, abatch, batch
    from reflectkit.config import FormatHelp, ReflectConfig, RetryPolicy
    from reflectkit.critics import (
        AllOf,
        AnyOf,
        CodeTestCritic,
        Critic,
        CritiqueRequest,
        FunctionCritic,
        HumanCritic,
        LLMCritic,
        SchemaCritic,
        Verdict,
    )
    from reflectkit.events import DraftDelta, ResultEvent, StepEvent, StepStarted, TrialEvent
    from reflectkit.graph import build_graph
    from reflectkit.integrations.human import ask_human
    from reflectkit.integrations.reflective import reflective
    from reflectkit.integrations.wrapping import wrap
    from reflectkit.models.capabilities import ModelProfile, profile_for, register_model
    from reflectkit.result import Draft, Iteration, ReflectionResult, StopReason, TrialRecord
    from reflectkit.stores.memory import Lesson, LessonStore
    from reflectkit.trajectory import ToolUse, Trajectory
    from reflectkit.usage import Usage

__version__ = "0.1.0"

_LAZY = {
    "Reflector": "reflectkit.api",
    "areflect": "reflectkit.api",
    "reflect": "reflectkit.api",
    "ModelProfile": "reflectkit.models.capabilities",
    "profile_for": "reflectkit.models.capabilities",
    "register_model": "reflectkit.models.capabilities",
    "FormatHelp": "reflectkit.config",
    "ReflectConfig": "reflectkit.config",
    "RetryPolicy": "reflectkit.config",
    "AllOf": "reflectkit.critics",
    "AnyOf": "reflectkit.critics",
    "CodeTestCritic": "reflectkit.critics",
    "SchemaCritic": "reflectkit.critics",
    "Critic": "reflectkit.critics",
    "CritiqueRequest": "reflectkit.critics",
    "FunctionCritic": "reflectkit.critics",
    "HumanCritic": "reflectkit.critics",
    "LLMCritic": "reflectkit.critics",
    "Verdict": "reflectkit.critics",
    "ResultEvent": "reflectkit.events",
    "StepEvent": "reflectkit.events",
    "StepStarted": "reflectkit.events",
    "DraftDelta": "reflectkit.events",
    "TrialEvent": "reflectkit.events",
    "Lesson": "reflectkit.stores.memory",
    "LessonStore": "reflectkit.stores.memory",
    "build_graph": "reflectkit.graph",
    "Draft": "reflectkit.result",
    "Iteration": "reflectkit.result",
    "ReflectionResult": "reflectkit.result",
    "StopReason": "reflectkit.result",
    "TrialRecord": "reflectkit.result",
    "Usage": "reflectkit.usage",
    "ToolUse": "reflectkit.trajectory",
    "Trajectory": "reflectkit.trajectory",
    "wrap": "reflectkit.integrations.wrapping",
    "reflective": "reflectkit.integrations.reflective",
    "ask_human": "reflectkit.integrations.human",
    "batch": "reflectkit.batching",
    "abatch": "reflectkit.batching",
    "BatchItem": "reflectkit.batching",
    "BatchError": "reflectkit.batching",
}

# Modules that moved when the package was regrouped by layer keep their old import paths.
_aliases.install()

# A library adds no handlers of its own: its records go wherever the application sends them, and
# nowhere (not even to stderr as "last resort") when it configures nothing.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "REFLECTION_TAGS",
    "THINK_TAGS",
    "AllOf",
    "AnyOf",
    "BatchError",
    "BatchItem",
    "CodeTestCritic",
    "ConfigurationError",
    "ContextWindowError",
    "Critic",
    "CriticError",
    "CritiqueRequest",
    "Draft",
    "DraftDelta",
    "FormatHelp",
    "FunctionCritic",
    "HumanCritic",
    "InputError",
    "Iteration",
    "LLMCritic",
    "Lesson",
    "LessonStore",
    "LocalModelCrashError",
    "LocalModelError",
    "MissingCredentialsError",
    "ModelProfile",
    "ModelRequestsBlockedError",
    "OutputDelta",
    "OutsideDelta",
    "ParseStatus",
    "Parsed",
    "ProviderAuthError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderRequestError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "ReflectConfig",
    "ReflectionDelta",
    "ReflectionResult",
    "ReflectkitError",
    "Reflector",
    "ResultEvent",
    "RetryPolicy",
    "RunError",
    "SchemaCritic",
    "StepEvent",
    "StepStarted",
    "StopReason",
    "StreamParser",
    "TagDelta",
    "TagScheme",
    "TemplateError",
    "ThinkingDelta",
    "ToolUse",
    "Trajectory",
    "TrialEvent",
    "TrialRecord",
    "UnknownModelError",
    "Usage",
    "Verdict",
    "abatch",
    "areflect",
    "ask_human",
    "batch",
    "build_graph",
    "escape_tags",
    "parse",
    "profile_for",
    "reflect",
    "reflective",
    "register_model",
    "wrap",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
