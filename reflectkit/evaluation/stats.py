"""Paired statistics for an evaluation: bootstrap confidence intervals and McNemar's exact test.

Pure Python (``random`` with a fixed seed, ``math.comb``), so the figures are the same on every
machine and need no numpy. Every mode answers the same examples, so modes are compared
*paired*: the bootstrap resamples examples (the same indices for both modes), and McNemar's test
looks only at the examples where exactly one of the two modes was right.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "Interval",
    "bootstrap_ci",
    "mcnemar_exact",
    "paired_difference_ci",
]

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 1234
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile-bootstrap confidence interval."""

    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        """Whether the whole interval is on one side of 0 (a difference that is not noise)."""
        return self.low > 0 or self.high < 0


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of sorted values, interpolated linearly (numpy's default)."""
    position = fraction * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def bootstrap_ci(
    values: Sequence[float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = LEVEL,
) -> Interval:
    """The mean of ``values`` with a percentile bootstrap interval: ``resamples`` draws of
    ``len(values)`` values with replacement, from a ``random.Random(seed)``. For 0/1 outcomes the
    mean is the accuracy; for paired differences it is the difference of accuracies."""
    if not values:
        return Interval(0.0, 0.0, 0.0)
    data = [float(v) for v in values]
    size = len(data)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(data, k=size)) / size for _ in range(resamples))
    tail = (1 - level) / 2
    return Interval(sum(data) / size, _percentile(means, tail), _percentile(means, 1 - tail))


def paired_difference_ci(
    first: Sequence[bool],
    second: Sequence[bool],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Accuracy of ``first`` minus accuracy of ``second`` over the same examples, with a paired
    bootstrap interval (examples are resampled, each keeping both of its outcomes)."""
    if len(first) != len(second):
        raise ValueError("paired outcomes need the same examples")
    differences = [int(a) - int(b) for a, b in zip(first, second, strict=True)]
    return bootstrap_ci(differences, resamples=resamples, seed=seed)


def mcnemar_exact(first: Sequence[bool], second: Sequence[bool]) -> float:
    """McNemar's exact test: the two-sided binomial p-value that the examples only one mode got
    right split this unevenly by chance (each discordant pair is a fair coin under the null)."""
    if len(first) != len(second):
        raise ValueError("paired outcomes need the same examples")
    only_first = sum(1 for a, b in zip(first, second, strict=True) if a and not b)
    only_second = sum(1 for a, b in zip(first, second, strict=True) if b and not a)
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_first, only_second) + 1))
    return min(1.0, 2 * tail / float(2**discordant))
