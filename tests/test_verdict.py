"""Reading LLM critics' verdicts: never a crash, a malformed one means revise."""

from __future__ import annotations

import pytest

from reflectkit import ConfigurationError
from reflectkit.critics import Verdict, parse_verdict


@pytest.mark.parametrize(
    ("text", "passed", "score", "feedback"),
    [
        ('{"verdict": "pass", "score": 9, "issues": [], "feedback": ""}', True, 9, ""),
        ('{"verdict": "revise", "score": 4, "feedback": "7 - 3 = 4"}', False, 4, "7 - 3 = 4"),
        ('```json\n{"Verdict": "PASS", "score": "8"}\n```', True, 8, ""),
        (
            'Here is my review:\n{"decision": "reject", "feedback": "wrong"} Thanks!',
            False,
            None,
            "wrong",
        ),
        ('{"pass": true, "score": 15}', True, 10, ""),
        ('{"verdict": "approved", "score": -3}', True, 0, ""),
        ('{"verdict": "needs-revision", "feedback": {"step": 2}}', False, None, '{"step": 2}'),
        ("VERDICT: pass", True, None, ""),
        ("PASS", True, None, ""),
    ],
)
def test_verdicts_in_the_shapes_critics_write(
    text: str, passed: bool, score: float | None, feedback: str
) -> None:
    verdict = parse_verdict(text, critic="llm:x")
    assert verdict.passed is passed
    assert verdict.score == score
    assert verdict.feedback == feedback
    assert not verdict.malformed
    assert verdict.critic == "llm:x"
    assert verdict.raw == text


@pytest.mark.parametrize(
    "text",
    ["", "The answer looks off to me.", '{"score": 7}', "{not json", '["pass"]', '{"verdict": 3}'],
)
def test_unreadable_verdicts_mean_revise_with_the_raw_text(text: str) -> None:
    verdict = parse_verdict(text)
    assert not verdict.passed
    assert verdict.malformed
    assert verdict.feedback == text.strip()


def test_issues_are_kept_as_a_list() -> None:
    verdict = parse_verdict('{"verdict": "revise", "issues": ["a", " ", "b"], "feedback": "f"}')
    assert verdict.issues == ["a", "b"]
    assert parse_verdict('{"verdict": "revise", "issues": "one"}').issues == ["one"]


def test_a_verdict_refuses_an_out_of_range_score() -> None:
    with pytest.raises(
        ConfigurationError, match=r"invalid Verdict: score: .*less than or equal to 10"
    ):
        Verdict(passed=True, score=11)
