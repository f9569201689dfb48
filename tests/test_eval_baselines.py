"""The eval baselines (best_of_n, self_consistency), N matched to the loop's cost, the paired
statistics, the plain sentence and the cost-vs-accuracy plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reflectkit.cli.evaluate import eval_command
from reflectkit.evaluation import EvalReport, Example, ItemScore, ModeReport, evaluate
from reflectkit.evaluation.baselines import answer_key, majority
from reflectkit.evaluation.compare import comparisons, plot_cost
from reflectkit.evaluation.stats import (
    Interval,
    bootstrap_ci,
    mcnemar_exact,
    paired_difference_ci,
)
from reflectkit.testing import FunctionLLM, Request

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PASS, REVISE = '{"verdict": "pass", "score": 9}', '{"verdict": "revise", "score": 2}'
RIGHT = {"What is 2 + 2?": "4", "What is 3 + 5?": "8", "What is 9 - 2?": "7"}
# What the fake answers per sample seed (None: the greedy, unseeded call of single and loop).
SAMPLES = {
    "What is 2 + 2?": {None: "5", 0: "5", 1: "4", 2: "4"},  # majority right, greedy wrong
    "What is 3 + 5?": {None: "8", 0: "6", 1: "8", 2: "9"},  # a tie: the first seen (6) wins
    "What is 9 - 2?": {None: "1", 0: "1", 1: "1", 2: "7"},  # majority wrong, one sample right
}


def write_dataset(path: Path) -> Path:
    rows = [
        {"id": f"q{i}", "prompt": q, "answer": int(a)} for i, (q, a) in enumerate(RIGHT.items())
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def sampling_model() -> FunctionLLM:
    """Answers by the call's seed; its critic passes exactly the right answers (so the loop,
    told it is wrong, keeps its answer and pays for every allowed revision)."""

    def answer(request: Request) -> str:
        text = json.dumps(request.messages)
        question = next(q for q in RIGHT if q in text)
        if "strict reviewer" in request.last_user_text:
            draft = request.last_user_text.split(question)[-1]
            right = f"<output>{RIGHT[question]}</output>" in draft or (
                f"\\n{RIGHT[question]}\\n" in json.dumps(draft)
            )
            return (
                '{"verdict": "pass", "score": 9}' if right else '{"verdict": "revise", "score": 2}'
            )
        return f"<output>{SAMPLES[question][request.params.get('seed')]}</output>"

    return FunctionLLM(answer)


def by_id(mode: ModeReport) -> dict[str, ItemScore]:
    return {item.id: item for item in mode.items}


# -- the modes --------------------------------------------------------------------------------


def test_self_consistency_votes_on_n_samples(tmp_path: Path) -> None:
    fake = sampling_model()
    report = evaluate(write_dataset(tmp_path / "d.jsonl"), fake.model, run_log=False,
                      modes=["single", "self_consistency"], samples=3, progress=False)  # fmt: skip
    vote = report.mode("self_consistency")
    assert vote.samples == 3
    assert vote.calls == 9  # three samples each, no judge
    items = by_id(vote)
    assert [items[q].output for q in ("q0", "q1", "q2")] == ["4", "6", "1"]
    assert [items[q].calls for q in ("q0", "q1", "q2")] == [3, 3, 3]
    sampled = [r.params for r in fake.requests if r.params.get("seed") is not None]
    assert {p["temperature"] for p in sampled} == {0.7}
    assert sorted(p["seed"] for p in sampled) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_best_of_n_keeps_the_sample_the_critic_passed(tmp_path: Path) -> None:
    fake = sampling_model()
    report = evaluate(write_dataset(tmp_path / "d.jsonl"), fake.model, run_log=False,
                      modes=["best_of_n"], samples=3, progress=False,
                      sample_temperature=0.9)  # fmt: skip
    best = report.mode("best_of_n")
    assert best.samples == 3
    assert best.calls == 18  # three samples and three critiques each, all in the row
    assert best.accuracy == 1.0  # the critic found the right sample each time
    assert [by_id(best)[q].output for q in ("q0", "q1", "q2")] == ["4", "8", "7"]
    critiques = [r for r in fake.requests if "strict reviewer" in r.last_user_text]
    assert len(critiques) == 9
    assert {r.params.get("temperature") for r in critiques} == {0}  # the judge is greedy
    assert report.model == fake.model


def test_n_is_matched_to_the_loops_mean_calls_or_tokens(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "d.jsonl")
    report = evaluate(data, sampling_model().model, run_log=False, max_iterations=2,
                      modes=["best_of_n", "loop", "self_consistency", "single"],
                      progress=False)  # fmt: skip
    assert [m.mode for m in report.modes] == ["best_of_n", "loop", "self_consistency", "single"]
    loop = report.mode("loop")
    # q1 passes at once (2 calls); q0 and q2 are revised to the same answer, which stops the
    # loop (3 calls)
    assert loop.calls == 8
    assert report.mode("self_consistency").samples == round(8 / 3) == 3
    assert report.mode("best_of_n").samples == round(8 / 3 / 2) == 1  # 2 calls a sample
    by_tokens = evaluate(data, sampling_model().model, run_log=False, max_iterations=2,
                         modes=["single", "loop", "self_consistency"], match_cost="tokens",
                         progress=False)  # fmt: skip
    ratio = by_tokens.mode("loop").total_tokens / by_tokens.mode("single").total_tokens
    assert by_tokens.mode("self_consistency").samples == round(ratio)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"modes": ["single", "best_of_n"]}, "best_of_n matches the loop's cost"),
        ({"modes": ["loop", "self_consistency"], "match_cost": "tokens"}, "add single"),
        ({"modes": ["self_consistency"], "match_cost": "money"}, "unknown match_cost"),
        ({"modes": ["self_consistency"], "samples": 0}, "at least 1"),
    ],
)
def test_a_baseline_without_a_way_to_set_n_is_refused(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    from reflectkit.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=message):
        evaluate(write_dataset(tmp_path / "d.jsonl"), "x/y", progress=False, **kwargs)


def test_votes_compare_answers_as_the_matcher_does() -> None:
    numeric = Example("n", "q", 4, "numeric")
    assert answer_key(numeric, "So the answer is 4.") == answer_key(numeric, "4.0")
    text = Example("t", "q", "Paris", "exact")
    assert majority(text, ["Lyon", "**Paris.**", None, "paris", "lyon"]) == 0  # 2-2: first seen
    assert majority(text, ["Lyon", "**Paris.**", "paris"]) == 1
    assert majority(text, [None, None]) is None


# -- statistics -------------------------------------------------------------------------------


def test_mcnemar_exact_p_values() -> None:
    # 1 vs 9 discordant pairs: p = 2 * (C(10,0) + C(10,1)) / 2**10
    first = [True] * 1 + [False] * 9 + [True] * 5
    second = [False] * 1 + [True] * 9 + [True] * 5
    assert mcnemar_exact(first, second) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact([True] * 5, [False] * 5) == pytest.approx(2 / 32)
    assert mcnemar_exact([True, False], [True, False]) == 1.0  # no discordant pair
    assert mcnemar_exact([True, False], [False, True]) == 1.0  # capped at 1


def test_bootstrap_is_deterministic_and_contains_the_estimate() -> None:
    outcomes = [1.0] * 13 + [0.0] * 7
    interval = bootstrap_ci(outcomes)
    assert interval == bootstrap_ci(outcomes)  # the same seed, the same interval
    assert interval.estimate == 0.65
    assert 0.4 < interval.low < interval.estimate < interval.high < 0.9
    assert bootstrap_ci(outcomes, seed=7) != interval
    assert bootstrap_ci([1.0] * 10) == Interval(1.0, 1.0, 1.0)
    diff = paired_difference_ci([True] * 20, [False] * 20)
    assert (diff.estimate, diff.low, diff.high) == (1.0, 1.0, 1.0)
    assert diff.excludes_zero()
    assert not paired_difference_ci([True, False] * 10, [False, True] * 10).excludes_zero()


def hand_made(
    loop: list[bool], other: list[bool], other_mode: str, matched: str | None = "calls"
) -> EvalReport:
    def mode(name: str, outcomes: list[bool], calls: int) -> ModeReport:
        items = [ItemScore(f"e{i}", i, ok, "x", calls=calls, prompt_tokens=50 * calls)
                 for i, ok in enumerate(outcomes)]  # fmt: skip
        if name == "loop":
            return ModeReport(name, items)
        return ModeReport(name, items, samples=4, matched=matched)

    return EvalReport("d", "m", [mode("loop", loop, 4), mode(other_mode, other, 4)])


def test_the_report_says_plainly_whether_the_loop_beat_the_baseline(tmp_path: Path) -> None:
    beaten = hand_made([True] * 18 + [False] * 2, [True] * 5 + [False] * 15, "self_consistency")
    (pair,) = comparisons(beaten)["pairs"]
    assert pair["significant"]
    assert pair["only_reference_right"] == 13
    assert pair["sentence"].startswith("loop beat self_consistency at equal cost: 90 % vs 25 %")
    assert pair["sentence"] in beaten.to_markdown()

    # 12 of 20 vs 13 of 20, disagreeing on 3 examples: noise
    loop = [True] * 11 + [True, False, False] + [False] * 6
    other = [True] * 11 + [False, True, True] + [False] * 6
    tied = hand_made(loop, other, "self_consistency")
    (pair,) = comparisons(tied)["pairs"]
    assert not pair["significant"]
    assert pair["mcnemar_p"] == pytest.approx(1.0)
    markdown = tied.to_markdown()
    assert "| self_consistency (N=4) |" in markdown
    assert (
        "- loop did not beat self_consistency at equal cost: 60 % vs 65 % (difference −5 pts, "
        "95 % CI −"
    ) in markdown
    assert markdown.rstrip().endswith("McNemar p = 1).")
    data = tied.to_dict()["comparison"]
    assert data["accuracy"]["loop"]["accuracy"] == 0.6
    assert data["pairs"][0]["reference"] == "loop"

    given = hand_made(loop, other, "best_of_n", matched=None)
    assert comparisons(given)["pairs"][0]["sentence"].startswith(
        "loop did not beat best_of_n with N=4: "
    )
    by_tokens = hand_made(loop, other, "self_consistency", matched="tokens")
    assert " at equal cost in tokens: " in comparisons(by_tokens)["pairs"][0]["sentence"]

    without_loop = EvalReport("d", "m", [tied.modes[1]])
    assert comparisons(without_loop)["pairs"] == []

    png = plot_cost(tied, tmp_path / "cost.png")
    assert png.read_bytes()[:8] == PNG_MAGIC


# -- the command ------------------------------------------------------------------------------


def run_eval(args: list[str]) -> Any:
    return CliRunner().invoke(eval_command, args, catch_exceptions=False)


def test_the_command_runs_the_baselines_and_writes_the_cost_plot(tmp_path: Path) -> None:
    fake = sampling_model()
    out = tmp_path / "out"
    result = run_eval([str(write_dataset(tmp_path / "d.jsonl")), "-m", fake.model,
                       "--modes", "single,loop,best_of_n,self_consistency", "--max-iterations",
                       "2", "--output-dir", str(out), "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| self_consistency (N=3) |" in result.stdout
    assert "- loop did not beat self_consistency at equal cost: " in result.stdout
    assert (out / "cost.png").read_bytes()[:8] == PNG_MAGIC
    report = json.loads((out / "report.json").read_text())
    assert [p["mode"] for p in report["comparison"]["pairs"]] == [
        "single",
        "best_of_n",
        "self_consistency",
    ]
    assert (out / "self_consistency.2.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modes", "single,bogus"], "unknown mode 'bogus'"),
        (["--modes", "single,self_consistency"], "self_consistency matches the loop's cost"),
        (["--modes", "best_of_n", "--match-cost", "tokens"], "best_of_n matches the loop's"),
    ],
)
def test_bad_modes_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_eval([str(write_dataset(tmp_path / "d.jsonl")), "-m", "x/y", *args])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert message in result.output
