"""The stop policy: after each step, whether the loop ends and under which name, and which draft
the run then returns.

A draft that calls tools ends the run at once (``tool_calls``), after the first draft or a
revision: the model needs the tools' results before it can answer, so there is nothing to
judge, and the calls go back to the caller unchanged.

Checks, in order, after a critique: the critic passed the draft (``passed``); its score reached
``min_score`` (``min_score``); the last allowed draft was judged (``max_iterations``). After any
step: the token, cost or time budget is spent (``token_budget``, ``cost_budget``,
``time_budget``). After a revision: it gave the same answer as the draft before (``no_change``).

Budgets are checked between steps, so a run can overshoot a token or cost budget by the step that
crossed it; the time budget also cuts a critique or revision in progress (the graph does that).
The first draft is always completed, so every run has an answer: bound it with ``timeout=``.

When a run stops because it ran out (iterations or a budget), or because its critic failed with
``on_critic_error="keep_best"`` (``critic_error``: the draft it was judging stays unjudged), the
answer is the best-judged draft, not blindly the last: a passed verdict first, then the highest
score, then the latest.
"""

from __future__ import annotations

from collections.abc import Sequence

from reflectkit.config import ReflectConfig
from reflectkit.result import Draft, Iteration, StopReason
from reflectkit.usage import Usage
from reflectkit.verdict import Verdict

__all__ = [
    "after_critique",
    "after_generate",
    "after_revise",
    "out_of_budget",
    "recursion_limit",
    "select_final",
]

RAN_OUT = frozenset(
    {
        StopReason.MAX_ITERATIONS,
        StopReason.TOKEN_BUDGET,
        StopReason.COST_BUDGET,
        StopReason.TIME_BUDGET,
        StopReason.CRITIC_ERROR,  # on_critic_error="keep_best": the failed draft is unjudged
    }
)
"""Stops that choose the best-judged draft rather than the last."""


def out_of_budget(config: ReflectConfig, usage: Usage, elapsed: float) -> StopReason | None:
    """The budget the run has spent, if any."""
    if config.token_budget is not None and usage.total_tokens >= config.token_budget:
        return StopReason.TOKEN_BUDGET
    if config.cost_budget is not None and usage.cost_usd >= config.cost_budget:
        return StopReason.COST_BUDGET
    if config.time_budget is not None and elapsed >= config.time_budget:
        return StopReason.TIME_BUDGET
    return None


def after_generate(
    draft: Draft, config: ReflectConfig, usage: Usage, elapsed: float
) -> StopReason | None:
    """Stop when the first draft calls tools, or a budget is spent."""
    if draft.tool_calls:
        return StopReason.TOOL_CALLS
    return out_of_budget(config, usage, elapsed)


def after_critique(
    verdict: Verdict, iteration: int, config: ReflectConfig, usage: Usage, elapsed: float
) -> StopReason | None:
    """Stop when the critic passed the draft, scored it high enough, or it was the last."""
    if verdict.passed:
        return StopReason.PASSED
    score, floor = verdict.score, config.min_score
    if floor is not None and score is not None and score >= floor:
        return StopReason.MIN_SCORE
    if iteration >= config.max_iterations:
        return StopReason.MAX_ITERATIONS
    return out_of_budget(config, usage, elapsed)


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def after_revise(
    previous: Draft,
    revised: Draft,
    config: ReflectConfig,
    usage: Usage,
    elapsed: float,
    *,
    judged_by_person: bool = False,
) -> StopReason | None:
    """Stop when a revision gives the same answer (ignoring whitespace and case): the critic
    would only judge it again; when it calls tools; or when a budget is spent.

    A person (``judged_by_person``: a HumanCritic) sees an unchanged revision again instead:
    they asked for a change, and may pass it after all or say again, differently, what to fix;
    ``max_iterations`` still bounds the run."""
    if revised.tool_calls:
        return StopReason.TOOL_CALLS
    if not judged_by_person and _normalised(previous.output) == _normalised(revised.output):
        return StopReason.NO_CHANGE
    return out_of_budget(config, usage, elapsed)


def select_final(iterations: Sequence[Iteration], stop_reason: StopReason) -> tuple[int, bool]:
    """The index of the iteration whose draft is the answer, and whether it was chosen as best.

    The last draft, unless the run ran out or its critic failed (:data:`RAN_OUT`): then the
    best-judged one (passed, then score, then the latest). Drafts never judged are not
    candidates unless no draft was judged.
    """
    last = len(iterations) - 1
    if stop_reason not in RAN_OUT:
        return last, False
    judged = [i for i, it in enumerate(iterations) if it.verdict is not None]
    if not judged:
        return last, False

    def rank(index: int) -> tuple[bool, float, int]:
        verdict = iterations[index].verdict
        assert verdict is not None
        score = verdict.score if verdict.score is not None else -1.0
        return (verdict.passed, score, index)

    best = max(judged, key=rank)
    return best, True


def recursion_limit(config: ReflectConfig) -> int:
    """LangGraph steps a run can take: generate, then a critique per draft and a revise per
    draft after the first, then finalize; with a margin so the limit can never be what ends it."""
    return 2 * config.max_iterations + 5
