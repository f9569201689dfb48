"""The child side of :func:`reflectkit.critics.code.run_tests`, run in a separate process.

This file is copied into the run's scratch directory and run there by a fresh interpreter; it
imports nothing from reflectkit. It reads and deletes the per-run token, sets the resource
limits, execs the solution and then the tests in one namespace, runs each ``test_*`` function
and ``check(entry_point)`` on its own, and writes ``"\\n<token><json summary>\\n"`` last, on its
own copy of stdout, so the code under test cannot forge the summary.
"""

from __future__ import annotations

import ast
import contextlib
import faulthandler
import json
import linecache
import os
import resource
import sys
import traceback
from collections.abc import Callable
from types import CodeType, TracebackType
from typing import Any

Config = dict[str, Any]
Failure = dict[str, str]


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


def load(path: str) -> CodeType:
    with open(path, encoding="utf-8") as f:
        src = f.read()
    linecache.cache[path] = (len(src), None, src.splitlines(True), path)
    return compile(src, path, "exec")


def explain(exc: BaseException, tb: TracebackType) -> str:
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
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    report = "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()
    message = traceback.format_exception_only(type(exc), exc)[-1].strip()
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
    report += explain(exc, frames[-1]) if frames else ""
    traceback.clear_frames(exc.__traceback__)
    return {
        "line": clip(f"{name}: {message}{line}", 400),
        "report": clip(f"FAILED {name}\n{report}", 3000),
    }


def attempt(name: str, fn: Callable[[], Any], cfg: Config) -> Failure | None:
    try:
        result = fn()
        if hasattr(result, "__await__"):
            import asyncio

            asyncio.run(result)
    except BaseException as exc:
        return failure(name, exc, cfg)
    return None


def in_tests(value: Any) -> bool:
    return getattr(getattr(value, "__code__", None), "co_filename", None) == "tests.py"


def executes(path: str, ns: dict[str, Any]) -> Callable[[], None]:
    def execute() -> None:
        exec(load(path), ns)

    return execute


def run(cfg: Config) -> tuple[int, list[Failure]]:
    ns: dict[str, Any] = {"__name__": "solution"}
    entry = cfg["entry_point"]
    for path in ("solution.py", "tests.py"):
        failed = attempt(path[:-3], executes(path, ns), cfg)
        if failed:
            return 1, [failed]
    if entry and entry not in ns:
        return 1, [failure("solution", NameError(f"the solution does not define {entry}"), cfg)]
    units: list[tuple[str, Callable[[], Any]]] = sorted(
        ((n, f) for n, f in ns.items() if n.startswith("test_") and in_tests(f)),
        key=lambda unit: unit[1].__code__.co_firstlineno,
    )
    if entry and in_tests(ns.get("check")):
        units.append((f"check({entry})", lambda: ns["check"](ns[entry])))
    failures = [f for f in (attempt(n, fn, cfg) for n, fn in units) if f]
    return max(len(units), 1), failures


def main() -> None:
    cfg = json.loads(sys.argv.pop(1))
    with open(".token", encoding="ascii") as f:
        token = f.read()
    os.remove(".token")
    out = os.fdopen(os.dup(1), "wb")  # the code can close or replace sys.stdout, not this
    faulthandler.enable()
    set_limits(cfg)
    total, failures = run(cfg)
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    summary = {"total": total, "failed": len(failures), "failures": failures[:40]}
    out.write(f"\n{token}{json.dumps(summary)}\n".encode())
    out.flush()
    os._exit(0)  # threads and atexit hooks the code left behind do not hold the run open


if __name__ == "__main__":
    main()
