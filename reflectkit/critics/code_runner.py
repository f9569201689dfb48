"""The child side of :func:`reflectkit.critics.code.run_tests`: a program for a fresh interpreter.

reflectkit starts ``python -s -P -B -`` in a new session with an environment built from nothing,
and writes this file to its stdin followed by ``main(<payload>)``: the answer's code, the tests
and the settings travel in memory, and nothing is written to the scratch directory or shown in
a command line. The program imports nothing from reflectkit. Three processes run it:

* the *launcher* forks the supervisor and exits at once, so the supervisor's parent is no
  longer reflectkit's process (it is reparented to init, or to a subreaper);
* the *supervisor* never runs the answer's code. It works out which tests the test source
  defines, forks the worker, reads the key reflectkit sent it (on a pipe the worker has closed)
  and makes itself undumpable (so, short of root, the worker cannot open its ``/proc`` files:
  its descriptors, its memory), then lets the worker start. It reads the worker's reports, and
  writes the verdict to reflectkit on its own pipe, signed with the key (HMAC-SHA256): printing
  a verdict, or writing one into that pipe through ``/proc``, gets nowhere;
* the *worker*, whose parent is the supervisor (its environment as bare as the worker's),
  sets the resource limits, compiles the tests and the answer, runs the answer and then the
  tests in one namespace, and reports each test on a pipe of its own.

The worker's harness runs with a sealed copy of everything it uses (its globals and builtins are
private copies, its module functions taken before the answer runs): code that rebinds
``json.dumps``, ``builtins.isinstance`` or the harness's own functions changes nothing. The test
functions are the tests' own (their code objects come from compiling the test source), and a test
function the answer replaced or changed while the tests ran fails. What code set on cheating can
still do is in docs/code-critic.md: it runs in the worker's process, so it can reach the
harness's objects through the garbage collector or frames, or speak the report protocol itself.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import faulthandler
import json
import linecache
import os
import resource
import select
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

Config = dict[str, Any]
Failure = dict[str, str]
Report = tuple[Any, ...]

STDIN = "<stdin>"  # the harness's own frames, left out of tracebacks
_MOST_REPORT_BYTES = 16 << 20  # what the supervisor reads of the worker's reports at most
_PR_SET_DUMPABLE = 4


# -- the worker's harness ---------------------------------------------------------------------
# These functions are sealed (see seal()) before the answer runs: the names they use resolve in
# a private dict, never in this module's globals or the builtins module the answer can change.
# The functions they call from other modules are taken here, by value.

CodeType, CoroutineType, FunctionType = types.CodeType, types.CoroutineType, types.FunctionType
write = os.write
faulthandler_enable = faulthandler.enable
format_exception = traceback.format_exception
format_exception_only = traceback.format_exception_only
clear_frames = traceback.clear_frames
run_coroutine: Callable[[Any], Any] | None = None  # asyncio.run, when the tests are async


def clip(text: str, limit: int) -> str:
    head = limit // 3
    return text if len(text) <= limit else f"{text[:head]}\n[...]\n{text[head + 7 - limit :]}"


def set_limits(cfg: Config) -> None:
    mb, cpu, fsize = cfg["memory_mb"] << 20, cfg["cpu_seconds"], cfg["file_mb"] << 20
    limits = [
        ("RLIMIT_AS", mb, mb),
        ("RLIMIT_CPU", cpu, cpu + 1),
        ("RLIMIT_FSIZE", fsize, fsize),
        ("RLIMIT_NOFILE", 64, 64),
        ("RLIMIT_CORE", 0, 0),
    ]
    try:  # processes and threads: 256 more than all tasks on the machine (root is exempt)
        with open("/proc/loadavg") as f:
            tasks = int(f.read().split()[3].split("/")[1]) + 256
        limits.append(("RLIMIT_NPROC", tasks, tasks))
    except (OSError, ValueError, IndexError):
        pass
    for name, soft, hard in limits:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            resource.setrlimit(getattr(resource, name), (soft, hard))


def compiled(source: str, name: str) -> types.CodeType:
    """``source`` compiled as the file ``name``, its lines kept for tracebacks (no file holds
    them). Raises SyntaxError."""
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    return compile(source, name, "exec", dont_inherit=True)


def explain(exc: BaseException, tb: types.TracebackType) -> str:
    """What the operands of a failed bare ``assert a == b`` evaluate to."""
    if type(exc) is not AssertionError or exc.args or tb.tb_frame.f_code.co_filename != "tests.py":
        return ""
    try:
        node: Any = ast.parse(linecache.getline("tests.py", tb.tb_lineno).strip()).body[0]
        parts = [p for p in [node.test.left, *node.test.comparators] if type(p) is not ast.Constant]
        scope = tb.tb_frame.f_globals, tb.tb_frame.f_locals
        values = [eval(compile(ast.Expression(p), "tests.py", "eval"), *scope) for p in parts]
    except Exception:
        return ""
    said = [
        f"{ast.unparse(p)} returned {clip(repr(v), 300)}"
        for p, v in zip(parts, values, strict=True)
    ]
    return f"\n(re-evaluated: {'; '.join(said)})" if said else ""


def failure(name: str, exc: BaseException, cfg: Config) -> Failure:
    tb, frames = exc.__traceback__, []
    while tb is not None and tb.tb_frame.f_code.co_filename == STDIN:
        tb = tb.tb_next
    try:
        report = "".join(format_exception(type(exc), exc, tb)).rstrip()
        message = format_exception_only(type(exc), exc)[-1].strip()
    except Exception:  # a traceback module the code broke: the exception's type will do
        report = message = f"{type(exc).__name__} (no traceback: the code broke the formatting)"
    if isinstance(exc, MemoryError):
        message += f" (the code exceeded the {cfg['memory_mb']} MB memory limit)"
        report += f"\nThe code exceeded the {cfg['memory_mb']} MB memory limit."
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    where = [t for t in frames if t.tb_frame.f_code.co_filename == "tests.py"][-1:]
    line = "".join(
        f" [tests.py line {t.tb_lineno}: {linecache.getline('tests.py', t.tb_lineno).strip()}]"
        for t in where
    )
    if isinstance(exc, SyntaxError) and exc.lineno:
        line = f" [{exc.filename} line {exc.lineno}: {(exc.text or '').strip()}]"
    with contextlib.suppress(Exception):
        report += explain(exc, frames[-1]) if frames else ""
    with contextlib.suppress(Exception):
        clear_frames(exc.__traceback__)
    return {
        "line": clip(f"{name}: {message}{line}", 400),
        "report": clip(f"FAILED {name}\n{report}", 3000),
    }


def attempt(name: str, fn: Callable[[], Any], cfg: Config) -> Failure | None:
    try:
        result = fn()
        if type(result) is CoroutineType:
            if run_coroutine is None:
                raise TypeError("an async test, but the tests define no async function")
            run_coroutine(result)
    except BaseException as exc:
        return failure(name, exc, cfg)
    return None


def test_codes(code: types.CodeType) -> list[types.CodeType]:
    """Every code object compiled from the test source: the module's, and each function's in
    it, however deep."""
    found, todo = [], [code]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += [c for c in current.co_consts if type(c) is CodeType]
    return found


def send(out: int, record: Report) -> None:
    """One report, a Python literal on a line of its own (repr of str, int and bool: no encoder
    the code could change)."""
    data = (repr(record) + "\n").encode("utf-8", "backslashreplace")
    while data:
        data = data[write(out, data) :]


def work(cfg: Config, out: int) -> None:
    """The worker: limits, then the answer and the tests, each test reported on ``out``."""
    set_limits(cfg)
    faulthandler_enable()
    entry = cfg["entry_point"]
    try:  # before the answer's code runs: a test source on disk, or later, is not read again
        tests = compiled(cfg["tests"], "tests.py")
    except SyntaxError as exc:
        send(out, ("unit", "tests", False, *failure("tests", exc, cfg).values()))
        send(out, ("end", 1))
        return
    codes = test_codes(tests)
    known = {id(c) for c in codes}
    ns: dict[str, Any] = {"__name__": "solution"}
    for name, run in (
        ("solution", lambda: exec(compiled(cfg["code"], "solution.py"), ns)),
        ("tests", lambda: exec(tests, ns)),
    ):
        failed = attempt(name, run, cfg)
        if failed:
            send(out, ("unit", name, False, failed["line"], failed["report"]))
            send(out, ("end", 1))
            return
    if entry and entry not in ns:
        missing = failure("solution", NameError(f"the solution does not define {entry}"), cfg)
        send(out, ("unit", "solution", False, missing["line"], missing["report"]))
        send(out, ("end", 1))
        return

    def from_tests(value: Any) -> bool:
        return type(value) is FunctionType and id(value.__code__) in known

    pinned = {n: (f, f.__code__) for n, f in ns.items() if from_tests(f)}
    units: list[tuple[str, Callable[[], Any]]] = sorted(
        ((n, f) for n, (f, _) in pinned.items() if n.startswith("test_")),
        key=lambda unit: unit[1].__code__.co_firstlineno,
    )
    if entry and "check" in pinned:
        check = pinned["check"][0]
        units.append((f"check({entry})", lambda: check(ns[entry])))
    for name, fn in units:
        changed = sorted(
            n for n, (f, c) in pinned.items() if f.__code__ is not c or ns.get(n) is not f
        )
        if changed:
            why = RuntimeError(f"the code under test changed the tests' {', '.join(changed)}")
            result: Failure | None = failure(name, why, cfg)
        else:
            result = attempt(name, fn, cfg)
        if result is None:
            send(out, ("unit", name, True, "", ""))
        else:
            send(out, ("unit", name, False, result["line"], result["report"]))
    send(out, ("end", max(len(units), 1)))


_HARNESS = (clip, set_limits, compiled, explain, failure, attempt, test_codes, send, work)


_SEALED = [
    "ast",
    "contextlib",
    "linecache",
    "resource",
    "types",
    "Any",
    "Callable",
    "Config",
    "Failure",
    "Report",
    "STDIN",
    "CodeType",
    "CoroutineType",
    "FunctionType",
    "write",
    "faulthandler_enable",
    "format_exception",
    "format_exception_only",
    "clear_frames",
    "run_coroutine",
]


def seal() -> Callable[[Config, int], None]:
    """``work`` and its helpers, rebuilt on a private globals dict holding a copy of the
    builtins and the module functions they use, taken now, before the answer runs."""
    private: dict[str, Any] = {"__builtins__": dict(vars(builtins))}
    private.update((name, globals()[name]) for name in _SEALED)
    for function in _HARNESS:
        private[function.__name__] = types.FunctionType(
            function.__code__, private, function.__name__, function.__defaults__
        )
    sealed: Callable[[Config, int], None] = private["work"]
    return sealed


def uses_async(source: str) -> bool:
    try:
        return any(isinstance(n, ast.AsyncFunctionDef) for n in ast.walk(ast.parse(source)))
    except (SyntaxError, ValueError):
        return False


def worker(cfg: Config, out: int) -> None:
    harness, leave = seal(), os._exit
    if uses_async(cfg["tests"]):  # asyncio.run taken now: the code could replace it later
        import asyncio

        harness.__globals__["run_coroutine"] = asyncio.run
    try:
        harness(cfg, out)
    finally:
        leave(0)  # threads and atexit hooks the code left behind do not hold the run open


# -- the supervisor ---------------------------------------------------------------------------


def expected_units(source: str, entry: str | None) -> list[str]:
    """The tests every passing run must report: the test source's top-level ``test_*``
    functions, and ``check(entry)`` when it defines ``check``."""
    try:
        body = ast.parse(source).body
    except (SyntaxError, ValueError):
        return []
    functions = [n.name for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    names = [name for name in functions if name.startswith("test_")]
    return names + ([f"check({entry})"] if entry and "check" in functions else [])


def undumpable() -> None:
    """Make this process's ``/proc`` files (descriptors, memory, environment) off limits to
    other processes of the same user (not to root). Linux only."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def collect(fd: int, pid: int) -> tuple[bytes, int]:
    """The worker's reports, and its wait status: read until the worker has exited (not until
    the pipe closes: a child the code left behind may hold it open)."""
    data, status = bytearray(), None
    while status is None:
        if len(data) > _MOST_REPORT_BYTES:  # not the harness's reports: stop listening
            os.kill(pid, 9)
            break
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if chunk:
                data += chunk
                continue
            break  # every writer has closed it
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
            os.set_blocking(fd, False)
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(fd, 1 << 16):
                    data += chunk
    if status is None:
        _, status = os.waitpid(pid, 0)
    return bytes(data), status


