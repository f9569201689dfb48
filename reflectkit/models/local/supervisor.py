"""The caller's side of the embedded local model's worker process.

llama.cpp is native code: built for the wrong CPU it segfaults (its AMX path on many cloud VMs)
or hits an illegal instruction, and a large model can be killed for memory. Run in the caller's
process, any of these would kill a script, a Jupyter kernel, ``reflectkit serve`` or a test run,
with nothing printed. So the model runs in one child process per calling process
(:mod:`reflectkit.models.local.worker`), started on first use and shared by every call; this module
starts it, sends it requests, routes its answers back to the calls that asked, and watches it.

When the worker dies, every call in flight fails with a
:class:`~reflectkit.errors.LocalModelCrashError`: one line that says how it died and what to do;
the next call starts a fresh worker. A cancelled call is cancelled in the worker too (generation
stops at the next token); a worker that does not stop within :data:`CANCEL_GRACE` seconds is
killed, so a hung native call never holds the model for good.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from reflectkit.errors import LocalModelCrashError
from reflectkit.models.provider import Message, ProviderChunk, ProviderFailure

__all__ = [
    "CANCEL_GRACE",
    "PORTABLE_CMAKE_ARGS",
    "REINSTALL_COMMAND",
    "Call",
    "crash_message",
    "start_call",
    "worker_info",
    "worker_pid",
]

logger = logging.getLogger(__name__)

CANCEL_GRACE = 30.0
"""Seconds a cancelled request may keep running before its worker is killed. Generation stops
at the next token, within milliseconds; only reading a long prompt on a loaded machine, or a
hung native call, takes longer."""

PORTABLE_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    " -DGGML_BMI2=ON"
)
"""llama.cpp's build flags for a portable build: no ``-march=native`` (so no AMX), AVX2 as the
x86-64 baseline. The x86 flags are ignored on other architectures. The README's commands use
exactly this string."""

REINSTALL_COMMAND = (
    f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --force-reinstall --no-cache-dir --no-deps '
    "llama-cpp-python"
)
"""What rebuilds llama.cpp portably in the current environment."""

Delivery = Callable[[ProviderChunk | BaseException], None]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _has_amx(info: dict[str, Any]) -> bool:
    text = str(info.get("system_info", ""))
    return any(f"{flag} = 1" in text for flag in ("AMX_INT8", "AMX_BF16", "AMX_TILE"))


_TRACEBACK_LINES = ("Extension modules", "  File ", "Thread 0x", "Current thread", "Fatal Python")


def _telling(line: str) -> bool:
    """Whether a line of the dead worker's stderr says why (faulthandler's traceback does not)."""
    return bool(line.strip()) and not line.startswith(_TRACEBACK_LINES)


def crash_message(
    returncode: int, info: dict[str, Any], stderr_tail: list[str], killed_by_us: bool = False
) -> str:
    """One line: how the worker died, and what to do about it."""
    if killed_by_us:
        return (
            f"the local model's worker process was stopped by reflectkit: a cancelled call did "
            f"not stop within {CANCEL_GRACE:g} s (a hung llama.cpp call, or a machine too busy to "
            "read the prompt); calls waiting on it failed with it. Your process is unharmed and "
            "the next call starts a new worker"
        )
    detail = next((line for line in reversed(stderr_tail) if _telling(line)), "")
    rebuild = f"reinstall llama.cpp portably: {REINSTALL_COMMAND}"
    amx = (
        "this llama.cpp was built with AMX (-march=native), which crashes on many cloud VMs; "
        if _has_amx(info)
        else ""
    )
    if returncode < 0:
        name = _signal_name(-returncode)
        if name in ("SIGSEGV", "SIGBUS"):
            what, advice = f"crashed with {name} inside llama.cpp", f"{amx}{rebuild}"
        elif name == "SIGILL":
            what = "hit an illegal instruction (SIGILL)"
            why = amx or "llama.cpp was built for CPU features this machine lacks; "
            advice = f"{why}{rebuild}"
        elif name == "SIGKILL":
            what = "was killed (SIGKILL)"
            advice = "often the out-of-memory killer: free memory, or use a smaller model or n_ctx"
        elif name == "SIGABRT":
            what = f"aborted (SIGABRT{': ' + detail if detail else ''})"
            advice = f"if it happens again, {rebuild}"
        else:
            what, advice = f"was stopped by {name}", "check what sent it"
    else:
        what = f"exited with status {returncode}{': ' + detail if detail else ''}"
        advice = f"if it happens again, {rebuild}"
    return (
        f"the local model's worker process {what}; {advice}. Your process is unharmed and the "
        "next call starts a new worker"
    )


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # llama.cpp's OpenMP threads spin-wait for each other; when another process holds a core, a
    # spinning thread burns the time the one it waits for needs. Passive waiting cost nothing
    # idle and cut a short answer beside a busy neighbour from 12.6 s to 2.6 s on two cores
    # (benchmarks/local_threads.py). A policy the user set is kept.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # On an abort ggml would attach gdb to print a backtrace: slow, and noise in the one line.
    env.setdefault("GGML_NO_BACKTRACE", "1")
    # The worker must import this same reflectkit, even when the caller found it by sys.path.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


class _Worker:
    """One worker process, its reader threads and the calls waiting on it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reflectkit.models.local.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_worker_env(),
        )
        self.info: dict[str, Any] = {}
        self.dead: LocalModelCrashError | None = None
        self.killed_by_us = False
        self._pending: dict[int, Delivery] = {}
        self._cancelling: set[int] = set()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stderr: deque[str] = deque(maxlen=40)
        self._stderr_done = threading.Event()
        name = f"reflectkit-local-{self.process.pid}"
        threading.Thread(target=self._read_stderr, name=f"{name}-stderr", daemon=True).start()
        threading.Thread(target=self._read_replies, name=f"{name}-replies", daemon=True).start()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=True, default=str).encode("ascii") + b"\n"
        stdin = self.process.stdin
        assert stdin is not None
        try:
            with self._write_lock:
                stdin.write(data)
                stdin.flush()
        except (OSError, ValueError):
            pass  # the worker is gone: the reply reader reports it to every waiting call

    def submit(self, request_id: int, message: dict[str, Any], deliver: Delivery) -> bool:
        """Send a request whose replies go to ``deliver``; False if this worker is dead."""
        with self._lock:
            if self.dead is not None:
                return False
            self._pending[request_id] = deliver
        self.send(message)
        return True

    def cancel(self, request_id: int) -> None:
        """Stop a request: its later replies are dropped; the worker stops generating it."""
        with self._lock:
            if self._pending.pop(request_id, None) is None or self.dead is not None:
                return
            self._cancelling.add(request_id)
        self.send({"op": "cancel", "id": request_id})
        timer = threading.Timer(CANCEL_GRACE, self._kill_if_still_cancelling, (request_id,))
        timer.daemon = True
        timer.start()

    def _kill_if_still_cancelling(self, request_id: int) -> None:
        with self._lock:
            stuck = request_id in self._cancelling and self.dead is None
        if stuck:
            logger.warning("the local model did not stop a cancelled call: killing its worker")
            self.killed_by_us = True
            self.process.kill()

    def _read_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self._stderr.append(line)
                    logger.debug("local worker: %s", line)
        finally:
            self._stderr_done.set()

    def _read_replies(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            self._dispatch(message)
        self._died()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("op") == "hello":
            self.info = message
            return
        request_id = int(message.get("id", -1))
        final = "finish" in message or "error" in message or "cancelled" in message
        with self._lock:
            deliver = self._pending.get(request_id)
            if final:
                self._pending.pop(request_id, None)
                self._cancelling.discard(request_id)
        if deliver is None or message.get("cancelled"):
            return
        error = message.get("error")
        if error is not None:
            deliver(
                ProviderFailure(
                    int(error.get("status", 500)),
                    str(error.get("message", "the local model failed")),
                    context_window=bool(error.get("context_window")),
                )
            )
            return
        deliver(
            ProviderChunk(
                str(message.get("text", "")),
                message.get("finish"),
                message.get("prompt_tokens"),
                message.get("completion_tokens"),
            )
        )

    def _died(self) -> None:
        returncode = self.process.wait()
        self._stderr_done.wait(2)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            _close(stream)
        tail = list(self._stderr)
        if "error" in self.info:  # llama.cpp could not even be imported
            message = str(self.info["error"])
        else:
            message = crash_message(returncode, self.info, tail, self.killed_by_us)

        def crash() -> LocalModelCrashError:  # one each: runs annotate the error they raise
            error = LocalModelCrashError(message, model="local")
            error.returncode = returncode
            return error

        with self._lock:
            self.dead = crash()
            waiting = list(self._pending.values())
            self._pending.clear()
            self._cancelling.clear()
        if waiting or returncode != 0:
            logger.warning("%s", message)
            for line in tail:
                logger.warning("local worker stderr: %s", line)
        for deliver in waiting:
            deliver(crash())

    def stop(self) -> None:
        """Close the worker's stdin (it exits on EOF) and reap it."""
        _close(self.process.stdin)
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _close(stream: IO[bytes] | None) -> None:
    if stream is not None:
        with contextlib.suppress(OSError):
            stream.close()


_worker: _Worker | None = None
_worker_lock = threading.Lock()
_ids = itertools.count(1)


def _live_worker() -> _Worker:
    global _worker
    with _worker_lock:
        if _worker is None or _worker.dead is not None:
            if _worker is None:
                atexit.register(_stop_worker)
            _worker = _Worker()
        return _worker


def _stop_worker() -> None:
    with _worker_lock:
        worker = _worker
    if worker is not None and worker.dead is None:
        worker.stop()


def _forget_worker_in_child() -> None:
    """After a fork, the child must not share its parent's worker (or its locks)."""
    global _worker, _worker_lock
    _worker, _worker_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_worker_in_child)


