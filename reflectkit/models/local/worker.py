"""The embedded local model's worker process: ``python -m reflectkit.models.local.worker``.

:mod:`reflectkit.models.local.supervisor` starts one per calling process and talks to it over its
standard streams, one JSON object a line (ASCII, so any text, even a lone surrogate, survives):

* in (stdin): ``{"op": "generate", "id", "path", "messages", "params"}``,
  ``{"op": "cancel", "id"}``, ``{"op": "preload", "path", "n_ctx", "prefix"}`` (``prefix``,
  optional: messages to read into the cache ahead of the calls that start with them);
* out (the original stdout): first ``{"op": "hello", "pid", "version", "system_info"}`` (or
  ``"error"`` when llama.cpp cannot be imported), then for each generate request its pieces
  ``{"id", "text"}`` and one last line: ``{"id", "text", "finish", "prompt_tokens",
  "completion_tokens"}``, ``{"id", "error": {"status", "message", "context_window"}}`` or
  ``{"id", "cancelled": true}``.

Requests run one at a time, in order (llama.cpp contexts are not thread-safe); a reader thread
takes cancellations while a request runs, so a cancel ends generation at the next token. File
descriptor 1 is pointed at stderr before llama.cpp loads, so nothing a native library prints can
corrupt the protocol. The worker ignores SIGINT (the caller decides what a Ctrl-C cancels) and
exits as soon as its stdin closes, which happens when the caller exits or dies.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import queue
import signal
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

from reflectkit.errors import LocalModelError
from reflectkit.models.local import engine
from reflectkit.models.provider import ProviderFailure

__all__ = ["main"]


class _Requests:
    """Which request runs now, and which were cancelled before or while they ran."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: tuple[int, threading.Event] | None = None
        self._cancelled: set[int] = set()

    def begin(self, request_id: int) -> threading.Event:
        event = threading.Event()
        with self._lock:
            if request_id in self._cancelled:
                self._cancelled.discard(request_id)
                event.set()
            self._running = (request_id, event)
        return event

    def end(self) -> None:
        with self._lock:
            self._running = None

    def cancel(self, request_id: int) -> bool:
        """Cancel a request; True if it is running now (it stops at its next token), False if
        it waits in the queue (it will be skipped)."""
        with self._lock:
            if self._running is not None and self._running[0] == request_id:
                self._running[1].set()
                return True
            self._cancelled.add(request_id)
            return False


class _Channel:
    """The protocol's output: one JSON line a write."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=True).encode("ascii") + b"\n"
        with self._lock:
            self._stream.write(data)
            self._stream.flush()


def _read_requests(
    stdin: BinaryIO, jobs: queue.Queue[dict[str, Any]], state: _Requests, out: _Channel
) -> None:
    for line in stdin:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("op") != "cancel":
            jobs.put(message)
        elif not state.cancel(int(message["id"])):
            # Acknowledged now, not when its turn comes: the caller must not take a request
            # queued behind a long one for a worker that ignores cancellations.
            out.send({"id": int(message["id"]), "cancelled": True})
    os._exit(0)  # the caller closed the pipe, or is gone: nobody wants the answers


def _run(job: dict[str, Any], state: _Requests, out: _Channel) -> None:
    request_id = int(job["id"])
    cancel = state.begin(request_id)
    try:
        if cancel.is_set():
            return  # cancelled while queued: acknowledged when the cancellation came
        path, messages, params = Path(job["path"]), job["messages"], job["params"]
        for chunk in engine.generate(path, messages, params, cancel):
            reply: dict[str, Any] = {"id": request_id, "text": chunk.text}
            if chunk.finish_reason is not None:
                reply |= {
                    "finish": chunk.finish_reason,
                    "prompt_tokens": chunk.prompt_tokens,
                    "completion_tokens": chunk.completion_tokens,
                }
            out.send(reply)
            if chunk.finish_reason is not None:
                return
        out.send({"id": request_id, "cancelled": True})
    except ProviderFailure as failure:
        error = {
            "status": failure.status_code,
            "message": failure.message,
            "context_window": failure.context_window,
        }
        out.send({"id": request_id, "error": error})
    except Exception as error:  # a bug or an odd input: this request fails, the worker lives
        message = f"the local model failed: {type(error).__name__}: {error}"
        out.send({"id": request_id, "error": {"status": 500, "message": message}})
    finally:
        state.end()


def _preload(job: dict[str, Any]) -> None:
    """Load a model ahead of its first call; a failure here is reported by that call."""
    prefix = job.get("prefix")
    with contextlib.suppress(ProviderFailure, LocalModelError, ValueError):
        engine.preload(
            Path(job["path"]),
            int(job.get("n_ctx") or engine.DEFAULT_N_CTX),
            prefix if isinstance(prefix, list) else None,
        )


def main() -> int:
    """Serve requests until stdin closes."""
    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # native prints go to stderr, never into the protocol
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()  # a native crash leaves a traceback on stderr for the caller to log
    out = _Channel(protocol)
    try:
        info = engine.build_info()
    except LocalModelError as error:
        out.send({"op": "hello", "pid": os.getpid(), "error": str(error)})
        return 1
    out.send({"op": "hello", "pid": os.getpid(), **info})
    jobs: queue.Queue[dict[str, Any]] = queue.Queue()
    state = _Requests()
    reader = threading.Thread(
        target=_read_requests, args=(sys.stdin.buffer, jobs, state, out), daemon=True
    )
    reader.start()
    while True:
        job = jobs.get()
        if job.get("op") == "preload":
            _preload(job)
        elif job.get("op") == "generate":
            _run(job, state, out)


if __name__ == "__main__":
    sys.exit(main())
