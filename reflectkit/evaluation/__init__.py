"""Evaluate a model on a dataset in several modes (single pass, self-critique loop, verifier
loop) and report accuracy, tokens, cost, calls, latency and failures. See docs/eval.md.

The command line is ``reflectkit eval`` (:mod:`reflectkit.cli.evaluate`). Names load on
first use, so importing the command (for ``reflectkit --help``) loads neither LangGraph nor
LiteLLM nor matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reflectkit._lazy import lazy_attributes

if TYPE_CHECKING:
    from reflectkit.evaluation.catalog import BUILTIN_DATASETS, load_dataset
    from reflectkit.evaluation.datasets import (
        ArithmeticProblem,
        Check,
        Dataset,
        Example,
        arithmetic,
        arithmetic_problems,
        load_verifier,
        read_jsonl,
    )
    from reflectkit.evaluation.matchers import MATCHERS, last_number, matches, normalise
    from reflectkit.evaluation.report import EvalReport, ItemScore, ModeReport
    from reflectkit.evaluation.run import MODES, DatasetCritic, aevaluate, evaluate

_LAZY = {
    **dict.fromkeys(["BUILTIN_DATASETS", "load_dataset"], "reflectkit.evaluation.catalog"),
    **dict.fromkeys(
        [
            "ArithmeticProblem",
            "Check",
            "Dataset",
            "Example",
            "arithmetic",
            "arithmetic_problems",
            "load_verifier",
            "read_jsonl",
        ],
        "reflectkit.evaluation.datasets",
    ),
    **dict.fromkeys(
        ["MATCHERS", "last_number", "matches", "normalise"], "reflectkit.evaluation.matchers"
    ),
    **dict.fromkeys(["EvalReport", "ItemScore", "ModeReport"], "reflectkit.evaluation.report"),
    **dict.fromkeys(
        ["MODES", "DatasetCritic", "aevaluate", "evaluate"], "reflectkit.evaluation.run"
    ),
}

__all__ = [
    "BUILTIN_DATASETS",
    "MATCHERS",
    "MODES",
    "ArithmeticProblem",
    "Check",
    "Dataset",
    "DatasetCritic",
    "EvalReport",
    "Example",
    "ItemScore",
    "ModeReport",
    "aevaluate",
    "arithmetic",
    "arithmetic_problems",
    "evaluate",
    "last_number",
    "load_dataset",
    "load_verifier",
    "matches",
    "normalise",
    "read_jsonl",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
