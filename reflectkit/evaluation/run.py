"""Run a dataset through several modes with :func:`~reflectkit.batching.abatch` and score them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reflectkit.api import Reflector
from reflectkit.batching import DEFAULT_CONCURRENCY, BatchItem, abatch
from reflectkit.critics.base import CritiqueRequest
from reflectkit.errors import ConfigurationError
from reflectkit.evaluation.baselines import (
    BASELINES,
    DEFAULT_SAMPLE_TEMPERATURE,
    check_baselines,
    sample_count,
    sample_items,
)
from reflectkit.evaluation.catalog import load_dataset
from reflectkit.evaluation.datasets import Check, Dataset, Example
from reflectkit.evaluation.report import EvalReport, ItemScore, ModeReport
from reflectkit.messages import to_conversation
from reflectkit.models.llm import check_model
from reflectkit.runner import run_sync
from reflectkit.usage import Usage
from reflectkit.verdict import Verdict

__all__ = ["MODES", "DatasetCritic", "aevaluate", "evaluate"]

MODES = {
    "single": "one call, no critic",
    "loop": "generate, critique by the model itself, revise",
    "verifier": "the loop with the dataset's own checker as the critic",
    "auto": "what mode='auto' picks for the model (no critic given)",
    **BASELINES,
}
"""The modes an evaluation can compare, with what each runs."""

DEFAULT_MODES = ("single", "loop", "verifier")


def _key(prompt: Any) -> str:
    """A conversation's identity: the messages as canonical JSON."""
    messages = to_conversation(prompt).messages
    return json.dumps(list(messages), sort_keys=True, ensure_ascii=False, default=repr)


class DatasetCritic:
    """A critic that checks each draft with its dataset's checker (the ``verifier`` mode).

    One critic serves the whole batch: it finds the example a draft answers by the run's
    conversation, so each prompt is checked against its own expected answer. The checker's
    feedback goes to the revise step verbatim; the built-in matchers never reveal the answer.
    """

    expensive = False

    def __init__(self, dataset: Dataset) -> None:
        self.name = f"dataset:{dataset.name}"
        self._check = dataset.critic_check
        self._examples: dict[str, Example] = {}
        for example in dataset.examples:
            self._examples.setdefault(_key(example.prompt), example)

    async def acritique(self, request: CritiqueRequest) -> Verdict:
        example = self._examples.get(_key(request.messages))
        if example is None:
            raise ConfigurationError("the dataset critic was given a prompt not in its dataset")
        check = await self._check(example, request.answer)
        return Verdict(passed=check.passed, feedback=check.feedback, critic=self.name)


def _mode_settings(mode: str, dataset: Dataset) -> dict[str, Any]:
    if mode == "verifier":
        return {"mode": "loop", "critic": DatasetCritic(dataset)}
    return {"mode": mode}


def _check_modes(modes: Sequence[str], settings: dict[str, Any]) -> list[str]:
    chosen = [m.strip() for m in ([modes] if isinstance(modes, str) else modes) if m.strip()]
    if not chosen:
        raise ConfigurationError("give at least one mode")
    unknown = [m for m in chosen if m not in MODES]
    if unknown:
        raise ConfigurationError(f"unknown mode {unknown[0]!r}: use {', '.join(MODES)}")
    if len(set(chosen)) != len(chosen):
        raise ConfigurationError("a mode is listed twice")
    clashing = [name for name in ("mode", "critic", "config") if name in settings]
    if clashing:
        raise ConfigurationError(f"{clashing[0]}= is set by each mode and cannot be passed")
    return chosen


async def _score(
    dataset: Dataset,
    items: list[BatchItem],
    concurrency: int,
    usages: list[Usage] | None = None,
    seconds: list[float] | None = None,
) -> list[ItemScore]:
    """Check each item's answer. ``usages`` and ``seconds`` (per example), when given, replace
    the item's own: a baseline's picked sample is charged with all its samples' cost."""
    gate = asyncio.Semaphore(concurrency)

    async def score(position: int, item: BatchItem) -> ItemScore:
        example = dataset.examples[item.index]
        result = item.result
        if result is not None:
            async with gate:
                check = await dataset.check(example, result.output)
            usage = result.usage
        else:
            assert item.error is not None
            check = Check(False)
            usage = item.error.partial.usage if item.error.partial else Usage()
        if usages is not None:
            usage = usages[position]
        error = f"{item.error.type}: {item.error.message}" if item.error else None
        return ItemScore(
            id=example.id,
            index=item.index,
            correct=check.passed,
            output=result.output if result is not None else None,
            error=error,
            stop_reason=result.stop_reason.value if result is not None else None,
            feedback=check.feedback if not check.passed else "",
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            calls=usage.calls,
            cost_usd=usage.cost_usd,
            unpriced_calls=usage.unpriced_calls,
            seconds=item.seconds if seconds is None else seconds[position],
        )

    return list(await asyncio.gather(*(score(i, item) for i, item in enumerate(items))))


