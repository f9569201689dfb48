"""Draw the figures of docs/benchmarks.md from benchmarks/figures.json into docs/img/*.svg.

The numbers are the results the page reports (nothing is rerun here); the plots show what the
tables say for a reader who would rather look. Needs matplotlib (the ``eval`` extra):

    python benchmarks/plots.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "benchmarks" / "figures.json"
IMAGES = ROOT / "docs" / "img"

# Same bytes for the same data: no timestamp, fixed ids.
plt.rcParams.update({"svg.hashsalt": "reflectkit", "svg.fonttype": "none", "font.size": 10})


def _save(figure: Any, name: str) -> None:
    figure.tight_layout()
    figure.savefig(IMAGES / name, format="svg", metadata={"Date": None})
    plt.close(figure)


def overhead(data: dict[str, Any]) -> None:
    """Loop overhead: reflectkit's time per run against bare LiteLLM's, and their ratio."""
    runs = data["runs"]
    labels = [f"run {r['run']}" for r in runs]
    ratios = [r["reflectkit_ms"] / r["litellm_ms"] for r in runs]
    figure, (times, ratio) = plt.subplots(1, 2, figsize=(9, 3.4))
    x = range(len(runs))
    times.bar([i - 0.2 for i in x], [r["litellm_ms"] for r in runs], 0.4, label="bare LiteLLM")
    times.bar([i + 0.2 for i in x], [r["reflectkit_ms"] for r in runs], 0.4, label="reflectkit")
    times.set_xticks(list(x), labels)
    times.set_ylabel("ms per 6-call run")
    times.set_title("Time per run (lower is better)")
    times.legend(frameon=False)
    ratio.plot(labels, ratios, marker="o", label="measured")
    ratio.axhline(data["target_ratio"], linestyle="--", color="grey", label="target")
    ratio.set_ylim(1.0, 1.7)
    ratio.set_ylabel("reflectkit ÷ bare LiteLLM")
    ratio.set_title("Overhead ratio (target ≤ 1.25)")
    ratio.legend(frameon=False)
    _save(figure, "overhead.svg")


def parser_speed(data: dict[str, Any]) -> None:
    """Tag parser throughput at 4 MB, per text and way of parsing (log scale)."""
    ways, texts = data["ways"], data["texts"]
    figure, axes = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / len(ways)
    for j, way in enumerate(ways):
        xs = [i + (j - (len(ways) - 1) / 2) * width for i in range(len(texts))]
        axes.bar(xs, [speeds[j] for speeds in texts.values()], width, label=way)
    axes.set_xticks(range(len(texts)), list(texts))
    axes.set_yscale("log")
    axes.set_ylabel("MB/s (log scale)")
    axes.set_title("Tag parser throughput on 4 MB texts (higher is better)")
    axes.legend(frameon=False)
    _save(figure, "parser-speed.svg")


def eval_equal_cost(data: dict[str, Any]) -> None:
    """Accuracy with its 95 % interval against tokens spent, one point per mode."""
    figure, axes = plt.subplots(figsize=(7, 3.6))
    for mode in data["modes"]:
        below = mode["accuracy"] - mode["low"]
        above = mode["high"] - mode["accuracy"]
        axes.errorbar(mode["tokens"], mode["accuracy"], yerr=[[below], [above]], fmt="o", capsize=4)
        axes.annotate(
            mode["mode"],
            (mode["tokens"], mode["accuracy"]),
            xytext=(6, 4),
            textcoords="offset points",
        )
    axes.set_xlabel("tokens for all examples")
    axes.set_ylabel("accuracy, % (95 % interval)")
    axes.set_ylim(0, 100)
    axes.set_xlim(0, max(mode["tokens"] for mode in data["modes"]) * 1.3)  # room for labels
    axes.set_title(f"The loop against baselines, {data['examples']} examples, embedded model")
    _save(figure, "eval-equal-cost.svg")


def main() -> None:
    figures = json.loads(FIGURES.read_text())
    IMAGES.mkdir(parents=True, exist_ok=True)
    overhead(figures["overhead"])
    parser_speed(figures["parser_4mb_mb_per_s"])
    eval_equal_cost(figures["eval_equal_cost"])


if __name__ == "__main__":
    main()