class Call:
    """One request in the worker; :meth:`cancel` stops it (safe to call at any time)."""

    def __init__(self, worker: _Worker, request_id: int) -> None:
        self._worker = worker
        self._id = request_id

    def cancel(self) -> None:
        self._worker.cancel(self._id)


def start_call(
    path: Path, messages: list[dict[str, Any]], params: dict[str, Any], deliver: Delivery
) -> Call:
    """Start generating in the worker; ``deliver`` gets each :class:`ProviderChunk` (the last
    has a ``finish_reason``) or one exception, from a background thread."""
    request_id = next(_ids)
    message = {
        "op": "generate",
        "id": request_id,
        "path": str(path),
        "messages": messages,
        "params": params,
    }
    while True:
        worker = _live_worker()
        if worker.submit(request_id, message, deliver):
            return Call(worker, request_id)


def preload(path: Path, n_ctx: int, prefix: list[Message] | None = None) -> None:
    """Start the worker and have it load ``path`` now, so the first call does not wait; with
    ``prefix``, also read those messages into its cache (see ``local_engine.preload``)."""
    job: dict[str, Any] = {"op": "preload", "path": str(path), "n_ctx": n_ctx}
    if prefix:
        job["prefix"] = prefix
    _live_worker().send(job)


def worker_pid() -> int | None:
    """The worker's process id, or None when none is running."""
    with _worker_lock:
        worker = _worker
    return worker.process.pid if worker is not None and worker.dead is None else None


def worker_info() -> dict[str, Any]:
    """What the running worker reported about its llama.cpp (version, system info); empty
    when no worker has started yet or it has not said hello."""
    with _worker_lock:
        worker = _worker
    return dict(worker.info) if worker is not None else {}
