"""Reflexion: trials with lessons in between, and the lesson memory across runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import reflectkit as rk
from reflectkit.reflexion import task_key_for
from reflectkit.stores.memory import LessonStore
from reflectkit.testing import Request, ScriptedLLM

QUESTION = "What is 17 + 25? Carry the one."
LESSON = "I added the tens without carrying the one; add the ones first and carry."


def is_42(question: str, answer: str) -> bool | str:
    return answer.strip() == "42" or f"{answer} is wrong."


async def test_a_failed_trial_writes_a_lesson_that_the_next_trial_sees() -> None:
    fake = ScriptedLLM(["<output>32</output>", LESSON, "<output>42</output>"])
    events = [
        e
        async for e in rk.Reflector(fake.model, critic=is_42, max_iterations=1, trials=3).astream(
            QUESTION
        )
    ]
    trial_events = [e for e in events if isinstance(e, rk.TrialEvent)]
    assert len(trial_events) == 1
    assert trial_events[0].lesson == LESSON
    assert trial_events[0].result.output == "32"
    result = events[-1].result
    assert result.output == "42"
    assert result.passed
    assert [(t.number, t.output, t.passed, t.lesson) for t in result.trials] == [
        (1, "32", False, LESSON),
        (2, "42", True, None),
    ]
    assert result.lessons == [LESSON]
    assert result.usage.calls == 3  # two drafts and the lesson
    lesson_request, second_trial = fake.requests[1], fake.requests[2]
    assert "32 is wrong." in lesson_request.last_user_text
    assert "Write only the lesson" in lesson_request.last_user_text
    assert "Lessons from earlier attempts" in second_trial.last_user_text
    assert LESSON in second_trial.last_user_text
    assert QUESTION in second_trial.last_user_text


async def test_lessons_persist_and_reach_similar_tasks_once_they_led_to_a_pass(
    tmp_path: Path,
) -> None:
    path = tmp_path / "memory.sqlite3"
    fake = ScriptedLLM(["<output>32</output>", LESSON, "<output>42</output>"])
    first = await rk.areflect(
        QUESTION, model=fake.model, critic=is_42, max_iterations=1, trials=2, memory=path
    )
    assert first.passed
    with LessonStore(path) as store:
        (lesson,) = store.all()
        assert (lesson.outcome, lesson.task_key) == ("passed", task_key_for(QUESTION))

    seen: list[Request] = []

    def model(request: Request) -> str:
        seen.append(request)
        return "<output>53</output>"

    from reflectkit.testing import FunctionLLM

    later = FunctionLLM(model)
    similar = "What is 28 + 25? Remember to carry the one."
    result = await rk.areflect(similar, model=later.model, critic=lambda q, a: True, memory=path)
    assert result.lessons == [LESSON]
    assert LESSON in seen[0].last_user_text
    unrelated = await rk.areflect(
        "What is the capital of France?", model=later.model, critic=lambda q, a: True, memory=path
    )
    assert unrelated.lessons == []


async def test_lessons_that_never_led_to_a_pass_are_marked_failed(tmp_path: Path) -> None:
    store = LessonStore(tmp_path / "m.sqlite3")
    fake = ScriptedLLM(["<output>1</output>", "Lesson one.", "<output>2</output>"])
    with rk.Reflector(fake.model, critic=is_42, max_iterations=1, trials=2, memory=store) as r:
        result = await r.arun(QUESTION, task_key="sum-17-25")
    assert not result.passed
    assert [t.lesson for t in result.trials] == ["Lesson one.", None]
    assert [(x.task_key, x.outcome) for x in store.all()] == [("sum-17-25", "failed")]
    store.close()


def test_trials_need_a_critic_and_memory_must_be_usable() -> None:
    fake = ScriptedLLM([])
    with pytest.raises(rk.ConfigurationError, match="trials > 1 needs a critic"):
        rk.Reflector(fake.model, mode="single", trials=2)
    with pytest.raises(rk.ConfigurationError, match="memory must be"):
        rk.Reflector(fake.model, memory=42)
    with pytest.raises(rk.ConfigurationError, match="trials"):
        rk.Reflector(fake.model, trials=0)
