"""Modes compared with each other: accuracy intervals, paired differences against the reference
mode (``loop``, else ``single``), McNemar's p-value, a plain sentence per pair, and the
cost-vs-accuracy plot (matplotlib, imported only to draw)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reflectkit.evaluation.stats import Interval, bootstrap_ci, mcnemar_exact, paired_difference_ci

if TYPE_CHECKING:
    from reflectkit.evaluation.scores import ModeReport


class ReportLike(Protocol):
    """What the comparisons read of a report (:class:`~reflectkit.evaluation.report.EvalReport`)."""

    @property
    def dataset(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def modes(self) -> list[ModeReport]: ...


__all__ = ["comparisons", "comparisons_markdown", "plot_cost", "reference_mode", "verdict"]

REFERENCES = ("loop", "single")
"""The mode the others are compared with: the first of these the evaluation ran."""


def reference_mode(report: ReportLike) -> ModeReport | None:
    """The mode every other is compared with: ``loop`` if it ran, else ``single``."""
    names = {mode.mode: mode for mode in report.modes}
    return next((names[name] for name in REFERENCES if name in names), None)


def _outcomes(mode: ModeReport) -> list[bool]:
    return [item.correct for item in sorted(mode.items, key=lambda item: item.index)]


def _points(value: float) -> str:
    return f"{100 * value:+.0f}".replace("-", "−")


def verdict(
    reference: str,
    other: str,
    accuracies: tuple[float, float],
    diff: Interval,
    p: float,
    at_cost: str = "",
) -> str:
    """The plain sentence: whether ``reference`` beat ``other`` (only when the interval of the
    difference excludes 0), with both accuracies, the difference, its interval and McNemar's p.
    ``at_cost`` qualifies the comparison (" at equal cost")."""
    if diff.low > 0:
        head = f"{reference} beat {other}{at_cost}"
    elif diff.high < 0:
        head = f"{reference} did not beat {other}{at_cost} ({other} was better)"
    else:
        head = f"{reference} did not beat {other}{at_cost}"
    mine, theirs = accuracies
    return (
        f"{head}: {100 * mine:.0f} % vs {100 * theirs:.0f} % (difference "
        f"{_points(diff.estimate)} pts, 95 % CI {_points(diff.low)} to {_points(diff.high)}, "
        f"McNemar p = {p:.2g})."
    )


def _cost_note(mode: ModeReport) -> str:
    """ " at equal cost" for a baseline whose N was matched to the loop; its N when given."""
    if mode.matched == "tokens":
        return " at equal cost in tokens"
    if mode.matched:
        return " at equal cost"
    return f" with N={mode.samples}" if mode.samples else ""


def comparisons(report: ReportLike) -> dict[str, Any]:
    """Every mode's accuracy interval, and each mode against the reference: the paired
    difference (reference minus the mode) with its interval, McNemar's p and the sentence."""
    accuracy = {}
    for mode in report.modes:
        interval = bootstrap_ci([float(x) for x in _outcomes(mode)])
        accuracy[mode.mode] = {"accuracy": interval.estimate, "ci": [interval.low, interval.high]}
    reference = reference_mode(report)
    pairs = []
    if reference is not None:
        mine = _outcomes(reference)
        for mode in report.modes:
            if mode is reference:
                continue
            theirs = _outcomes(mode)
            pairs_of = list(zip(mine, theirs, strict=True))
            diff = paired_difference_ci(mine, theirs)
            p = mcnemar_exact(mine, theirs)
            accuracies = (reference.accuracy, mode.accuracy)
            pairs.append(
                {
                    "reference": reference.mode,
                    "mode": mode.mode,
                    "difference": diff.estimate,
                    "ci": [diff.low, diff.high],
                    "mcnemar_p": p,
                    "only_reference_right": sum(a and not b for a, b in pairs_of),
                    "only_mode_right": sum(b and not a for a, b in pairs_of),
                    "significant": diff.excludes_zero(),
                    "sentence": verdict(
                        reference.mode, mode.mode, accuracies, diff, p, _cost_note(mode)
                    ),
                }
            )
    return {"level": 0.95, "accuracy": accuracy, "pairs": pairs}


def comparisons_markdown(report: ReportLike) -> str:
    """The comparison as Markdown: a table of intervals and differences, then the sentences."""
    found = comparisons(report)
    if not found["pairs"]:
        return ""
    lines = [
        "",
        "| mode | accuracy (95 % CI) | vs " + found["pairs"][0]["reference"]
        + " (pts, 95 % CI) | McNemar p |",
        "|---|---:|---:|---:|",
    ]  # fmt: skip
    by_mode = {pair["mode"]: pair for pair in found["pairs"]}
    for name, acc in found["accuracy"].items():
        low, high = acc["ci"]
        cell = f"{100 * acc['accuracy']:.0f} % ({100 * low:.0f}–{100 * high:.0f})"
        pair = by_mode.get(name)
        if pair is None:
            lines.append(f"| {name} | {cell} | reference | |")
            continue
        d_low, d_high = pair["ci"]
        lines.append(
            f"| {name} | {cell} | {_points(pair['difference'])} "
            f"({_points(d_low)} to {_points(d_high)}) | {pair['mcnemar_p']:.2g} |"
        )
    lines.append("")
    lines.extend(f"- {pair['sentence']}" for pair in found["pairs"])
    return "\n".join(lines) + "\n"


def plot_cost(report: ReportLike, path: str | Path, *, by: str = "tokens") -> Path:
    """Draw accuracy (with its 95 % interval as error bars) against mean ``tokens`` (or
    ``calls``) per example, one labelled point per mode, into a PNG file (Agg canvas)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        from reflectkit.errors import ConfigurationError

        raise ConfigurationError(
            "plotting needs matplotlib: pip install 'reflectkit[eval]'"
        ) from None
    accuracy = comparisons(report)["accuracy"]
    figure = Figure(figsize=(6, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    for mode in report.modes:
        spent = mode.total_tokens if by == "tokens" else mode.calls
        x = spent / max(1, mode.total)
        acc = accuracy[mode.mode]
        y = 100 * acc["accuracy"]
        low, high = (100 * v for v in acc["ci"])
        axes.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o", capsize=4)
        axes.annotate(mode.mode, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    axes.set_xlabel(f"mean {by} per example")
    axes.set_ylabel("accuracy (%), 95 % CI")
    axes.set_ylim(-5, 105)
    axes.set_title(f"{report.dataset} — {report.model}: cost vs accuracy", fontsize=10)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, format="png", dpi=100)
    return target
