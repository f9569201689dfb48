"""Who owns a run, and whether that process is still alive.

The run log records with each run the process that runs it (:func:`current`), so that a run
whose process died without recording its end (a native crash, ``SIGKILL``, the OOM killer, a
power cut) can be told from one that is still going (:func:`why_gone`).

* A process is named by its pid and its host name; on Linux also by its start time
  (``/proc/<pid>/stat`` field 22, clock ticks since boot), which tells a reused pid from the
  original, by the boot id (``/proc/sys/kernel/random/boot_id``), which tells a machine that has
  restarted, and by its pid namespace (``/proc/self/ns/pid``): a container that shares its
  host's name (Docker's ``--network host``) counts its pids apart from the host's.
* Only a process on this host, in this pid namespace, can be judged: one elsewhere is never
  called gone. Host names are taken to name one machine each.
* Without ``/proc`` (macOS, the BSDs) a process is alive when ``os.kill(pid, 0)`` finds it, so
  a pid reused since passes for the original. On Windows ``os.kill`` would end the process
  rather than probe it, so nothing is probed there: a process is never called gone.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass

__all__ = ["Owner", "current", "why_gone"]

_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_DEAD_STATES = frozenset({"Z", "X"})  # a zombie (dead, not yet reaped by its parent), dead
_START_TIME = 19  # field 22 of /proc/<pid>/stat, counted from field 3 (after the name)


@dataclass(frozen=True)
class Owner:
    """A process that runs a run: its ``pid`` on ``host``, and where ``/proc`` tells, its
    start time in clock ticks since boot (``started``), the ``boot`` id of the machine and its
    pid namespace (``pid_ns``). None where it could not be read."""

    pid: int
    host: str
    started: int | None = None
    boot: str | None = None
    pid_ns: str | None = None


def current() -> Owner:
    """This process (read once per process, so a forked child names itself)."""
    return _this_process(os.getpid())


@functools.cache
def _this_process(pid: int) -> Owner:
    stat = _stat("self")
    return Owner(
        pid=pid,
        host=socket.gethostname(),
        started=None if stat is None else stat[1],
        boot=_read(_BOOT_ID),
        pid_ns=_link("/proc/self/ns/pid"),
    )


def _read(path: str) -> str | None:
    """The text of a small file, stripped; None when it cannot be read or is empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read().strip() or None
    except OSError:
        return None


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _stat(pid: int | str) -> tuple[str, int] | None:
    """The state and the start time of process ``pid`` from ``/proc/<pid>/stat``, or None when
    it cannot be read. The name (field 2) may hold spaces and parentheses, so the fields are
    counted from its last closing parenthesis."""
    text = _read(f"/proc/{pid}/stat")
    fields = [] if text is None else text.rpartition(")")[2].split()
    if len(fields) <= _START_TIME or not fields[_START_TIME].isdigit():
        return None
    return fields[0], int(fields[_START_TIME])


def why_gone(owner: Owner, here: Owner | None = None) -> str | None:
    """Why the process ``owner`` is known to be gone, as a sentence; None when it is alive or
    cannot be judged from ``here`` (default: this process): on another host or in another pid
    namespace, on Windows, or with an invalid pid."""
    here = current() if here is None else here
    if owner.host != here.host or owner.pid <= 0 or os.name == "nt" or owner == here:
        return None
    name = f"the process that ran it (pid {owner.pid} on {owner.host}) is gone"
    if (owner.boot is None) != (here.boot is None):
        return None  # one has /proc and the other not: two systems under one name
    if owner.boot != here.boot:
        return f"{name}: {owner.host} has restarted since"
    if owner.pid_ns != here.pid_ns:
        return None  # its pids are not ours (boot ids first: namespaces change at a restart)
    return _probe(owner, name)


def _probe(owner: Owner, name: str) -> str | None:
    """Look for ``owner`` among this host's processes (see :func:`why_gone`)."""
    try:
        os.kill(owner.pid, 0)  # signal 0: nothing is sent, only whether the pid exists
    except ProcessLookupError:
        return f"{name}: it crashed or was killed"
    except OSError:
        pass  # PermissionError: it exists, and belongs to another user
    if owner.started is None:
        return None
    stat = _stat(owner.pid)
    if stat is None:
        return None  # hidden from us (hidepid), or it just ended: the next look will tell
    state, started = stat
    if state in _DEAD_STATES:
        return f"{name}: it crashed or was killed"
    if started != owner.started:
        return f"{name}: it crashed or was killed, and its pid now names another process"
    return None
