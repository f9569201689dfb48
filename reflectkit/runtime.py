"""What a run of the loop needs: its state's shape, and the Runtime the nodes share.

The graph's state holds only data (messages, iterations, usage), which is what a checkpointer
saves; the :class:`Runtime` holds what must not be in it: the clients, the critic, the prompt
builder and the configuration, built once per configuration and bound into the nodes
(:mod:`reflectkit.graph`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

from reflectkit.config import ReflectConfig
from reflectkit.critics.base import (
    Critic,
    CriticSetup,
    check_critic,
    critic_label,
)
from reflectkit.critics.compose import as_critic
from reflectkit.critics.human import check_human_order, has_human
from reflectkit.critics.llm_critic import LLMCritic
from reflectkit.critics.schema import SchemaCritic
from reflectkit.drafting import DraftWriter, FormatPlan, plan_format_help
from reflectkit.errors import ConfigurationError
from reflectkit.messages import Conversation, PromptBuilder
from reflectkit.models.capabilities import ModelProfile, profile_for
from reflectkit.models.llm import ModelClient, without_tools
from reflectkit.prompts import Prompts
from reflectkit.result import Iteration, ReflectionResult, StopReason
from reflectkit.stopping import (
    select_final,
)
from reflectkit.typed import (
    TypedCritic,
    output_check,
    response_format,
    schema_text,
    uses_native,
)
from reflectkit.usage import Usage

__all__ = ["LoopInput", "LoopOutput", "LoopState", "RunMode", "Runtime", "resolve_mode"]

RunMode = Literal["loop", "single"]


class LoopInput(TypedDict):
    """What the graph takes: the conversation, OpenAI-style dicts or LangChain messages, and
    optionally lessons from earlier attempts (Reflexion) to show with the request."""

    messages: list[Any]
    lessons: NotRequired[list[str]]


class LoopOutput(TypedDict, total=False):
    """What the graph returns."""

    result: ReflectionResult
    output: str
    stop_reason: StopReason


class LoopState(LoopInput, LoopOutput, total=False):
    """The whole state: input, drafts with their verdicts, usage so far, the stop decision."""

    iterations: list[Iteration]
    usage: Usage
    started_at: float
    critic_error: str
    """Why the critic failed, when ``on_critic_error="keep_best"`` ended the run on it."""


def resolve_mode(config: ReflectConfig, model: str, profile: ModelProfile | None = None) -> RunMode:
    """``"auto"`` becomes ``"single"`` when the profile says one pass is best (tuned, reasoning,
    or no worthwhile self-critique) and no critic was given; ``"loop"`` otherwise. An
    ``output_type`` counts as a critic: an answer that fails validation is revised."""
    if config.mode != "auto":
        return config.mode
    profile = profile or profile_for(model)
    explicit_critic = (
        config.critic is not None
        or config.critic_model is not None
        or config.output_type is not None
    )
    return "single" if profile.single_pass and not explicit_critic else "loop"


@dataclass
class Runtime:
    """What the nodes need and the state must not hold: clients, critic, prompts, config."""

    config: ReflectConfig
    model: str
    profile: ModelProfile
    mode: RunMode
    builder: PromptBuilder
    generator: ModelClient
    critic: Critic | None
    plan: FormatPlan | None
    """Format help, or None when the model gets the conversation without the protocol."""
    writer: DraftWriter
    output_check: SchemaCritic | None = None
    """Validates a typed answer (``output_type``); in a loop it is also the critic's first part."""
    checked: bool = field(default=False, init=False, repr=False)
    """Whether :meth:`check` has passed once (it is not repeated by :meth:`acheck`)."""

    @classmethod
    def create(cls, config: ReflectConfig, prompts: Prompts | None = None) -> Runtime:
        model = config.resolved_model
        profile = profile_for(model)
        mode = resolve_mode(config, model, profile)
        if prompts is None:
            # Template errors surface here, before any model is paid for; and every template
            # is read now, so no run reads a file on the event loop.
            prompts = Prompts(config.template_dir)
            prompts.check()
        check = output_check(config)
        native = check is not None and uses_native(config, profile, model)
        shown = schema_text(check) if check is not None and not native else None
        builder = PromptBuilder(prompts, config.scheme, shown)
        params = config.model_kwargs
        if check is not None and native:
            params = {**params, "response_format": response_format(check)}
        generator = ModelClient(model, params, retry=config.retry, timeout=config.timeout)
        critic = as_critic(config.critic)
        _check_human(critic, config)
        # With an output type and no critic, validation alone judges (no LLM critic is made).
        wants_llm = check is None or config.critic_model is not None
        if critic is None and mode == "loop" and wants_llm:
            separate = config.critic_model is not None and config.critic_model != model
            critic_model = config.critic_model if separate else None
            critic = LLMCritic(critic_model, **config.critic_kwargs)
        if check is not None and mode == "loop":
            # Validation first, always: it is free, and a draft that fails it costs no critic.
            critic = TypedCritic(check, critic)
        plain = native or (mode == "single" and profile.reasoning and not profile.tuned)
        plan = None if plain else plan_format_help(config, profile)
        writer = DraftWriter(generator, builder, plan)
        return cls(config, model, profile, mode, builder, generator, critic, plan, writer, check)

    def check(self) -> None:
        """Fail before the first call if a model cannot be used (unknown, no key, blocked)."""
        self.generator.check()
        if self.critic is not None:
            check_critic(self.critic, self.critic_setup)

    async def acheck(self) -> None:
        """:meth:`check` in a worker thread until it has passed once: it may import LiteLLM and
        read a model file, which must not hold up the event loop."""
        if not self.checked:
            await asyncio.to_thread(self.check)
            self.checked = True

    @property
    def human(self) -> bool:
        """Whether a person judges the drafts (a HumanCritic): runs then pause, so they must be
        durable (see :mod:`reflectkit.critics.human`)."""
        return self.mode == "loop" and has_human(self.critic)

    @property
    def critic_setup(self) -> CriticSetup:
        """What the critic is offered before a run (its check) and falls back to."""
        config = self.config
        return CriticSetup(self.model, self.critic_kwargs, config.retry, config.timeout)

    @property
    def critic_kwargs(self) -> dict[str, Any]:
        """The generator's model kwargs as an LLM critic on the same model starts from: without
        tools, since a verdict must come back as text."""
        return without_tools(self.config.model_kwargs)

    @property
    def critic_name(self) -> str | None:
        if self.critic is None:
            return None
        return critic_label(self.critic, self.critic_setup)

    def generate_messages(self, conversation: Conversation) -> list[dict[str, Any]]:
        if self.plan is None:
            return self.builder.plain(conversation)
        return self.builder.generate(conversation, self.plan.layout)

    def result(self, state: LoopState, stop_reason: StopReason) -> ReflectionResult:
        """Assemble the result from the state (also used for partial results after a failure)."""
        iterations = state.get("iterations", [])
        index, best = select_final(iterations, stop_reason)
        final = iterations[index]
        return ReflectionResult(
            output=final.draft.output,
            thinking=final.draft.thinking,
            reflections=final.draft.reflections,
            iterations=iterations,
            stop_reason=stop_reason,
            usage=state.get("usage", Usage()),
            model=self.model,
            critic=self.critic_name,
            mode=self.mode,
            parse_status=final.draft.parse_status,
            repaired=final.draft.repaired,
            final_iteration=final.number,
            selection="best" if best else "last",
            seconds=time.time() - state.get("started_at", time.time()),
            tool_calls=final.draft.tool_calls,
            critic_error=state.get("critic_error"),
        )


def _check_human(critic: Critic | None, config: ReflectConfig) -> None:
    """What a run with a person as (part of) its critic cannot do: ask a paid critic before the
    person, or count time against a budget while the person has the draft."""
    check_human_order(critic)
    if config.time_budget is not None and has_human(critic):
        raise ConfigurationError(
            "time_budget cannot be used with a HumanCritic: the time a person takes is not the "
            "run's to spend; bound the run with max_iterations, token_budget or cost_budget"
        )