def judge(data: bytes, status: int, expected: list[str]) -> dict[str, Any]:
    """The verdict from the worker's reports: complete only with every report well formed, an
    end record, and every test the source defines reported."""
    units: dict[str, tuple[bool, str, str]] = {}
    total, garbled = None, False
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            garbled = True
            continue
        if type(record) is not tuple or not record:
            garbled = True
        elif record[0] == "unit" and len(record) == 5 and type(record[2]) is bool:
            garbled = garbled or str(record[1]) in units  # the harness reports a test once
            units[str(record[1])] = (record[2], str(record[3]), str(record[4]))
        elif record[0] == "end" and len(record) == 2 and type(record[1]) is int:
            total = record[1]
        else:
            garbled = True
    failures = [{"line": line, "report": report} for ok, line, report in units.values() if not ok]
    if total is not None and not failures:
        for name in expected:
            if name not in units:
                said = f"{name}: did not run (the code under test removed or replaced it)"
                failures.append({"line": said, "report": f"FAILED {name}\n{said}"})
    return {
        "finished": total is not None and not garbled,
        "garbled": garbled,
        "returncode": os.waitstatus_to_exitcode(status),
        "total": max(total or 0, len(units)),
        "failed": len(failures),
        "failures": failures[:40],
    }


def supervise(cfg: Config) -> None:
    expected = expected_units(cfg["tests"], cfg["entry_point"])
    key_fd, verdict_fd = cfg["key_fd"], cfg["verdict_fd"]
    report_r, report_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: it has none of the supervisor's pipes to reflectkit
        try:
            for fd in (key_fd, verdict_fd, report_r, go_w):
                os.close(fd)
            os.read(go_r, 1)  # until the supervisor has its key and has closed its /proc
            os.close(go_r)
            worker(cfg, report_w)
        finally:
            os._exit(70)
    os.close(report_w)
    os.close(go_r)
    key = b""
    while len(key) < 32 and (chunk := os.read(key_fd, 32 - len(key))):
        key += chunk
    os.close(key_fd)
    undumpable()
    quiet = os.open(os.devnull, os.O_RDWR)  # the output pipe is the worker's alone
    for fd in (0, 1, 2):
        os.dup2(quiet, fd)
    os.write(go_w, b"g")
    os.close(go_w)
    import hashlib  # while the worker runs: not on the way to its start
    import hmac

    data, status = collect(report_r, pid)
    body = json.dumps(judge(data, status, expected)).encode()
    signed = hmac.new(key, body, hashlib.sha256).hexdigest().encode() + b" " + body
    while signed:
        signed = signed[os.write(verdict_fd, signed) :]
    os._exit(0)


def main(payload: str) -> None:
    cfg = json.loads(payload)
    sys.stdout.flush()
    if os.fork() != 0:  # the launcher: gone at once, so the supervisor is no child of reflectkit's
        os._exit(0)
    try:
        supervise(cfg)
    finally:
        os._exit(71)
