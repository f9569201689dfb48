"""wrap(fn): a plain chatbot function, sync or async, reflects before it answers."""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any

import pytest

import reflectkit as rk
from reflectkit.integrations.wrapping import wrap
from reflectkit.testing import ScriptedLLM
from tests.conftest import QUESTION, verdict

Messages = list[dict[str, Any]]


class Scripted:
    """A chatbot function that answers from a script and records what it was sent."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.calls: list[Messages] = []

    def __call__(self, messages: Messages) -> str:
        self.calls.append(messages)
        return self.replies.pop(0)


def test_a_sync_chatbot_stays_sync_and_returns_the_revised_answer() -> None:
    def chatbot(messages: Messages) -> str:
        return bot(messages)

    bot = Scripted(
        "<thinking>12 - 5 = 6</thinking><output>3</output>",
        verdict(False, "12 - 5 is 7."),
        "<output>4</output>",
        verdict(True),
    )
    reflective = wrap(chatbot)
    assert not inspect.iscoroutinefunction(reflective)
    assert reflective.__name__ == "chatbot"
    assert reflective([{"role": "user", "content": QUESTION}]) == "4"
    assert len(bot.calls) == 4
    assert bot.calls[0][0]["role"] == "system"
    assert "<output>" in bot.calls[0][0]["content"]
    assert "12 - 5 is 7." in bot.calls[2][-1]["content"]  # the critique reached the revision


async def test_an_async_chatbot_stays_async_and_gives_the_whole_result_on_request() -> None:
    bot = Scripted("<output>5</output>", "<output>4</output>")

    async def chatbot(messages: Messages) -> str:
        await asyncio.sleep(0)
        return bot(messages)

    reflective = wrap(chatbot, critic=lambda q, a: a == "4" or "Not 4.", return_result=True)
    assert inspect.iscoroutinefunction(reflective)
    result = await reflective(QUESTION)
    assert isinstance(result, rk.ReflectionResult)
    assert (result.output, result.stop_reason) == ("4", rk.StopReason.PASSED)
    assert result.model.startswith("wrapped/chatbot-")
    assert result.usage.calls == 2
    assert result.usage.completion_tokens > 0


def test_the_conversation_reaches_the_function_and_extra_arguments_too() -> None:
    seen: list[tuple[Messages, str]] = []

    def chatbot(messages: Messages, persona: str = "plain") -> str:
        seen.append((messages, persona))
        return "<output>Ada</output>"

    reflective = wrap(chatbot, mode="single")
    history = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    assert reflective(history, persona="pirate") == "Ada"
    messages, persona = seen[0]
    assert persona == "pirate"
    assert [m["content"] for m in messages[1:3]] == ["My name is Ada.", "Hello Ada."]
    assert history[2] == {"role": "user", "content": "What is my name?"}  # not mutated


def test_a_separate_critic_model_judges_instead_of_the_function() -> None:
    bot = Scripted("<output>3</output>", "<output>4</output>")
    critic = ScriptedLLM([verdict(False, "Wrong."), verdict(True)])
    assert wrap(bot, critic_model=critic.model)(QUESTION) == "4"
    assert len(bot.calls) == 2
    assert len(critic.requests) == 2


def test_concurrent_calls_from_threads_keep_their_own_arguments_and_answers() -> None:
    def chatbot(messages: Messages, tag: str) -> str:
        return f"<output>{tag}</output>"

    reflective = wrap(chatbot, mode="single")
    answers: dict[str, str] = {}

    def call(tag: str) -> None:
        answers[tag] = reflective(QUESTION, tag)

    threads = [threading.Thread(target=call, args=(f"t{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {f"t{i}": f"t{i}" for i in range(6)}


async def test_concurrent_async_calls_keep_their_own_arguments() -> None:
    async def chatbot(messages: Messages, tag: str) -> str:
        await asyncio.sleep(0.001)
        return f"<output>{tag}</output>"

    reflective = wrap(chatbot, mode="single")
    answers = await asyncio.gather(*(reflective(QUESTION, f"a{i}") for i in range(6)))
    assert answers == [f"a{i}" for i in range(6)]


def test_a_failing_function_fails_the_run_with_its_error_named() -> None:
    def chatbot(messages: Messages) -> str:
        raise RuntimeError("upstream down")

    with pytest.raises(rk.ProviderError, match="RuntimeError: upstream down") as caught:
        wrap(chatbot)(QUESTION)
    assert not caught.value.retryable


def test_a_function_that_returns_no_text_is_a_clear_error() -> None:
    with pytest.raises(rk.ProviderError, match="returned dict: a wrapped function returns a str"):
        wrap(lambda messages: {"content": "4"}, mode="single")(QUESTION)


def test_settings_are_checked_when_wrapping() -> None:
    with pytest.raises(rk.ConfigurationError, match="max_iterations"):
        wrap(Scripted(), max_iteration=2)
    with pytest.raises(rk.ConfigurationError, match="needs a function"):
        wrap("not a function")
