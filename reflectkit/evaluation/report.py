"""What an evaluation found, per mode: accuracy, tokens, cost, calls, latency, failures; as
Markdown, JSON and a PNG plot (matplotlib, imported only to draw)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reflectkit.evaluation.compare import comparisons, comparisons_markdown, plot_cost
from reflectkit.evaluation.scores import ItemScore, ModeReport

__all__ = ["EvalReport", "ItemScore", "ModeReport"]


def _cost(report: ModeReport) -> str:
    if report.calls and report.unpriced_calls == report.calls:
        return "n/a"  # no call had a known price: "$0" would read as free
    return f"${report.cost_usd:.4f}"


@dataclass(frozen=True)
class EvalReport:
    """An evaluation: the dataset, the model, and one :class:`ModeReport` per mode."""

    dataset: str
    model: str
    modes: list[ModeReport]
    settings: dict[str, Any] = field(default_factory=dict)
    """The Reflector settings shared by every mode (secrets redacted)."""

    def mode(self, name: str) -> ModeReport:
        """The report of mode ``name``."""
        for report in self.modes:
            if report.mode == name:
                return report
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: totals per mode under ``summary``, every item under
        ``items``."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "settings": self.settings,
            "modes": [
                {**report.summary(), "items": [asdict(item) for item in report.items]}
                for report in self.modes
            ],
            "comparison": comparisons(self),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent, default=str)

    def to_markdown(self) -> str:
        """A heading line, a table with one row per mode, then the modes compared with the
        reference (intervals, paired differences, McNemar's p, and a sentence each)."""
        lines = [
            f"**{self.dataset}** on `{self.model}`, {self.modes[0].total if self.modes else 0} "
            "examples",
            "",
            "| mode | accuracy | correct | failures | tokens | cost | calls | p50 s | mean s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.modes:
            name = f"{r.mode} (N={r.samples})" if r.samples else r.mode
            lines.append(
                f"| {name} | {100 * r.accuracy:.1f}% | {r.correct}/{r.total} | {r.failures} "
                f"| {r.total_tokens:,} | {_cost(r)} | {r.calls} | {r.latency_p50:.2f} "
                f"| {r.latency_mean:.2f} |"
            )
        return "\n".join(lines) + "\n" + comparisons_markdown(self)

    def plot(self, path: str | Path) -> Path:
        """Draw accuracy, tokens per example and median latency per mode into a PNG file.

        Uses matplotlib's Agg canvas directly, so the application's pyplot backend (a
        notebook's, say) is left alone. Needs matplotlib (the ``eval`` extra).
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            from reflectkit.errors import ConfigurationError

            raise ConfigurationError(
                "plotting needs matplotlib: pip install 'reflectkit[eval]'"
            ) from None
        names = [r.mode for r in self.modes]
        panels = [
            ("accuracy (%)", [100 * r.accuracy for r in self.modes]),
            ("tokens per example", [r.total_tokens / max(1, r.total) for r in self.modes]),
            ("median latency (s)", [r.latency_p50 for r in self.modes]),
        ]
        figure = Figure(figsize=(10, 3.4), layout="constrained")
        FigureCanvasAgg(figure)
        figure.suptitle(f"{self.dataset} — {self.model}")
        for axes, (title, values) in zip(figure.subplots(1, 3), panels, strict=True):
            bars = axes.bar(names, values, color="#4c72b0")
            axes.bar_label(bars, fmt="%.3g", fontsize=8)
            axes.set_title(title, fontsize=10)
            if title.startswith("accuracy"):
                axes.set_ylim(0, 105)
            axes.tick_params(axis="x", labelrotation=20)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, format="png", dpi=100)
        return target

    def write(self, directory: str | Path) -> dict[str, Path]:
        """Write ``report.md``, ``report.json``, ``report.png`` and ``cost.png`` (accuracy
        against mean tokens per example, :func:`~reflectkit.evaluation.compare.plot_cost`) into
        ``directory``."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        paths = {
            "markdown": root / "report.md",
            "json": root / "report.json",
            "png": root / "report.png",
            "cost_png": root / "cost.png",
        }
        paths["markdown"].write_text(self.to_markdown(), encoding="utf-8")
        paths["json"].write_text(self.to_json() + "\n", encoding="utf-8")
        self.plot(paths["png"])
        plot_cost(self, paths["cost_png"])
        return paths
