"""Stops: budgets, minimum score, best-draft selection. Never an exception for a budget stop."""

from __future__ import annotations

import asyncio

import pytest

import reflectkit as rk
from reflectkit.testing import FunctionLLM, Reply, Request, ScriptedLLM
from tests.conftest import verdict


def _scored(*scores: float) -> list[str]:
    """Drafts a, b, c ... each judged with the given score, never passed."""
    script = []
    for index, score in enumerate(scores):
        script += [f"<output>{chr(97 + index)}</output>", verdict(False, "more", score=score)]
    return script


async def test_running_out_of_iterations_returns_the_best_scored_draft() -> None:
    fake = ScriptedLLM(_scored(4, 8, 6))
    result = await rk.areflect("q", model=fake.model, max_iterations=3)
    assert result.stop_reason is rk.StopReason.MAX_ITERATIONS
    assert result.output == "b"
    assert result.final_iteration == 2
    assert result.selection == "best"
    assert result.thinking == result.iterations[1].draft.thinking


async def test_ties_go_to_the_latest_and_a_pass_beats_any_score() -> None:
    fake = ScriptedLLM(_scored(5, 5))
    assert (await rk.areflect("q", model=fake.model, max_iterations=2)).output == "b"
    fake = ScriptedLLM(["<output>a</output>", verdict(True, score=2)])
    result = await rk.areflect("q", model=fake.model)
    assert (result.output, result.selection, result.stop_reason) == ("a", "last", "passed")


async def test_min_score_ends_the_run_as_good_enough() -> None:
    fake = ScriptedLLM(_scored(5, 8, 9))
    result = await rk.areflect("q", model=fake.model, max_iterations=5, min_score=7.5)
    assert result.stop_reason is rk.StopReason.MIN_SCORE
    assert result.output == "b"
    assert result.passed
    assert len(fake.requests) == 4


async def test_a_token_budget_hit_mid_run_stops_cleanly_with_the_best_draft() -> None:
    fake = ScriptedLLM(
        [
            Reply("<output>a</output>", prompt_tokens=100, completion_tokens=10),
            Reply(verdict(False, "no", score=7), prompt_tokens=100, completion_tokens=10),
            Reply("<output>b</output>", prompt_tokens=100, completion_tokens=10),
            Reply(verdict(False, "no", score=3), prompt_tokens=100, completion_tokens=10),
            Reply("<output>c</output>", prompt_tokens=100, completion_tokens=10),
        ]
    )
    result = await rk.areflect("q", model=fake.model, max_iterations=10, token_budget=400)
    assert result.stop_reason is rk.StopReason.TOKEN_BUDGET
    assert result.usage.total_tokens == 440  # the step that crossed the budget finished
    assert len(fake.requests) == 4
    assert result.output == "a"  # scored 7, better than b's 3
    assert result.selection == "best"


async def test_a_budget_spent_by_the_first_draft_skips_the_critic() -> None:
    fake = ScriptedLLM([Reply("<output>a</output>", prompt_tokens=50, completion_tokens=60)])
    result = await rk.areflect("q", model=fake.model, token_budget=100)
    assert result.stop_reason is rk.StopReason.TOKEN_BUDGET
    assert result.output == "a"
    assert len(fake.requests) == 1


async def test_a_cost_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from reflectkit.models.llm import _load

    fake = ScriptedLLM(_scored(1, 2, 3), name="costly")
    _load().register_model(
        {
            fake.model: {
                "input_cost_per_token": 0.001,
                "output_cost_per_token": 0.001,
                "litellm_provider": "reflectkit-test",
                "mode": "chat",
            }
        }
    )
    result = await rk.areflect(
        "question words here", model=fake.model, max_iterations=3, cost_budget=0.05
    )
    assert result.stop_reason is rk.StopReason.COST_BUDGET
    assert result.usage.cost_usd >= 0.05
    assert result.usage.calls < 6


async def test_the_time_budget_cuts_a_slow_step_and_keeps_the_work() -> None:
    async def model(request: Request) -> str:
        if "strict reviewer" in request.last_user_text:
            return verdict(False, "again", score=6)
        if "revision" in request.last_user_text:
            await asyncio.sleep(30)  # a revision that would take far too long
        return "<output>first</output>"

    fake = FunctionLLM(model)
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await rk.areflect("q", model=fake.model, max_iterations=5, time_budget=0.5)
    assert loop.time() - start < 3
    assert result.stop_reason is rk.StopReason.TIME_BUDGET
    assert result.output == "first"
    assert len(result.iterations) == 1


def test_bad_budgets_are_configuration_errors() -> None:
    for settings in (
        {"token_budget": 0},
        {"cost_budget": -1},
        {"time_budget": 0},
        {"min_score": 11},
        {"critic_timeout": 0},
    ):
        with pytest.raises(rk.ConfigurationError):
            rk.ReflectConfig(**settings)
