"""The baselines a reflection loop must beat at equal cost: ``best_of_n`` and
``self_consistency``.

Both sample N answers per example at a temperature above 0 (each sample ``k`` also carries
``seed=k``, so a seeded backend such as the local model draws different answers, and a rerun
draws the same ones). ``self_consistency`` takes the majority of the final answers, compared as
the example's matcher normalises them (the last number for ``numeric``, normalised text
otherwise; ties go to the answer seen first); it costs N calls. ``best_of_n`` runs each sample
as a one-draft loop (``max_iterations=1``: generate, then the same LLM critic the ``loop`` mode
uses judges it) and keeps the sample the critic liked best (passed first, then score; ties go to
the first); it costs 2N calls. The dataset's checker is never the judge: it knows the answer.

N is matched to the loop's cost (:func:`sample_count`); every call and token of the samples and
of the judging is counted in the mode's row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reflectkit.api import Reflector
from reflectkit.batching import BatchItem, abatch
from reflectkit.errors import ConfigurationError
from reflectkit.evaluation.datasets import Example
from reflectkit.evaluation.matchers import last_number, normalise
from reflectkit.evaluation.report import ModeReport
from reflectkit.usage import Usage

__all__ = [
    "BASELINES",
    "DEFAULT_SAMPLE_TEMPERATURE",
    "MATCH_COSTS",
    "answer_key",
    "check_baselines",
    "majority",
    "pick_best",
    "sample_count",
    "sample_items",
]

BASELINES = {
    "best_of_n": "N sampled answers, the LLM critic picks one (N drafts + N critiques)",
    "self_consistency": "N sampled answers, majority vote on the normalised answers",
}
"""The baseline modes, with what each runs."""
DEFAULT_SAMPLE_TEMPERATURE = 0.7
MATCH_COSTS = ("calls", "tokens")
CALLS_PER_SAMPLE = {"best_of_n": 2, "self_consistency": 1}
"""Calls one sample costs: best_of_n's samples are each judged by one critique."""


def sample_count(
    mode: str, done: dict[str, ModeReport], samples: int | None, match_cost: str
) -> int:
    """N for ``mode``: ``samples`` if given; else the loop's mean cost per example (this run's
    ``loop`` mode) over what one sample costs. With ``match_cost="calls"`` a sample costs one
    call (two for best_of_n, judged); with ``"tokens"``, the ``single`` mode's mean tokens
    (doubled for best_of_n, a critique reading about what a draft does)."""
    if samples is not None:
        if samples < 1:
            raise ConfigurationError("samples must be at least 1")
        return samples
    if match_cost not in MATCH_COSTS:
        raise ConfigurationError(f"unknown match_cost {match_cost!r}: use calls or tokens")
    loop = done.get("loop")
    if loop is None or not loop.total:
        raise ConfigurationError(
            f"{mode} matches the loop's cost: run the loop mode too, or give samples=N"
        )
    per_sample = CALLS_PER_SAMPLE[mode]
    if match_cost == "calls":
        budget = loop.calls / loop.total
    else:
        single = done.get("single")
        if single is None or not single.total_tokens:
            raise ConfigurationError(
                "match_cost='tokens' needs the single mode's tokens: run single too, or give "
                "samples=N"
            )
        budget = loop.total_tokens / single.total_tokens
    return max(1, round(budget / per_sample))


def check_baselines(modes: Sequence[str], samples: int | None, match_cost: str) -> None:
    """Fail before any model is called when a baseline's N cannot be set."""
    wanted = [mode for mode in modes if mode in BASELINES]
    if samples is not None and samples < 1:
        raise ConfigurationError("samples must be at least 1")
    if match_cost not in MATCH_COSTS:
        raise ConfigurationError(f"unknown match_cost {match_cost!r}: use calls or tokens")
    if not wanted or samples is not None:
        return
    if "loop" not in modes:
        raise ConfigurationError(
            f"{wanted[0]} matches the loop's cost: add the loop mode, or give samples=N"
        )
    if match_cost == "tokens" and "single" not in modes:
        raise ConfigurationError(
            "match_cost='tokens' divides by the single mode's tokens: add single, or give samples=N"
        )


def answer_key(example: Example, answer: str) -> str:
    """What ``answer`` votes for: the last number under ``numeric`` matching, else the text as
    ``exact`` compares it (case, spacing, quotes and final punctuation ignored)."""
    if example.match == "numeric":
        number = last_number(answer)
        if number is not None:
            return repr(number)
    return normalise(answer)


def majority(example: Example, answers: Sequence[str | None]) -> int | None:
    """The index of the first answer of the most common key (None when every sample failed)."""
    keys = [answer_key(example, a) if a is not None else None for a in answers]
    counts = Counter(key for key in keys if key is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(i for i, key in enumerate(keys) if key is not None and counts[key] == top)


def pick_best(items: Sequence[BatchItem]) -> int | None:
    """The index of the sample the critic judged best: passed before failed, then the higher
    score (a verdict without a score counts as 10 when passed, 0 when not); ties go to the first.
    None when every sample failed."""
    best: tuple[bool, float] | None = None
    chosen = None
    for index, item in enumerate(items):
        if item.result is None:
            continue
        verdicts = [it.verdict for it in item.result.iterations if it.verdict is not None]
        verdict = verdicts[-1] if verdicts else None
        passed = verdict is not None and verdict.passed
        score = verdict.score if verdict is not None and verdict.score is not None else None
        rank = (passed, score if score is not None else (10.0 if passed else 0.0))
        if best is None or rank > best:
            best, chosen = rank, index
    return chosen


def _usage(item: BatchItem) -> Usage:
    if item.result is not None:
        return item.result.usage
    if item.error is not None and item.error.partial is not None:
        return item.error.partial.usage
    return Usage()


async def sample_items(
    mode: str,
    examples: Sequence[Example],
    model: str | None,
    n: int,
    *,
    temperature: float,
    settings: dict[str, Any],
    root: Path | None,
    progress: str | None,
    batch: dict[str, Any],
) -> tuple[list[BatchItem], list[Usage], list[float]]:
    """Run ``n`` samples of every example and pick one answer each. Returns the picked item per
    example, with every sample's usage summed and every sample's seconds summed (the cost of
    the whole mode, not of the picked sample alone)."""
    mode_settings: dict[str, Any] = {"mode": "single"}
    if mode == "best_of_n":
        # The judge is the loop's critic at the loop's temperature (greedy when none was set),
        # not at the samples' temperature.
        judge = {**settings.get("critic_kwargs", {})}
        judge.setdefault("temperature", settings.get("temperature", 0))
        mode_settings = {"mode": "loop", "max_iterations": 1, "critic_kwargs": judge}
    runs: list[list[BatchItem]] = []
    for k in range(n):
        params = {**settings, **mode_settings, "temperature": temperature, "seed": k}
        with Reflector(model, **params) as reflector:
            runs.append(
                await abatch(
                    [example.prompt for example in examples],
                    reflector=reflector,
                    output=root / f"{mode}.{k}.jsonl" if root is not None else None,
                    progress=f"{progress} {k + 1}/{n}" if progress else False,
                    **batch,
                )
            )
    picked, usages, seconds = [], [], []
    for index, example in enumerate(examples):
        samples = [run[index] for run in runs]
        if mode == "best_of_n":
            choice = pick_best(samples)
        else:
            choice = majority(example, [s.output for s in samples])
        picked.append(samples[choice if choice is not None else 0])
        total = Usage()
        for sample in samples:
            total = total + _usage(sample)
        usages.append(total)
        seconds.append(sum(sample.seconds for sample in samples))
    return picked, usages, seconds
