"""CodeTestCritic and run_tests on real subprocesses: verdicts, extraction, limits, isolation."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import reflectkit as rk
from reflectkit.critics.base import CritiqueRequest
from reflectkit.critics.code import (
    NO_CODE_FEEDBACK,
    CodeTestCritic,
    TestRun,
    extract_code,
    run_tests,
)
from reflectkit.errors import ConfigurationError
from reflectkit.result import Draft
from reflectkit.testing import ScriptedLLM

# HumanEval/0, as published: prompt, tests and entry point.
HUMANEVAL_0_PROMPT = '''from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)
    True
    """
'''
HUMANEVAL_0_TEST = """

METADATA = {
    'author': 'jt',
    'dataset': 'test'
}


def check(candidate):
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False
    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True
    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.8) == False
    assert candidate([1.0, 2.0, 3.0, 4.0, 5.0, 2.0], 0.1) == True
    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 1.0) == True
    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 0.5) == False

"""
HUMANEVAL_0_CORRECT = """    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2:
                distance = abs(elem - elem2)
                if distance < threshold:
                    return True

    return False
"""
# Compares neighbours without sorting first: misses 5.9 and 5.0 in the third assert.
HUMANEVAL_0_WRONG = """    return any(abs(a - b) < threshold for a, b in zip(numbers, numbers[1:]))
"""

ADD_TESTS = 'assert add(2, 3) == 5, "add(2, 3) should be 5"\n'


def request(answer: str, text: str | None = None) -> CritiqueRequest:
    draft = Draft(text=answer if text is None else text, output=answer)
    return CritiqueRequest(question="Write add(a, b).", answer=answer, draft=draft, iteration=1)


def fenced(code: str) -> str:
    return f"Here you go:\n\n```python\n{code}```\n\nIt works."


def gone(pid: int, within: float = 2.0) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/status") as status:
                if "\nState:\tZ" in status.read():
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def exists(path: str) -> bool:
    return os.path.exists(path)


def tasks_on_the_machine() -> int:
    with open("/proc/loadavg") as loadavg:
        return int(loadavg.read().split()[3].split("/")[1])


def printed_number(label: str, output: str) -> int:
    match = re.search(rf"{label} (\d+)", output)
    assert match, output
    return int(match.group(1))


# -- verdicts ---------------------------------------------------------------------------------


async def test_passing_code_passes() -> None:
    code = "def add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    input()\n"
    verdict = await CodeTestCritic(ADD_TESTS).acritique(request(fenced(code)))
    assert verdict == rk.Verdict(passed=True, score=10, critic="code-tests")


async def test_a_failing_assert_gives_its_message_as_feedback() -> None:
    critic = CodeTestCritic(ADD_TESTS, name="adder")
    verdict = await critic.acritique(request(fenced("def add(a, b):\n    return a - b\n")))
    assert not verdict.passed
    assert verdict.critic == "adder"
    assert verdict.score == 0
    assert 'assert add(2, 3) == 5, "add(2, 3) should be 5"' in verdict.feedback
    assert "AssertionError: add(2, 3) should be 5" in verdict.feedback
    assert verdict.issues == [
        "tests: AssertionError: add(2, 3) should be 5 [tests.py line 1: assert add(2, 3) == 5, "
        '"add(2, 3) should be 5"]'
    ]


async def test_a_bare_assert_shows_what_the_code_returned() -> None:
    run = await run_tests("def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5\n")
    assert "AssertionError" in run.reports[0]
    assert "(re-evaluated: add(2, 3) returned -1)" in run.reports[0]


async def test_each_test_function_runs_and_the_count_gives_the_score() -> None:
    tests = (
        "def test_small():\n    assert add(1, 1) == 2\n\n"
        "def test_negative():\n    assert add(-1, -1) == -2, 'negatives'\n\n"
        "async def test_async():\n    assert add(2, 2) == 4\n\n"
        "def test_large():\n    assert add(10**6, 1) == 10**6 + 1, 'large'\n"
    )
    # Wrong for negatives and large numbers; its own test_* function is not one of the tests.
    code = "def add(a, b):\n    return a + b if 0 <= a < 100 else 0\n\ndef test_own():\n    1 / 0\n"
    verdict = await CodeTestCritic(tests).acritique(request(fenced(code)))
    assert verdict.score == 5.0
    assert verdict.feedback.startswith("2 of 4 tests failed.")
    assert [issue.split(":")[0] for issue in verdict.issues] == ["test_negative", "test_large"]
    assert "AssertionError: negatives" in verdict.feedback
    assert "AssertionError: large" in verdict.feedback
    assert "test_own" not in verdict.feedback


async def test_humaneval_check_is_called_with_the_entry_point() -> None:
    critic = CodeTestCritic(HUMANEVAL_0_TEST, entry_point="has_close_elements")
    right = await critic.acritique(request(fenced(HUMANEVAL_0_PROMPT + HUMANEVAL_0_CORRECT)))
    assert right.passed
    wrong = await critic.acritique(request(fenced(HUMANEVAL_0_PROMPT + HUMANEVAL_0_WRONG)))
    assert not wrong.passed
    assert wrong.score == 0
    line = "assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True"
    assert wrong.issues == [f"check(has_close_elements): AssertionError [tests.py line 12: {line}]"]
    assert line in wrong.feedback
    assert "returned False" in wrong.feedback


async def test_a_missing_entry_point_is_reported() -> None:
    critic = CodeTestCritic(HUMANEVAL_0_TEST, entry_point="has_close_elements")
    verdict = await critic.acritique(request(fenced("def close(numbers, t):\n    return True\n")))
    assert not verdict.passed
    assert "NameError: the solution does not define has_close_elements" in verdict.feedback


async def test_a_syntax_error_in_the_code_is_the_feedback() -> None:
    verdict = await CodeTestCritic(ADD_TESTS).acritique(request(fenced("def add(a, b) return\n")))
    assert not verdict.passed
    assert "SyntaxError" in verdict.feedback
    assert "def add(a, b) return" in verdict.feedback
    assert verdict.issues[0].startswith("solution: SyntaxError")


async def test_an_answer_without_code_asks_for_a_code_block() -> None:
    verdict = await CodeTestCritic(ADD_TESTS).acritique(request("Just add the two numbers."))
    assert not verdict.passed
    assert verdict.feedback == NO_CODE_FEEDBACK


async def test_code_in_the_thinking_is_used_when_the_answer_has_none() -> None:
    code = fenced("def add(a, b):\n    return a + b\n")
    raw = f"<thinking>{code}</thinking>See above."
    verdict = await CodeTestCritic(ADD_TESTS).acritique(request("See above.", text=raw))
    assert verdict.passed


async def test_long_feedback_is_trimmed_but_keeps_each_message() -> None:
    tests = "".join(
        f"def test_{i}():\n    assert add({i}, 0) == {i}, 'x' * 900 + ' end of message {i}'\n\n"
        for i in range(8)
    )
    critic = CodeTestCritic(tests, max_feedback_chars=1200)
    verdict = await critic.acritique(request(fenced("def add(a, b):\n    return -1\n")))
    assert len(verdict.feedback) <= 1200
    assert verdict.feedback.startswith("8 of 8 tests failed.")
    assert "end of message 0" in verdict.feedback
    assert "more failures not shown" in verdict.feedback
    assert len(verdict.issues) == 8


# -- extraction -------------------------------------------------------------------------------


def test_extract_a_fenced_block() -> None:
    assert extract_code(fenced("x = 1\n")) == "x = 1\n"
    assert extract_code("```py\nx = 1\n```") == "x = 1\n"
    assert extract_code("1. Step:\n\n   ```python\n   x = 1\n   ```\n") == "x = 1\n"


def test_extract_joins_python_blocks_and_skips_others() -> None:
    text = (
        "```python\ndef helper():\n    return 1\n```\n"
        "```bash\npip install nothing\n```\n"
        "```python\n>>> helper()\n1\n```\n"
        "```python\ndef main():\n    return helper()\n```\n"
    )
    assert extract_code(text) == "def helper():\n    return 1\n\ndef main():\n    return helper()\n"


def test_extract_drops_blocks_after_the_entry_point() -> None:
    text = "```python\ndef f():\n    return 1\n```\nUsage:\n```python\nprint(f())\n```"
    assert extract_code(text, entry_point="f") == "def f():\n    return 1\n"
    assert extract_code(text) == "def f():\n    return 1\n\nprint(f())\n"


def test_extract_untagged_fences_only_when_they_parse() -> None:
    assert extract_code("```\ndef f():\n    pass\n```") == "def f():\n    pass\n"
    assert extract_code("```\nThe output is 3.\n```") is None


def test_extract_unfenced_code_and_prose() -> None:
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1\n"
    assert extract_code("The answer is to add them.") is None
    assert extract_code("yes") is None  # parses as Python, but is not code
    assert extract_code("Answer: 42") is None
    assert extract_code("") is None


def test_extract_an_unclosed_fence() -> None:
    assert extract_code("```python\ndef f():\n    return 1\n") == "def f():\n    return 1\n"


# -- limits and isolation ---------------------------------------------------------------------


async def test_an_infinite_loop_times_out_and_its_child_dies() -> None:
    code = (
        "import subprocess\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print('CHILD', child.pid)\n"
        "while True:\n    pass\n"
    )
    started = time.monotonic()
    run = await run_tests(code, "pass", timeout=1.0)
    assert time.monotonic() - started < 3.0
    assert run.timed_out
    assert not run.passed
    assert run.returncode is None
    assert run.failures == ["The code timed out after 1 s."]
    assert gone(printed_number("CHILD", run.output))
    verdict = CodeTestCritic("pass", timeout=1.0).verdict(run)
    assert "timed out after 1 s" in verdict.feedback
    assert verdict.score == 0


async def test_cancelling_a_run_kills_its_processes_and_removes_its_directory(
    tmp_path: Path,
) -> None:
    # What happens when the loop's critic_timeout or time_budget cuts the critic off. The code
    # reports through a file outside its scratch directory: it can write anywhere.
    report = tmp_path / "where.txt"
    code = (
        "import os, subprocess\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(report)!r}, 'w').write(f'{{os.getcwd()}} {{child.pid}}')\n"
        "while True:\n    pass\n"
    )
    task = asyncio.create_task(run_tests(code, "pass", timeout=30.0))
    for _ in range(250):  # until the code has started: at most 5 s
        if read(report):
            break
        await asyncio.sleep(0.02)
    scratch, pid = read(report).split()
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0
    assert gone(int(pid))
    assert not exists(scratch)


async def test_a_background_child_neither_holds_the_run_open_nor_survives() -> None:
    code = "import subprocess\nprint('CHILD', subprocess.Popen(['sleep', '60']).pid)\n"
    started = time.monotonic()
    run = await run_tests(code, "pass", timeout=5.0)
    assert time.monotonic() - started < 2.0
    assert run.passed
    assert gone(printed_number("CHILD", run.output))


async def test_a_child_that_leaves_the_group_does_not_hang_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    code = (
        "import subprocess\n"
        "print('CHILD', subprocess.Popen(['sleep', '60'], start_new_session=True).pid)\n"
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="reflectkit.critics.code"):
        run = await run_tests(code, "pass", timeout=5.0)
    pid = printed_number("CHILD", run.output)
    try:
        assert time.monotonic() - started < 3.0
        assert run.passed
        assert "outside its process group" in caplog.text
        assert not gone(pid, within=0)  # documented: it escapes the group kill
    finally:
        os.kill(pid, signal.SIGKILL)


async def test_exceeding_the_memory_limit_is_a_failed_verdict() -> None:
    critic = CodeTestCritic("def test_big():\n    x = bytearray(10**10)\n", memory_mb=256)
    verdict = await critic.acritique(request(fenced("pass\n")))
    assert not verdict.passed
    assert "exceeded the 256 MB memory limit" in verdict.feedback
    grow = "x = []\nwhile True:\n    x.append(' ' * 10**6)\n"
    run = await run_tests(grow, "pass", memory_mb=128)
    assert not run.passed
    assert "exceeded the 128 MB memory limit" in run.failures[0]


async def test_exceeding_the_cpu_limit_is_a_failed_verdict() -> None:
    run = await run_tests("while True:\n    pass\n", "pass", timeout=10.0, cpu_seconds=1)
    assert not run.passed
    assert not run.timed_out
    assert run.returncode == -signal.SIGXCPU
    assert run.failures == ["The code exceeded the 1 s CPU-time limit."]


async def test_crashes_are_failed_verdicts() -> None:
    segfault = await run_tests("import ctypes\nctypes.string_at(0)\n", "pass")
    assert segfault.failures == ["The code crashed: killed by SIGSEGV."]
    assert "Segmentation fault" in segfault.reports[0]  # faulthandler's traceback
    exited = await run_tests("import os\nos._exit(3)\n", "pass")
    assert exited.failures == ["The code exited with code 3 before the tests finished."]
    assert exited.returncode == 3


async def test_a_summary_printed_by_the_code_is_not_trusted() -> None:
    fake = '{"total": 1, "failed": 0, "failures": []}'
    code = f"import os\nprint('\\n@@reflectkit-{'0' * 32}@@{fake}')\nos._exit(0)\n"
    run = await run_tests(code, "assert False")
    assert not run.passed
    assert run.total == 0


async def test_fifty_megabytes_of_output_are_read_through_a_window() -> None:
    started = time.monotonic()
    run = await run_tests("print('x' * 50_000_000)\n", "print('END OF OUTPUT')\n")
    assert time.monotonic() - started < 5.0
    assert run.passed
    assert len(run.output) <= 20_000
    assert "bytes of output dropped" in run.output or "[...]" in run.output
    assert run.output.rstrip().endswith("END OF OUTPUT")


async def test_the_code_cannot_see_the_callers_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "sk-planted-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    code = (
        "import os, subprocess\n"
        "print(dict(os.environ))\n"
        "print(open('/proc/self/environ').read())\n"
        "print(subprocess.run(['env'], capture_output=True, text=True).stdout)\n"
    )
    tests = (
        "import os\n"
        "assert 'OPENAI_API_KEY' not in os.environ\n"
        "assert 'PYTHONPATH' not in os.environ\n"
    )
    run = await run_tests(code, tests)
    assert run.passed, run.reports
    assert secret not in run.output
    assert "LANG=C.UTF-8" in run.output


async def test_the_code_runs_in_a_scratch_directory_that_is_removed() -> None:
    code = (
        "import os\n"
        "open('left-behind.txt', 'w').write('x')\n"
        "print('CWD', os.getcwd())\n"
        "assert os.environ['HOME'] == os.environ['TMPDIR'] == os.getcwd()\n"
    )
    run = await run_tests(code, "import os\nassert os.path.exists('left-behind.txt')\n")
    assert run.passed, run.reports
    cwd = re.search(r"CWD (\S+)", run.output)
    assert cwd
    assert cwd.group(1) != os.getcwd()
    assert not exists(cwd.group(1))
    assert not exists(os.path.join(cwd.group(1), "left-behind.txt"))


async def test_the_limits_are_set_in_the_child() -> None:
    tests = f"""
import resource, subprocess
assert resource.getrlimit(resource.RLIMIT_AS) == (64 << 20, 64 << 20)
assert resource.getrlimit(resource.RLIMIT_CPU) == (3, 4)
assert resource.getrlimit(resource.RLIMIT_FSIZE) == (10 << 20, 10 << 20)
assert resource.getrlimit(resource.RLIMIT_NOFILE) == (64, 64)
assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
assert resource.getrlimit(resource.RLIMIT_NPROC)[0] >= {tasks_on_the_machine()}
assert subprocess.run(['true']).returncode == 0

def test_big_file():
    with open('big', 'wb') as f:
        f.write(b'x' * (11 << 20))
"""
    run = await run_tests("pass\n", tests, timeout=2.0, memory_mb=64)
    assert run.failed == 1, run.reports
    assert "File too large" in run.failures[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tests": ""}, "needs tests"),
        ({"tests": "  \n"}, "needs tests"),
        ({"tests": "def test_(:"}, "do not parse"),
        ({"tests": "pass", "timeout": 0}, "timeout must be > 0"),
        ({"tests": "pass", "timeout": -1}, "timeout must be > 0"),
        ({"tests": "pass", "memory_mb": 16}, "memory_mb must be at least 32"),
        ({"tests": "pass", "cpu_seconds": 0}, "cpu_seconds must be > 0"),
        ({"tests": "pass", "max_feedback_chars": 10}, "max_feedback_chars"),
        ({"tests": "pass", "entry_point": "not a name"}, "entry_point"),
    ],
)
def test_bad_arguments_raise_configuration_error(kwargs: dict[str, object], message: str) -> None:
    tests = kwargs.pop("tests")
    with pytest.raises(ConfigurationError, match=message) as caught:
        CodeTestCritic(tests, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


async def test_run_tests_checks_its_limits_too() -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        await run_tests("pass", "pass", timeout=0)


def test_test_run_is_frozen() -> None:
    run = TestRun(passed=True, total=1, failed=0, output="", timed_out=False, returncode=0)
    with pytest.raises(AttributeError):
        run.passed = False  # type: ignore[misc]


# -- in the loop ------------------------------------------------------------------------------


async def test_the_loop_revises_until_the_tests_pass() -> None:
    wrong = "<thinking>subtract?</thinking><output>\n" + fenced(
        "def add(a, b):\n    return a - b\n"
    )
    right = "<thinking>no: add</thinking><output>\n" + fenced("def add(a, b):\n    return a + b\n")
    wrong, right = wrong + "</output>", right + "</output>"
    fake = ScriptedLLM([wrong, right])
    result = await rk.areflect(
        "Write a Python function add(a, b).", model=fake.model, critic=CodeTestCritic(ADD_TESTS)
    )
    assert result.passed
    assert result.stop_reason is rk.StopReason.PASSED
    assert len(result.iterations) == 2
    revise_prompt = fake.requests[1].last_user_text
    assert 'assert add(2, 3) == 5, "add(2, 3) should be 5"' in revise_prompt
    assert "AssertionError: add(2, 3) should be 5" in revise_prompt
    assert fake.remaining == 0


# -- hostile answers --------------------------------------------------------------------------
# Each answer's add() is wrong, and the answer tries to pass anyway, or to read the secrets of
# the process that runs the critic. They run through CodeTestCritic in a process of their own,
# started the way a developer starts an app: API keys in its environment, one on its command
# line. Each must fail, and none of those secrets may show in anything the critic hands back.

PLANTED = "sk-planted-5f0c2a9e7d41b3c6"
PLANTED_ARGUMENT = "hunter2-planted-argument-77"
HOSTILE_TESTS = """
def test_add():
    assert add(2, 3) == 5

def test_add_negative():
    assert add(-1, -1) == -2
"""
WRONG_ADD = "def add(a, b):\n    return a - b\n"
LEAK = """
def _peek(path):
    try:
        with open(path, 'rb') as f:
            return f.read().replace(b'\\0', b' ').decode(errors='replace')
    except Exception as e:
        return repr(e)
"""
HOSTILE = {
    "rewrites the tests": "open('tests.py', 'w').write('pass\\n')\n",
    "deletes every file it can": (
        "import os\n"
        "for name in os.listdir('.'):\n"
        "    try:\n        os.remove(name)\n    except OSError:\n        pass\n"
    ),
    "monkeypatches the runner by name": (
        "import sys\n"
        "runner = sys.modules['__main__']\n"
        "for name in ('attempt', 'failure', 'send', 'work', 'judge', 'explain'):\n"
        "    setattr(runner, name, lambda *a, **k: None)\n"
    ),
    "monkeypatches builtins and modules": (
        "import builtins, json, os, traceback\n"
        "builtins.repr = lambda o: \"('end', 1)\"\n"
        "builtins.isinstance = lambda *a: False\n"
        'json.dumps = lambda *a, **k: \'{"finished": true, "total": 2, "failed": 0}\'\n'
        "traceback.format_exception = lambda *a, **k: ['all fine']\n"
        "_write = os.write\n"
        "os.write = lambda fd, data: _write(fd, data.replace(b'False', b'True'))\n"
    ),
    "empties sys.modules": (
        "import sys\n"
        "for name in ('json', 'ast', 'traceback', 'linecache', 'os', 'hmac', 'asyncio'):\n"
        "    sys.modules[name] = None\n"
    ),
    "prints a fake verdict": (
        "import os\n"
        "print('\\n@@reflectkit-' + '0' * 32 + '@@{\"total\": 2, \"failed\": 0}')\n"
        'print(\'0\' * 64 + \' {"finished": true, "garbled": false, "returncode": 0, \'\n'
        '      \'"total": 2, "failed": 0, "failures": []}\')\n'
        "os._exit(0)\n"
    ),
    "exits early with exit(0)": "raise SystemExit(0)\n",
    "exits during a test": ("import sys\ndef add(a, b):\n    sys.exit(0)\n"),
    "leaves with os._exit(0)": "import os\nos._exit(0)\n",
    "replaces the test functions while they run": (
        "def add(a, b):\n"
        "    g = globals()\n"
        "    for name in [n for n in g if n.startswith('test_')]:\n"
        "        g[name] = lambda: None\n"
        "    return a - b\n"
    ),
    "swaps the tests' code objects": (
        "def add(a, b):\n"
        "    for f in list(globals().values()):\n"
        "        if getattr(f, '__name__', '').startswith('test_'):\n"
        "            f.__code__ = (lambda: None).__code__\n"
        "    return a - b\n"
    ),
    "reads its parent's environment and command line": LEAK
    + (
        "import os\n"
        "ppid = os.getppid()\n"
        "print('PARENT', _peek(f'/proc/{ppid}/environ'), _peek(f'/proc/{ppid}/cmdline'))\n"
        "raise AssertionError(_peek(f'/proc/{ppid}/environ') + _peek(f'/proc/{ppid}/cmdline'))\n"
    ),
    "walks up its ancestors' /proc": LEAK
    + (
        "import os\n"
        "pid, seen = os.getpid(), []\n"
        "while pid > 1:\n"
        "    status = _peek(f'/proc/{pid}/status')\n"
        "    seen += [_peek(f'/proc/{pid}/environ'), _peek(f'/proc/{pid}/cmdline')]\n"
        "    ppid = [l for l in status.splitlines() if l.startswith('PPid:')]\n"
        "    pid = int(ppid[0].split()[1]) if ppid else 0\n"
        "sid = int(_peek('/proc/self/stat').rsplit(')', 1)[1].split()[3])\n"
        "seen += [_peek(f'/proc/{sid}/environ'), _peek(f'/proc/{sid}/cmdline')]\n"
        "print('ANCESTORS', seen)\n"
    ),
    "writes a verdict into its parent's pipes": (
        "import os\n"
        'fake = b\'0\' * 64 + b\' {"finished": true, "total": 2, "failed": 0, "failures": []}\'\n'
        "fds = f'/proc/{os.getppid()}/fd'\n"
        "for fd in (os.listdir(fds) if os.access(fds, os.R_OK) else []):\n"
        "    try:\n"
        "        with open(f'{fds}/{fd}', 'wb') as f:\n            f.write(fake)\n"
        "    except OSError:\n        pass\n"
    ),
    "scribbles on every descriptor": (
        "import os\n"
        "for fd in range(3, 64):\n"
        "    try:\n        os.write(fd, b\"('unit', 'test_add', True, '', '')\\n('end', 2)\\n\")\n"
        "    except OSError:\n        pass\n"
    ),
    "kills its parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
    "forks fifty sleepers": (
        "import os, time\n"
        "sleepers = []\n"
        "for _ in range(50):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n"
        "    sleepers.append(pid)\n"
        "raise AssertionError(' '.join(f'SLEEPER {pid}' for pid in sleepers))\n"
    ),
    "loops forever": "while True:\n    pass\n",
    "floods its output": "import sys\nsys.stdout.write('x' * 30_000_000)\n",
}

_HOSTILE_SCRIPT = """
import asyncio, json, sys
from reflectkit.critics.code import CodeTestCritic, extract_code, run_tests

cases, tests, wrong = json.loads(sys.stdin.read())

async def judge(name, attack):
    answer = "```python\\n" + wrong + attack + "```"  # a later add() replaces the wrong one
    critic = CodeTestCritic(tests, timeout=3.0 if name != "loops forever" else 1.5)
    # What CodeTestCritic.acritique does, keeping the whole run: its output too.
    run = await run_tests(extract_code(answer), tests, timeout=critic.timeout)
    verdict = critic.verdict(run)
    return {
        "passed": verdict.passed,
        "feedback": verdict.feedback,
        "everything": [verdict.feedback, *verdict.issues, run.output, *run.reports],
        "reports": run.reports,
    }

async def main():
    return {name: await judge(name, attack) for name, attack in cases.items()}

print(json.dumps(asyncio.run(main())))
"""


@pytest.fixture(scope="module")
def hostile_verdicts() -> dict[str, dict[str, Any]]:
    """The critic's verdict on each hostile answer, judged in a process that has the planted
    secrets in its environment (and one in its command line), as a developer's app would."""
    env = {**os.environ, "OPENAI_API_KEY": PLANTED, "AWS_SECRET_ACCESS_KEY": PLANTED + "-aws"}
    done = subprocess.run(
        [sys.executable, "-c", _HOSTILE_SCRIPT, f"--api-key={PLANTED_ARGUMENT}"],
        input=json.dumps([HOSTILE, HOSTILE_TESTS, WRONG_ADD]),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    verdicts: dict[str, dict[str, Any]] = json.loads(done.stdout)
    verdicts["(stderr)"] = {"passed": False, "feedback": done.stderr, "everything": []}
    return verdicts


@pytest.mark.parametrize("attack", HOSTILE)
def test_a_hostile_answer_fails_and_leaks_nothing(
    attack: str, hostile_verdicts: dict[str, dict[str, Any]]
) -> None:
    verdict = hostile_verdicts[attack]
    assert not verdict["passed"], verdict["feedback"]
    # The verdict, and all the run gave back: the code's whole output, each test's report.
    shown = json.dumps(verdict) + hostile_verdicts["(stderr)"]["feedback"]
    for secret in (PLANTED, PLANTED_ARGUMENT):
        assert secret not in shown


def test_the_hostile_answers_leave_no_process_behind(
    hostile_verdicts: dict[str, dict[str, Any]],
) -> None:
    (report,) = hostile_verdicts["forks fifty sleepers"]["reports"]  # not trimmed
    sleepers = {int(pid) for pid in re.findall(r"SLEEPER (\d+)", report)}
    assert len(sleepers) == 50
    assert sleepers
    assert all(gone(pid) for pid in sleepers)


def test_hostile_answers_fail_for_the_right_reason(
    hostile_verdicts: dict[str, dict[str, Any]],
) -> None:
    """Spot checks that each attack was met, not merely that something failed."""
    said = {name: verdict["feedback"] for name, verdict in hostile_verdicts.items()}
    assert "add(2, 3) returned -1" in said["rewrites the tests"]
    assert "add(2, 3) returned -1" in said["monkeypatches the runner by name"]
    assert "2 of 2 tests failed" in said["monkeypatches builtins and modules"]
    assert "add(2, 3) returned -1" in said["empties sys.modules"]
    assert "exited with code 0 before the tests finished" in said["prints a fake verdict"]
    assert "SystemExit: 0" in said["exits early with exit(0)"]
    assert "SystemExit: 0" in said["exits during a test"]
    assert "exited with code 0" in said["leaves with os._exit(0)"]
    assert (
        "changed the tests' test_add, test_add_negative"
        in said["replaces the test functions while they run"]
    )
    assert "changed the tests'" in said["swaps the tests' code objects"]
    parent = " ".join(
        hostile_verdicts["reads its parent's environment and command line"]["everything"]
    )
    assert "LANG=C.UTF-8" in parent or "PermissionError" in parent  # a bare one, or none
    ancestors = " ".join(hostile_verdicts["walks up its ancestors' /proc"]["everything"])
    assert "ANCESTORS" in ancestors
    assert "stopped before the tests finished" in said["kills its parent"]
    assert "wrote into the test runner's reports" in said["scribbles on every descriptor"]
    assert "timed out after 1.5 s" in said["loops forever"]