async def aevaluate(
    dataset: Dataset | str | Path,
    model: str | None = None,
    *,
    modes: Sequence[str] = DEFAULT_MODES,
    limit: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    output_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    verifier: Any = None,
    ray: bool | str | None = None,
    ray_actors: int | None = None,
    samples: int | None = None,
    match_cost: str = "calls",
    sample_temperature: float = DEFAULT_SAMPLE_TEMPERATURE,
    **settings: Any,
) -> EvalReport:
    """Answer every example of ``dataset`` in each of ``modes`` and score the answers.

    ``dataset`` is a :class:`Dataset`, a built-in name (``arithmetic``, ``humaneval``) or a
    JSONL file (docs/eval.md); ``limit`` keeps its first examples; ``verifier`` replaces its
    matchers (a callable ``(example, answer) -> bool | str`` or a ``module:function`` spec).
    Each mode is one :func:`~reflectkit.batching.abatch` with ``concurrency``; with
    ``output_dir``, each writes ``<mode>.jsonl`` there (``resume=True`` continues them) and the
    report is written as ``report.md``, ``report.json`` and ``report.png``. ``settings`` are
    :class:`~reflectkit.Reflector`'s (except ``mode`` and ``critic``, which the modes set).
    ``ray`` and ``ray_actors`` run each mode's batch on Ray (see
    :func:`~reflectkit.batching.abatch`); scoring stays here.

    The baselines ``best_of_n`` and ``self_consistency`` sample N answers per example at
    ``sample_temperature``; N is ``samples``, or else matched to this run's ``loop`` mode by
    mean ``calls`` or ``tokens`` per example (``match_cost``; see
    :mod:`~reflectkit.evaluation.baselines`). They run after the other modes, whatever the
    order given; the report keeps the order given.
    """
    chosen = _check_modes(modes, settings)
    check_baselines(chosen, samples, match_cost)
    if resume and output_dir is None:
        raise ConfigurationError("resume=True needs output_dir: the files to resume from")
    data = load_dataset(dataset, limit=limit, verifier=verifier)
    prompts = [example.prompt for example in data.examples]
    root = Path(output_dir) if output_dir is not None else None
    done: dict[str, ModeReport] = {}
    shared: dict[str, Any] = {}
    model_name = ""
    batch = {"concurrency": concurrency, "resume": resume, "ray": ray, "ray_actors": ray_actors}
    for mode in [m for m in chosen if m not in BASELINES]:
        with Reflector(model, **_mode_settings(mode, data), **settings) as reflector:
            model_name = reflector.model
            # Fails fast on an unusable model, and loads LiteLLM before the clock starts, so the
            # first mode's latencies do not include its import.
            check_model(reflector.model, reflector.config.model_kwargs)
            public = reflector.config.public_dict()
            shared = {k: v for k, v in public.items() if k not in ("mode", "critic")}
            started = time.perf_counter()
            items = await abatch(
                prompts,
                reflector=reflector,
                concurrency=concurrency,
                output=root / f"{mode}.jsonl" if root is not None else None,
                resume=resume,
                progress=f"{data.name} · {mode}" if progress else False,
                ray=ray,
                ray_actors=ray_actors,
            )
            seconds = time.perf_counter() - started
        done[mode] = ModeReport(mode, await _score(data, items, concurrency), seconds)
    for mode in [m for m in chosen if m in BASELINES]:
        if not model_name:
            with Reflector(model, mode="single", **settings) as reflector:
                model_name = reflector.model
                check_model(reflector.model, reflector.config.model_kwargs)
        n = sample_count(mode, done, samples, match_cost)
        started = time.perf_counter()
        picked, usages, spent = await sample_items(
            mode,
            data.examples,
            model,
            n,
            temperature=sample_temperature,
            settings=settings,
            root=root,
            progress=f"{data.name} · {mode}" if progress else None,
            batch=batch,
        )
        seconds = time.perf_counter() - started
        scores = await _score(data, picked, concurrency, usages, spent)
        matched = match_cost if samples is None else None
        done[mode] = ModeReport(mode, scores, seconds, samples=n, matched=matched)
    report = EvalReport(data.name, model_name, [done[m] for m in chosen], shared)
    if root is not None:
        report.write(root)
    return report


def evaluate(
    dataset: Dataset | str | Path,
    model: str | None = None,
    *,
    modes: Sequence[str] = DEFAULT_MODES,
    limit: int | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    output_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    verifier: Any = None,
    ray: bool | str | None = None,
    ray_actors: int | None = None,
    samples: int | None = None,
    match_cost: str = "calls",
    sample_temperature: float = DEFAULT_SAMPLE_TEMPERATURE,
    **settings: Any,
) -> EvalReport:
    """Sync :func:`aevaluate`."""
    return run_sync(
        aevaluate(
            dataset,
            model,
            modes=modes,
            limit=limit,
            concurrency=concurrency,
            output_dir=output_dir,
            resume=resume,
            progress=progress,
            verifier=verifier,
            ray=ray,
            ray_actors=ray_actors,
            samples=samples,
            match_cost=match_cost,
            sample_temperature=sample_temperature,
            **settings,
        )
    )
