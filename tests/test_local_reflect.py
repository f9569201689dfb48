"""reflectkit end to end on the embedded model: the default run, both modes, live streaming.

The model is SmolLM2-135M: tiny and wrong as often as right, so these tests assert what must
hold whatever it answers (a non-empty answer, the format help doing its job, the events), not
that the answer is correct. Accuracy lives in benchmarks/adherence.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp")

import reflectkit as rk
from reflectkit.config import DEFAULT_MODEL
from tests.conftest import QUESTION

pytestmark = pytest.mark.local

FAST = {"max_tokens": 96}  # keeps each call to a second or two on two cores


async def test_the_default_model_is_local_and_runs_single_pass_with_format_help(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REFLECTKIT_MODEL", raising=False)
    reflector = rk.Reflector(**FAST)
    assert reflector.model == DEFAULT_MODEL
    assert reflector.mode == "single"  # its self-critique is noise: see capabilities.py
    result = await reflector.arun(QUESTION)
    assert result.output.strip()
    assert result.stop_reason is rk.StopReason.SINGLE_PASS
    draft = result.iterations[0].draft
    assert draft.text.startswith("<thinking>\n")  # the prefill
    # Either the model wrote its answer block or the repair produced one.
    assert (
        draft.parse_status in (rk.ParseStatus.COMPLETE, rk.ParseStatus.UNCLOSED) or draft.repaired
    )


async def test_the_full_loop_runs_on_the_local_model() -> None:
    result = await rk.areflect(
        "What is the capital of France?",
        model=DEFAULT_MODEL,
        mode="loop",
        max_iterations=2,
        **FAST,
    )
    assert result.output.strip()
    assert result.mode == "loop"
    assert result.stop_reason in (
        rk.StopReason.PASSED,
        rk.StopReason.MAX_ITERATIONS,
        rk.StopReason.NO_CHANGE,
    )
    assert result.iterations[0].verdict is not None
    assert result.usage.calls >= 2
    assert result.usage.completion_tokens > 0


async def test_a_code_critic_drives_the_loop_on_the_local_model() -> None:
    seen: list[str] = []

    def mentions_paris(question: str, answer: str) -> bool | str:
        seen.append(answer)
        return "paris" in answer.lower() or "The capital of France is Paris. Say so."

    result = await rk.areflect(
        "What is the capital of France?",
        model=DEFAULT_MODEL,
        critic=mentions_paris,
        max_iterations=2,
        **FAST,
    )
    assert result.mode == "loop"
    assert seen
    assert seen[0] == result.iterations[0].draft.output


async def test_single_pass_streams_output_deltas_from_the_local_model() -> None:
    reflector = rk.Reflector(DEFAULT_MODEL, mode="single", **FAST)
    events = [e async for e in reflector.astream("What is the capital of France?")]
    result = events[-1]
    assert isinstance(result, rk.ResultEvent)
    deltas = [e for e in events if isinstance(e, rk.OutputDelta)]
    assert deltas
    assert "".join(d.text for d in deltas) == result.result.output


def test_the_readme_command_runs_offline_with_no_key() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    env.pop("REFLECTKIT_MODEL", None)
    env["NO_PROXY"] = env["no_proxy"] = "*"
    done = subprocess.run(
        [sys.executable, "-m", "reflectkit", "run", QUESTION],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert done.stderr == ""
