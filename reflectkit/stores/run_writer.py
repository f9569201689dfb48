"""The run log's writer thread: recording a run never waits for the disk or for a lock.

The run log's recording methods only queue their writes (:func:`submit`); one daemon thread per
process runs them in order, each scrubbing, encoding and committing its record, so a run waits
neither for an fsync nor for another process's lock on the file. :func:`flush` waits until
everything queued so far has run: reading waits for it (so a log reads its own writes), and so
do ``close()`` and interpreter exit. A forked child starts its own thread on its first write.
A process that is killed (``SIGKILL``) or loses power may lose what is still queued.
"""

from __future__ import annotations

import atexit
import queue
import threading
from collections.abc import Callable

__all__ = ["flush", "submit"]

_writes: queue.Queue[Callable[[], None]] = queue.Queue()
_writer: threading.Thread | None = None
_writer_lock = threading.Lock()


def submit(write: Callable[[], None]) -> None:
    """Queue ``write`` for the writer thread (started if need be); it handles its own failures."""
    _start_writer()
    _writes.put(write)


def _start_writer() -> None:
    """Start the process's one writer thread, unless it runs (again after a fork)."""
    global _writer
    with _writer_lock:
        if _writer is not None and _writer.is_alive():
            return
        if _writer is None:
            atexit.register(flush)  # the thread is a daemon: drain before the process exits
        _writer = threading.Thread(target=_drain, name="reflectkit-runlog", daemon=True)
        _writer.start()


def _drain() -> None:
    while True:
        write = _writes.get()
        try:
            write()
        finally:
            _writes.task_done()


def flush() -> None:
    """Wait until the writer has handled every write queued so far (by any log)."""
    if _writer is not None and threading.current_thread() is not _writer:
        _writes.join()
