"""reflectkit's side of a code-test run: the runner's process, from start to verdict.

:func:`_execute` starts a fresh ``python -s -P -B -`` in a session of its own, with an
environment built from nothing, and writes the runner (code_runner.py, the child's side) and
the run's payload to its stdin. It hands the supervisor the run's key on a pipe of its own,
reads the output through a window (:class:`_Capture`), waits for the verdict on another pipe,
and kills the whole process group when the verdict is in or the time is up. :func:`_verdict`
accepts a verdict only when it is signed with that key. What the isolation does and does not
protect against is in :mod:`reflectkit.critics.code`, the public home of the code critic.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import os
import signal
import sys
from asyncio.subprocess import Process
from pathlib import Path
from typing import Any

# The code critic's warnings keep the logger of its public module, which users filter on.
logger = logging.getLogger("reflectkit.critics.code")

_OUTPUT_BYTES = 1 << 20  # the read window: the first and last 512 KB of the output are kept
_GRACE = 1.0  # seconds to finish reading once the process group is dead
_VERDICT_BYTES = 4 << 20  # the supervisor's verdict: 40 failures of a few KB each, at most


@functools.cache
def _runner_source() -> str:
    """The child's side (code_runner.py), the program each run sends on its stdin."""
    return (Path(__file__).parent / "code_runner.py").read_text(encoding="utf-8")


class _Capture:
    """Reads a stream to its end, keeping only its first and last ``limit // 2`` bytes."""

    def __init__(self, limit: int) -> None:
        self.half, self.size = limit // 2, 0
        self.head, self.tail = bytearray(), bytearray()

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        while stream is not None and (chunk := await stream.read(1 << 16)):
            self.size += len(chunk)
            room = max(0, self.half - len(self.head))
            self.head += chunk[:room]
            self.tail += chunk[room:]
            if len(self.tail) > 2 * self.half:  # trimmed in bulk: linear in the output size
                del self.tail[: -self.half]

    def text(self) -> str:
        tail = self.tail[-self.half :] if self.tail else b""
        dropped = self.size - len(self.head) - len(tail)
        cut = f"\n[... {dropped} bytes of output dropped ...]\n" if dropped else ""
        return self.head.decode(errors="replace") + cut + bytes(tail).decode(errors="replace")


def _environment(scratch: str) -> dict[str, str]:
    """Everything the child's environment holds: nothing is inherited."""
    return {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin:/usr/bin:/bin"]),
        "LANG": "C.UTF-8",
        "HOME": scratch,
        "TMPDIR": scratch,
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",  # what was printed before a timeout is not lost in a buffer
    }


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _wait_exit(process: Process, reader: asyncio.Task[None], until: float) -> None:
    """Wait until the process has exited or the loop's clock reads ``until``."""
    loop = asyncio.get_running_loop()
    while process.returncode is None and (left := until - loop.time()) > 0:
        if reader.done():  # the pipe is closed, so wait() wakes up at the exit
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), left)
        else:  # wait() also waits for the pipe, which a child of the code may hold: poll
            await asyncio.wait({reader}, timeout=min(0.05, left))


async def _read_pipe(fd: int, limit: int) -> bytes:
    """Everything written to the pipe ``fd`` until its writers close it (at most ``limit``
    bytes); the read end is closed here."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        data = bytearray()
        while len(data) < limit and (chunk := await reader.read(1 << 16)):
            data += chunk
        return bytes(data)
    finally:
        transport.close()


async def _execute(
    payload: dict[str, Any], scratch: str, limit: float, key: bytes
) -> tuple[bool, bytes, str]:
    """Run the runner (code_runner.py, given on stdin with ``payload``) in its own session and
    kill its process group when its supervisor has given its verdict, or after ``limit``
    seconds. Returns whether it finished in time, the verdict as written (empty when there is
    none) and the output. ``key`` goes to the supervisor on a pipe of its own (see the runner's
    docstring): the verdict must be signed with it."""
    key_read, key_write = os.pipe()
    verdict_read, verdict_write = os.pipe()
    try:
        os.write(key_write, key)  # 32 bytes: the pipe holds them until the supervisor reads
    finally:
        os.close(key_write)
    payload = {**payload, "key_fd": key_read, "verdict_fd": verdict_write}
    program = f"{_runner_source()}\nmain({json.dumps(payload)!r})\n".encode()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-s",
            "-P",
            "-B",
            "-",  # the program comes on stdin: no file, nothing in the command line
            cwd=scratch,
            env=_environment(scratch),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(key_read, verdict_write),
        )
    except BaseException:
        os.close(verdict_read)
        raise
    finally:
        os.close(key_read)
        os.close(verdict_write)
    capture = _Capture(_OUTPUT_BYTES)
    reader = asyncio.create_task(capture.drain(process.stdout))
    verdict = asyncio.create_task(_read_pipe(verdict_read, _VERDICT_BYTES))
    loop = asyncio.get_running_loop()
    in_time = False
    try:
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(program)
            await process.stdin.drain()
            process.stdin.close()
        given, _ = await asyncio.wait({verdict}, timeout=limit)
        in_time = bool(given)
    finally:
        _kill_group(process.pid)  # the session's group: the launcher's id, though it is gone
        if not verdict.done():
            verdict.cancel()
        await _wait_exit(process, reader, loop.time() + _GRACE)
        done, _ = await asyncio.wait({reader}, timeout=_GRACE)
        if not done:  # a process that left the group still holds the pipe: stop listening
            logger.warning("code under test left a process running outside its process group")
            reader.cancel()
            transport = getattr(process, "_transport", None)  # no public way to close the pipe
            if transport is not None:
                transport.close()
    written = verdict.result() if in_time and not verdict.cancelled() else b""
    return in_time, written, capture.text()


def _verdict(written: bytes, key: bytes) -> dict[str, Any] | None:
    """The supervisor's verdict, if it is one: signed with ``key`` and well formed."""
    mac, _, body = written.partition(b" ")
    expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
    if not written:
        return None
    if not hmac.compare_digest(mac, expected):
        logger.warning("code tests: a verdict not signed by the test runner was refused")
        return None
    try:
        verdict = json.loads(body)
    except ValueError:
        return None
    return verdict if isinstance(verdict, dict) else None
