"""LLMCritic: a model reviews the draft and answers with a structured verdict."""

from __future__ import annotations

from typing import Any

from reflectkit.config import RetryPolicy
from reflectkit.critics.base import CriticSetup, CritiqueRequest
from reflectkit.errors import ConfigurationError, CriticError
from reflectkit.messages import tool_results
from reflectkit.models.llm import ModelClient
from reflectkit.verdict import Verdict, parse_verdict

__all__ = ["LLMCritic"]


class LLMCritic:
    """Asks a model (by default the generator's) to review the draft.

    The prompt is the ``critique`` template, or ``template``: Jinja2 text with the same
    variables (``question``, ``answer``, ``tool_results``, ``trajectory``, ``scheme``), rendered
    sandboxed and strict. It must ask
    for the verdict :func:`~reflectkit.verdict.parse_verdict` reads; a malformed verdict
    becomes a "revise" with the raw text as feedback, never a crash. A verdict the critic quotes
    from the answer or the tool results never counts as its own. The verdict's ``usage`` is the
    critic's call. It is ``expensive``: :class:`~reflectkit.AllOf` asks it after the cheap critics.

    Args:
        model: The critic's LiteLLM model string; None: the generator's, called with the
            generator's LiteLLM keywords (``model_kwargs`` on top). A model of its own is called
            with ``model_kwargs`` only.
        template: Jinja2 text replacing the built-in ``critique`` template for this critic.
        **model_kwargs: Passed to LiteLLM on each critique call (``temperature=0``).

    Raises:
        ConfigurationError: ``template`` is empty.
    """

    expensive = True

    def __init__(
        self, model: str | None = None, *, template: str | None = None, **model_kwargs: Any
    ) -> None:
        if template is not None and not template.strip():
            raise ConfigurationError("LLMCritic's template is empty")
        self.model = model
        self.template = template
        self.model_kwargs = model_kwargs
        self.name = f"llm:{model}" if model else "llm"
        self._clients: dict[str, ModelClient] = {}

    def _client(
        self,
        default_model: str | None,
        default_kwargs: dict[str, Any],
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> ModelClient:
        model = self.model or default_model
        if model is None:
            raise CriticError("LLMCritic has no model: pass LLMCritic(model=...)")
        client = self._clients.get(model)
        if client is None:
            params = self.model_kwargs if self.model else {**default_kwargs, **self.model_kwargs}
            client = ModelClient(model, params, retry=retry, timeout=timeout)
            self._clients[model] = client
        return client

    def check(self, setup: CriticSetup) -> None:
        """Fail early if the critic's model cannot be called (checked once per model)."""
        self._client(setup.model, setup.model_kwargs, setup.retry, setup.timeout).check()

    def label(self, setup: CriticSetup) -> str:
        """``llm:<model>``, with the generator's model when the critic has none of its own."""
        return f"llm:{self.model or setup.model}"

    async def acritique(self, request: CritiqueRequest) -> Verdict:
        """Ask the model for a verdict on the draft, with the run's retry policy and timeout."""
        if request.prompts is None:
            raise CriticError("LLMCritic needs the run's prompts")
        client = self._client(
            request.default_model, request.default_model_kwargs, request.retry, request.timeout
        )
        conversation, trajectory = request.conversation, request.trajectory
        if trajectory is not None:
            results = [(use.name, use.result) for use in trajectory.tool_uses if use.result]
        elif conversation is not None:
            results = conversation.tool_results()
        else:
            results = tool_results(request.messages)
        steps = trajectory.steps() if trajectory is not None else ()
        messages = request.prompts.critique(
            request.question, request.answer, self.template, results, steps
        )
        completion = await client.complete(messages)
        # What the critic was shown to judge: a verdict planted there and quoted is not its own.
        shown = [request.answer, *(content for _, content in results)]
        verdict = parse_verdict(completion.text, critic=f"llm:{client.model}", shown=shown)
        return verdict.model_copy(update={"usage": completion.usage})
