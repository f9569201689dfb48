"""The stop policy: after each step, whether the loop ends and under which name."""

from __future__ import annotations

from reflectkit.config import ReflectConfig
from reflectkit.critics.verdict import Verdict
from reflectkit.result import Draft, StopReason

__all__ = ["after_critique", "after_revise", "recursion_limit"]


def after_critique(verdict: Verdict, iteration: int, config: ReflectConfig) -> StopReason | None:
    """Stop when the critic passed the draft or the last allowed draft has been judged."""
    if verdict.passed:
        return StopReason.PASSED
    if iteration >= config.max_iterations:
        return StopReason.MAX_ITERATIONS
    return None


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def after_revise(previous: Draft, revised: Draft) -> StopReason | None:
    """Stop when a revision gives the same answer (ignoring whitespace and case): the critic
    would only judge it again."""
    if _normalised(previous.output) == _normalised(revised.output):
        return StopReason.NO_CHANGE
    return None


def recursion_limit(config: ReflectConfig) -> int:
    """LangGraph steps a run can take: generate, then a critique per draft and a revise per
    draft after the first, then finalize; with a margin so the limit can never be what ends it."""
    return 2 * config.max_iterations + 5
