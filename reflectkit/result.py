"""What a run returns: the answer, how it got there, why it stopped and what it cost."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reflectkit._tag_results import Parsed, ParseStatus
from reflectkit.errors import RunError
from reflectkit.resources import render_html
from reflectkit.usage import Usage
from reflectkit.verdict import Verdict

__all__ = [
    "Draft",
    "Iteration",
    "ReflectionResult",
    "StopReason",
    "TrialRecord",
    "partial_result",
    "result_facts",
    "result_html",
]


class StopReason(StrEnum):
    """Why a run ended. Every run ends with one of these, never with a recursion error."""

    PASSED = "passed"
    """The critic accepted the latest draft."""
    MIN_SCORE = "min_score"
    """The critic scored the latest draft at least ``min_score``."""
    MAX_ITERATIONS = "max_iterations"
    """``max_iterations`` drafts were written and none passed."""
    TOKEN_BUDGET = "token_budget"
    """The run used ``token_budget`` tokens."""
    COST_BUDGET = "cost_budget"
    """The run spent ``cost_budget`` USD."""
    TIME_BUDGET = "time_budget"
    """The run took ``time_budget`` seconds."""
    NO_CHANGE = "no_change"
    """A revision came back with the same answer as the draft before it."""
    SINGLE_PASS = "single_pass"
    """Single-pass mode: one call, no critic."""
    TOOL_CALLS = "tool_calls"
    """The model answered by calling tools: the calls are handed back unjudged, for the caller
    (an agent) to run and send the results in the next turn."""
    CRITIC_ERROR = "critic_error"
    """The critic failed (raised, returned something unusable, its model failed, or it gave no
    verdict within ``critic_timeout``) and ``on_critic_error="keep_best"`` ended the run with
    the best draft judged so far; ``ReflectionResult.critic_error`` says what went wrong."""
    AWAITING_HUMAN = "awaiting_human"
    """A :class:`~reflectkit.critics.HumanCritic` paused the run for a person's verdict on the
    latest draft (the result's ``output``); resume the thread (``result.thread_id``) with it:
    ``Reflector.resume(result, "pass")`` or feedback text (see docs/human-critic.md)."""
    ERROR = "error"
    """The run failed; only partial results (``RunError.partial``) carry this reason."""


class Draft(BaseModel):
    """One model reply, parsed."""

    model_config = ConfigDict(frozen=True)

    text: str
    """The raw reply, tags and all, starting with the prefill when there was one."""
    output: str
    """The answer, tags stripped."""
    thinking: list[str] = Field(default_factory=list)
    """The reply's thinking blocks."""
    reflections: list[str] = Field(default_factory=list)
    """The reply's reflection blocks."""
    parse_status: ParseStatus = ParseStatus.COMPLETE
    """How the reply, as first written, kept to the tag format."""
    repaired: bool = False
    """The reply had no usable answer block and ``output`` came from the repair call."""
    repair_text: str | None = None
    """The repair call's raw reply, when one was made."""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    """The tools the model called instead of (or besides) answering, in OpenAI's format
    (``id``, ``type``, ``function`` with ``name`` and JSON ``arguments``), as it sent them."""

    @classmethod
    def from_parsed(cls, text: str, parsed: Parsed, reasoning: str | None = None) -> Draft:
        """Build a draft from a parsed reply; provider-side reasoning counts as thinking."""
        thinking = (
            [reasoning.strip(), *parsed.thinking]
            if reasoning and reasoning.strip()
            else (parsed.thinking)
        )
        return cls(
            text=text,
            output=parsed.output,
            thinking=thinking,
            reflections=parsed.reflections,
            parse_status=parsed.status,
        )


class Iteration(BaseModel):
    """One draft and the critic's verdict on it."""

    model_config = ConfigDict(frozen=True)

    number: int
    """1 for the first draft, 2 for the first revision, ..."""
    kind: Literal["generate", "revise"]
    """``"generate"`` for the first draft, ``"revise"`` for the rest."""
    draft: Draft
    """The parsed draft."""
    verdict: Verdict | None = None
    """``None`` in single-pass mode (unless the answer is typed: then the validation's verdict),
    for a revision that stopped the run unchanged, and for a draft whose critique failed under
    ``on_critic_error="keep_best"`` or was cut by the time budget."""
    draft_usage: Usage = Field(default_factory=Usage)
    """What writing the draft cost."""
    critique_usage: Usage = Field(default_factory=Usage)
    """What judging it cost."""
    seconds: float = 0.0
    """Time spent on this draft and its critique."""

    @property
    def usage(self) -> Usage:
        """The draft's call plus the critique's calls."""
        return self.draft_usage + self.critique_usage


class TrialRecord(BaseModel):
    """One Reflexion trial: its answer, how it ended, and the lesson written after it."""

    model_config = ConfigDict(frozen=True)

    number: int
    """The trial, 1-based."""
    output: str
    """The trial's answer."""
    stop_reason: StopReason
    """Why the trial ended."""
    passed: bool
    """The critic passed the trial's answer."""
    lesson: str | None = None
    """The lesson the model wrote after this trial failed (None for the last trial)."""
    usage: Usage = Field(default_factory=Usage)
    """The trial's calls and its lesson's."""


class ReflectionResult(BaseModel):
    """The outcome of a run. ``str(result)`` is the answer."""

    model_config = ConfigDict(frozen=True)

    output: str
    """The answer, tags stripped; ``str(result)`` is this."""
    thinking: list[str] = Field(default_factory=list)
    """The final draft's thinking blocks."""
    reflections: list[str] = Field(default_factory=list)
    """The final draft's reflection blocks."""
    iterations: list[Iteration] = Field(default_factory=list)
    """Every draft, with its verdict, in order."""
    stop_reason: StopReason
    """Why the run ended."""
    usage: Usage = Field(default_factory=Usage)
    """Tokens, calls and cost of the whole run, critiques included."""
    model: str
    """The generator's model string."""
    critic: str | None = None
    """The critic's label (``llm:gpt-4o-mini``, a function's name); None in single-pass runs."""
    mode: Literal["loop", "single"]
    """How the run went: ``"loop"`` (generate, critique, revise) or ``"single"`` (one call)."""
    parse_status: ParseStatus = ParseStatus.COMPLETE
    """How the final draft, as first written, kept to the tag format."""
    repaired: bool = False
    """The final answer came from a repair call (see :class:`Draft`)."""
    final_iteration: int = 1
    """The number of the iteration whose draft is the answer."""
    seconds: float = 0.0
    """Wall-clock time of the run."""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    """The final draft's tool calls, unchanged (stop reason ``tool_calls``): run them and send
    their results back as ``role: "tool"`` messages for the model's next turn."""

    trials: list[TrialRecord] = Field(default_factory=list)
    """Every Reflexion trial, when ``trials`` > 1 or memory is on; the iterations above are the
    last trial's, while ``usage`` counts all trials and their lessons."""
    lessons: list[str] = Field(default_factory=list)
    """The lessons the last trial was shown."""
    run_id: str | None = None
    """The run's id in the run log (None when the log is off)."""
    thread_id: str | None = None
    """The ``thread_id`` a durable run was given (see docs/durability.md)."""
    critic_error: str | None = None
    """Why the critic failed, secrets redacted, when that ended the run (stop reason
    ``critic_error``, with ``on_critic_error="keep_best"``); else None."""
    selection: Literal["last", "best"] = "last"
    """How the answer was chosen: the last draft, or (when the run ran out of iterations or
    budget, or its critic failed) the best-judged one — passed first, then highest score, then
    latest."""

    @property
    def passed(self) -> bool:
        """Whether the critic accepted the answer: stop reason ``passed``, or ``min_score``
        reached."""
        return self.stop_reason in (StopReason.PASSED, StopReason.MIN_SCORE)

    @property
    def awaiting_human(self) -> bool:
        """Whether the run is paused for a person's verdict on ``output`` (stop reason
        ``awaiting_human``): it goes on when its thread is resumed with one."""
        return self.stop_reason is StopReason.AWAITING_HUMAN

    @property
    def parsed(self) -> Any:
        """The typed answer: the ``output_type`` object the final draft's answer validated to
        (or what its critic parsed, a SchemaCritic's object); None when nothing was parsed."""
        final = self.iterations[self.final_iteration - 1] if self.iterations else None
        return final.verdict.parsed if final and final.verdict else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of everything in the result."""
        return self.model_dump(mode="json")

    def __str__(self) -> str:
        return self.output

    def _repr_html_(self) -> str:
        """The result as HTML for Jupyter (see :func:`result_html`)."""
        return result_html(self)


_PASSED = "#2e7d32"
_OTHER = "#ef6c00"


def result_facts(result: ReflectionResult) -> list[str]:
    """One line of facts about ``result``: stop reason, drafts, calls, tokens, cost, seconds,
    model, run id."""
    usage = result.usage
    drafts = len(result.iterations)
    facts = [
        f"stop: {result.stop_reason.value}",
        f"{drafts} draft{'s' if drafts != 1 else ''}",
        f"{usage.calls} call{'s' if usage.calls != 1 else ''}",
        f"{usage.total_tokens} tokens ({usage.prompt_tokens} prompt + "
        f"{usage.completion_tokens} completion)",
    ]
    if usage.cost_usd:
        unknown = " + unpriced calls" if usage.unpriced_calls else ""
        facts.append(f"${usage.cost_usd:.4f}{unknown}")
    facts += [f"{result.seconds:.1f} s", result.model]
    if result.run_id:
        facts.append(f"run {result.run_id[:10]}")
    return facts


def result_html(result: ReflectionResult) -> str:
    """``result`` as a self-contained HTML fragment (inline styles, no script): the answer, a
    line of facts (stop reason, drafts, calls, tokens, cost, seconds, model, run id), then the
    thinking, reflections, and each draft with its critique, folded. Jupyter shows it through
    ``ReflectionResult._repr_html_``; :mod:`reflectkit.integrations.display` re-exports it."""
    accent = _PASSED if result.passed else _OTHER
    return render_html("result.html.j2", result=result, facts=result_facts(result), accent=accent)


def partial_result(error: BaseException) -> ReflectionResult | None:
    """The :class:`ReflectionResult` a failed run kept (``RunError.partial``), or None.

    ``RunError.partial`` is typed by its shape (:class:`reflectkit.errors.PartialResult`) so the
    error tree imports nothing above it; what reflectkit puts there is always a result."""
    partial = error.partial if isinstance(error, RunError) else None
    return partial if isinstance(partial, ReflectionResult) else None
