"""One evaluation mode's scores: each example's outcome (:class:`ItemScore`) and the mode's
totals (:class:`ModeReport`), the data the report (:mod:`.report`) and the comparisons between
modes (:mod:`.compare`) are made from."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

__all__ = ["ItemScore", "ModeReport"]


@dataclass(frozen=True)
class ItemScore:
    """One example under one mode."""

    id: str
    index: int
    correct: bool
    output: str | None
    """The answer; None when the run failed."""
    error: str | None = None
    """``Type: message`` of a failed run."""
    stop_reason: str | None = None
    feedback: str = ""
    """The checker's note on a wrong answer."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    cost_usd: float = 0.0
    unpriced_calls: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class ModeReport:
    """The totals of one mode over the dataset. Failed runs count as wrong; the usage of what
    they had done before failing (partial results) is counted, since it was paid for."""

    mode: str
    items: list[ItemScore]
    seconds: float = 0.0
    """Wall time of the whole mode (with concurrency, less than the sum of latencies)."""
    samples: int | None = None
    """Answers sampled per example (the ``best_of_n`` and ``self_consistency`` baselines)."""
    matched: str | None = None
    """What ``samples`` was matched to the loop by (``calls`` or ``tokens``); None when given."""

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def correct(self) -> int:
        return sum(item.correct for item in self.items)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def failures(self) -> int:
        return sum(item.error is not None for item in self.items)

    @property
    def prompt_tokens(self) -> int:
        return sum(item.prompt_tokens for item in self.items)

    @property
    def completion_tokens(self) -> int:
        return sum(item.completion_tokens for item in self.items)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def calls(self) -> int:
        return sum(item.calls for item in self.items)

    @property
    def cost_usd(self) -> float:
        return sum(item.cost_usd for item in self.items)

    @property
    def unpriced_calls(self) -> int:
        return sum(item.unpriced_calls for item in self.items)

    @property
    def latency_p50(self) -> float:
        """Median seconds per example."""
        return statistics.median(i.seconds for i in self.items) if self.items else 0.0

    @property
    def latency_mean(self) -> float:
        return statistics.fmean(i.seconds for i in self.items) if self.items else 0.0

    def summary(self) -> dict[str, Any]:
        """The totals as a JSON-ready dict."""
        return {
            "mode": self.mode,
            "total": self.total,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "failures": self.failures,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "calls": self.calls,
            "cost_usd": self.cost_usd,
            "unpriced_calls": self.unpriced_calls,
            "latency_p50": self.latency_p50,
            "latency_mean": self.latency_mean,
            "seconds": self.seconds,
            "samples": self.samples,
            "matched": self.matched,
        }
