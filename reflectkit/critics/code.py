"""CodeTestCritic: run the draft's Python code against your tests; failing tests are the feedback.

For code, running tests beats asking a model's opinion: a failing assertion is a precise,
verifiable reason to revise, and passing tests end the loop. The critic takes the code out of the
answer (:func:`extract_code`), runs it with the tests in a fresh Python process
(:func:`run_tests`), and hands the failing tests' tracebacks, trimmed, to the revise step.

What the process isolation does (docs/code-critic.md has the whole list, and what each hostile
answer in the test suite tried):

- the program, the code and the tests reach a fresh ``python -s -P -B -`` on its stdin: no file,
  nothing in a command line; the tests are compiled before the code runs, and only functions
  compiled from them are tests (one the code replaces or changes while they run fails);
- three processes (see code_runner.py; reflectkit's side is _code_process.py): a launcher that
  exits at once, a supervisor that never runs the code and decides the verdict, and a worker
  that runs the code and the tests with a sealed harness. The verdict reaches reflectkit on the
  supervisor's own pipe, signed with a key the worker never had: printing one, exiting early or
  killing the supervisor fails the run;
- their environment is built from nothing (``PATH``, ``LANG``, ``HOME``, ``TMPDIR`` and a few
  ``PYTHON*`` settings), and reflectkit's process is not among the worker's ancestors, so its
  API keys are neither passed on nor in ``/proc/<ppid>/environ``;
- before any of the code runs, the worker caps address space (``memory_mb``), CPU time, file
  size (10 MB), open files (64) and, on Linux, new processes, and turns core dumps off;
- the code runs in a new scratch directory (its cwd, ``HOME`` and ``TMPDIR``), deleted afterwards;
- everything runs in its own session, and the whole process group is killed when the verdict is
  in or the time is up, so the processes the code started die with it;
- its output is read through a 1 MB window, so a flood of output cannot exhaust memory.

What it does NOT do: this is not a security sandbox. The code runs as you. It can read every file
you can read (SSH keys, ``~/.aws``, ``.env`` files) and, through ``/proc``, the environment of
any process of yours (reflectkit's too, if it looks for it), write or delete every file you can
write, open network connections, and make any system call: there is no syscall filtering. The
limits are per process, root is exempt from the process cap, and a process that starts its own
session escapes the group kill. Code set on cheating can still fake a pass from inside the
worker (through the garbage collector, frames or ``ctypes``, or by writing the runner's reports
itself). For untrusted code, use a container or a VM.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import math
import os
import re
import secrets
import signal
import tempfile
import textwrap
import time
from dataclasses import dataclass, field

from reflectkit.critics._code_process import _execute, _verdict
from reflectkit.critics.base import CritiqueRequest
from reflectkit.errors import ConfigurationError
from reflectkit.verdict import Verdict

__all__ = ["CodeTestCritic", "TestRun", "extract_code", "run_tests"]

logger = logging.getLogger(__name__)

NO_CODE_FEEDBACK = "No Python code found in the answer: put the code in a ```python block."
_OUTPUT_CHARS = 20_000  # what TestRun.output keeps of the output read
_FILE_MB = 10
_MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")
_PYTHON_TAGS = {"python", "py", "python3", "py3"}
_FENCE = re.compile(
    r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.DOTALL | re.MULTILINE
)


@dataclass(frozen=True)
class TestRun:
    """The outcome of :func:`run_tests`.

    ``total`` counts the tests run: each ``test_*`` function and ``check(entry_point)`` is one,
    plain top-level asserts together are one, and a solution or test module that fails to run is
    one failure. ``total == 0`` means the process died (timeout, crash) before it could count;
    ``failures`` then holds the reason. ``failures`` has one line per failure (the first 40),
    ``reports`` the matching tracebacks; ``output`` is what the code printed, trimmed.
    """

    __test__ = False  # not a pytest test class

    passed: bool
    total: int
    failed: int
    output: str
    timed_out: bool
    returncode: int | None
    failures: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _clip(text: str, limit: int) -> str:
    """Shorten ``text`` to ``limit`` characters, keeping its start and (mostly) its end."""
    if len(text) <= limit:
        return text
    room = max(0, limit - 7)
    return f"{text[: room // 3]}\n[...]\n{text[len(text) - (room - room // 3) :]}"


def _is_code(text: str) -> bool:
    """Parses, and is more than bare expressions or annotations (prose like "yes" parses)."""
    try:
        body = ast.parse(text).body
    except (SyntaxError, ValueError):
        return False
    return any(
        not isinstance(n, ast.Expr) and not (isinstance(n, ast.AnnAssign) and n.value is None)
        for n in body
    )


def extract_code(text: str, *, entry_point: str | None = None) -> str | None:
    """The Python code in a model's reply, or None when there is none.

    Fenced blocks tagged ``python``/``py``/``python3``/``py3`` are joined in order, so helpers in
    one block and the function in another both run, and a corrected version given after the first
    one overrides it. REPL transcripts (``>>>``) are skipped. With ``entry_point``, blocks after
    the last one that defines it (usage examples) are dropped. Untagged fences count only when no
    block is tagged and they parse; blocks tagged with another language never count. With no
    fence at all, the whole text is the code if it parses as more than a bare expression.
    """
    blocks = [(lang.lower(), textwrap.dedent(body)) for lang, body in _FENCE.findall(text)]
    code = [b for lang, b in blocks if lang in _PYTHON_TAGS and not b.lstrip().startswith(">>>")]
    code = code or [b for lang, b in blocks if not lang and _is_code(b)]
    if code and entry_point:
        name = re.escape(entry_point)
        defines = re.compile(rf"^(?:(?:async\s+)?def|class)\s+{name}\b|^{name}\s*=", re.MULTILINE)
        last = max((i for i, block in enumerate(code) if defines.search(block)), default=None)
        code = code if last is None else code[: last + 1]
    if code:
        return "\n\n".join(block.strip("\n") for block in code) + "\n"
    return text if not blocks and _is_code(text) else None


def _check_arguments(timeout: float, memory_mb: int, cpu_seconds: float | None) -> None:
    if os.name != "posix":  # pragma: no cover - resource limits and sessions are POSIX
        raise ConfigurationError("running code tests needs a POSIX system (Linux or macOS)")
    if not timeout > 0:
        raise ConfigurationError(f"timeout must be > 0 seconds, not {timeout}")
    if memory_mb < 32:
        raise ConfigurationError(f"memory_mb must be at least 32, not {memory_mb}")
    if cpu_seconds is not None and not cpu_seconds > 0:
        raise ConfigurationError(f"cpu_seconds must be > 0, not {cpu_seconds}")


def _crash(returncode: int | None, output: str, timeout: float, memory_mb: int, cpu: int) -> str:
    """Why the process died before reporting, as a sentence about "the code"."""
    if returncode is None:
        return f"The code timed out after {timeout:g} s."
    if returncode == -signal.SIGXCPU:
        return f"The code exceeded the {cpu} s CPU-time limit."
    if any(sign in output for sign in _MEMORY_SIGNS):
        return f"The code exceeded the {memory_mb} MB memory limit."
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"The code crashed: killed by {signal.Signals(-returncode).name}."
    return f"The code exited with code {returncode} before the tests finished."


async def run_tests(
    code: str,
    tests: str,
    *,
    entry_point: str | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - a limit on the child process, not on this call
    memory_mb: int = 512,
    cpu_seconds: float | None = None,
) -> TestRun:
    """Run ``tests`` against ``code`` in a fresh, limited Python process (see the module doc).

    ``cpu_seconds`` defaults to ``ceil(timeout) + 1``: a second over the wall-clock timeout, so
    the timeout, which kills the whole process group and says so, normally fires first.
    """
    _check_arguments(timeout, memory_mb, cpu_seconds)
    cpu = math.ceil(cpu_seconds if cpu_seconds is not None else timeout + 1)
    payload = {
        "code": code,
        "tests": tests,
        "entry_point": entry_point,
        "memory_mb": memory_mb,
        "cpu_seconds": cpu,
        "file_mb": _FILE_MB,
    }
    key = secrets.token_bytes(32)
    started = time.perf_counter()
    scratch = tempfile.TemporaryDirectory(prefix="reflectkit-code-", ignore_cleanup_errors=True)
    try:
        in_time, written, output = await _execute(payload, scratch.name, timeout, key)
    finally:
        await asyncio.to_thread(scratch.cleanup)
    verdict = _verdict(written, key) if in_time else None
    returncode = verdict.get("returncode") if verdict is not None else None
    returncode = returncode if isinstance(returncode, int) else None
    if verdict is None or not verdict.get("finished"):
        if not in_time:
            reason = _crash(None, output, timeout, memory_mb, cpu)
        elif verdict is None:
            reason = "The test runner was stopped before the tests finished (by the code?)."
        elif verdict.get("garbled"):
            reason = "The code wrote into the test runner's reports: the tests cannot be judged."
        else:
            reason = _crash(
                returncode if returncode is not None else 1, output, timeout, memory_mb, cpu
            )
        shown = f"\n\nOutput:\n{_clip(output.strip(), 2000)}" if output.strip() else ""
        failures, reports, total, failed = [reason], [reason + shown], 0, 1
        passed = False
    else:
        items = [f for f in verdict.get("failures", []) if isinstance(f, dict)]
        failures = [str(f.get("line", "")) for f in items]
        reports = [str(f.get("report", "")) for f in items]
        total, failed = int(verdict.get("total", 0)), int(verdict.get("failed", len(items)))
        passed = not failed and total > 0
    seconds = time.perf_counter() - started
    logger.debug("code tests: %d of %d failed, %.2f s", failed, total, seconds)
    return TestRun(
        passed=passed,
        total=total,
        failed=failed,
        output=_clip(output, _OUTPUT_CHARS),
        timed_out=not in_time,
        returncode=returncode,
        failures=failures,
        reports=reports,
        seconds=seconds,
    )


class CodeTestCritic:
    """Passes a draft whose Python code passes ``tests``; otherwise the failures are the feedback.

    ``tests`` is Python run after the solution, in its namespace: plain ``assert`` statements,
    ``test_*`` functions (each run on its own; their count gives the score), and, with
    ``entry_point``, a HumanEval-style ``check(candidate)`` called with that function. The code
    is looked for in the answer first, then in the raw reply (it may sit in the thinking).
    It runs in a separate process with a timeout, memory and CPU limits, a scratch directory and
    an empty environment: not a security sandbox. See the module docstring (and
    docs/code-critic.md) for what the process isolation does and does not protect against.
    :func:`~reflectkit.critics.run_tests` runs the same harness directly.

    Args:
        tests: Python source: asserts, ``test_*`` functions, or a ``check(candidate)``.
        entry_point: The function ``check(candidate)`` is called with (a function name).
        timeout: Wall-clock seconds for the whole test run; the process group is killed after.
        memory_mb: The address-space limit of the process running the code (at least 32).
        cpu_seconds: Its CPU-time limit; None: ``ceil(timeout) + 1``.
        max_feedback_chars: The most feedback sent to the revise step (at least 200); each
            failing test's report is trimmed to fit, keeping its start and its end.
        name: The label on its verdicts; None: ``code-tests``.

    Raises:
        ConfigurationError: The tests are empty or do not parse, ``entry_point`` is not an
            identifier, a limit is out of range, or the system is not POSIX.
    """

    def __init__(
        self,
        tests: str,
        *,
        entry_point: str | None = None,
        timeout: float = 10.0,
        memory_mb: int = 512,
        cpu_seconds: float | None = None,
        max_feedback_chars: int = 2000,
        name: str | None = None,
    ) -> None:
        if not isinstance(tests, str) or not tests.strip():
            raise ConfigurationError("CodeTestCritic needs tests: Python source as a string")
        try:
            ast.parse(tests)
        except SyntaxError as error:
            raise ConfigurationError(f"the tests do not parse: {error}") from None
        if entry_point is not None and not entry_point.isidentifier():
            raise ConfigurationError(f"entry_point must be a function name, not {entry_point!r}")
        if max_feedback_chars < 200:
            raise ConfigurationError(f"max_feedback_chars must be >= 200, not {max_feedback_chars}")
        _check_arguments(timeout, memory_mb, cpu_seconds)
        self.tests, self.entry_point = tests, entry_point
        self.timeout, self.memory_mb, self.cpu_seconds = timeout, memory_mb, cpu_seconds
        self.max_feedback_chars = max_feedback_chars
        self.name: str = name or "code-tests"

    async def acritique(self, request: CritiqueRequest) -> Verdict:
        """Extract the draft's code and run the tests on it; no code found fails the draft."""
        code = extract_code(request.answer, entry_point=self.entry_point)
        if code is None:
            code = extract_code(request.draft.text, entry_point=self.entry_point)
        if code is None:
            issues = ["no Python code found"]
            return Verdict(
                passed=False, score=0, issues=issues, feedback=NO_CODE_FEEDBACK, critic=self.name
            )
        run = await run_tests(
            code,
            self.tests,
            entry_point=self.entry_point,
            timeout=self.timeout,
            memory_mb=self.memory_mb,
            cpu_seconds=self.cpu_seconds,
        )
        return self.verdict(run)

    def verdict(self, run: TestRun) -> Verdict:
        """The verdict on a test run: a pass, or the failures as issues and trimmed feedback."""
        if run.passed:
            return Verdict(passed=True, score=10, critic=self.name)
        score = round(10 * (run.total - run.failed) / run.total, 2) if run.total else 0.0
        header = f"{run.failed} of {run.total} tests failed." if run.total > 1 else ""
        header = header or ("The tests failed." if run.total else "The tests did not finish.")
        body = _fit(run.reports, self.max_feedback_chars - len(header) - 2)
        feedback = _clip(f"{header}\n\n{body}", self.max_feedback_chars)
        return Verdict(
            passed=False, score=score, issues=run.failures, feedback=feedback, critic=self.name
        )


def _fit(reports: list[str], budget: int) -> str:
    """Join the reports within ``budget`` characters: each gets an equal share of at least about
    300 characters (the last ones are dropped if need be) and keeps its start (the failing test's
    line) and its end (the exception and its message)."""
    text = "\n\n".join(reports)
    if len(text) <= budget:
        return text
    shown = reports[: max(1, budget // 300)]
    note = f"\n\n({len(reports) - len(shown)} more failures not shown)" if shown != reports else ""
    share = max(50, (budget - len(note)) // len(shown) - 2)
    return "\n\n".join(_clip(report, share) for report in shown) + note
