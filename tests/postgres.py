"""A real PostgreSQL server for the tests of Postgres checkpointers.

:func:`postgres_server` yields the URL of a server to test against, in this order:

1. ``$REFLECTKIT_TEST_POSTGRES_URL``, when set: a server someone else runs (a CI service, a
   developer's own). Nothing is started or stopped; the tests create their own tables in it.
2. A throwaway cluster: ``initdb`` in a fresh temporary directory, ``pg_ctl start`` on a free
   port of 127.0.0.1 (TCP only, no Unix socket), password authentication with a random password,
   and a database created for the session. It is stopped and deleted on exit. The binaries are
   found under ``/usr/lib/postgresql/<version>/bin`` (Debian and Ubuntu's ``postgresql``
   package), else on ``PATH``.

PostgreSQL refuses to run as root, so when the tests run as root (containers, CI) ``initdb``
and ``pg_ctl`` run as an unprivileged user (``postgres`` if it exists, else ``nobody``); the
switch is ``subprocess``'s own ``user=``/``group=`` (setuid/setgid in the child), which needs no
``su``, ``runuser`` or ``sudo``. Without binaries or a URL, :class:`PostgresUnavailable` says why
and the tests skip, unless ``$REFLECTKIT_TEST_POSTGRES_REQUIRED`` is set (``.ci/run`` sets it),
in which case they fail: CI must not pass by skipping them. The session-scoped fixture
:func:`postgres_url` does that; import it into a test module to use it.

A throwaway cluster is tuned for speed, not safety (``fsync=off``): its data lives for one test
session. Starting one takes about a second (initdb, start, CREATE DATABASE), stopping it a
tenth of that.
"""

from __future__ import annotations

import glob
import importlib
import os
import re
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import pytest

__all__ = [
    "REQUIRED_ENV",
    "URL_ENV",
    "PostgresUnavailable",
    "find_binaries",
    "postgres_server",
    "postgres_url",
    "required",
]

URL_ENV = "REFLECTKIT_TEST_POSTGRES_URL"
REQUIRED_ENV = "REFLECTKIT_TEST_POSTGRES_REQUIRED"
DATABASE = "reflectkit_test"
SUPERUSER = "reflectkit"
START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
_FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresUnavailable(Exception):
    """No server to test against; the message says why and what would provide one."""


def required() -> bool:
    """Whether missing Postgres fails the tests instead of skipping them."""
    return os.environ.get(REQUIRED_ENV, "") not in ("", "0", "false", "no")


def find_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: the newest Debian-style
    ``/usr/lib/postgresql/<version>/bin``, else the one on ``PATH``; None if there is neither."""

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path))

    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(Path(directory, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(directory)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


@dataclass(frozen=True)
class _Account:
    """Who runs the server: the current user, or (as root) an unprivileged one."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_server(cls) -> _Account:
        if os.geteuid() != 0:
            return cls()
        import pwd  # POSIX only, and only needed as root

        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(entry.pw_uid, entry.pw_gid)
        raise PostgresUnavailable(
            "running as root and no 'postgres' or 'nobody' user to run PostgreSQL as"
        )

    def own(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def scratch_parent(self) -> str | None:
        """Where to make the cluster's directory: the usual temporary directory, unless
        another account must reach it and cannot (``$TMPDIR`` under root's 0700 home), then
        ``/tmp``."""
        if self.uid is None:
            return None
        path = Path(tempfile.gettempdir()).resolve()
        reachable = all(os.stat(p).st_mode & stat.S_IXOTH for p in [path, *path.parents])
        return None if reachable else "/tmp"

    def run(self, command: list[str], cwd: Path) -> None:
        completed = subprocess.run(
            command,
            cwd=cwd,
            user=self.uid,
            group=self.gid,
            extra_groups=[] if self.uid is not None else None,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            output = (completed.stdout + completed.stderr).strip()
            raise PostgresUnavailable(f"{Path(command[0]).name} failed: {output[-2000:]}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _cluster(binaries: Path) -> Iterator[str]:
    """Start a throwaway cluster; yield a URL to a fresh database in it; stop and delete it."""
    account = _Account.for_server()
    # 0700 and owned by the server's account: no other user can read the password file.
    base = Path(tempfile.mkdtemp(prefix="reflectkit-postgres-", dir=account.scratch_parent()))
    try:
        account.own(base)
        password = secrets.token_urlsafe(18)
        password_file = base / "password"
        password_file.write_text(password + "\n")
        account.own(password_file)
        data, log = base / "data", base / "server.log"
        account.run(
            [
                str(binaries / "initdb"),
                f"--pgdata={data}",
                f"--username={SUPERUSER}",
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            cwd=base,
        )
        settings = ["listen_addresses = '127.0.0.1'", "unix_socket_directories = ''"]
        with (data / "postgresql.conf").open("a") as conf:
            conf.write("\n".join([*settings, *(s.replace("=", " = ") for s in _FAST)]) + "\n")
        port = _start(account, binaries, data, log, base)
        try:
            url = f"postgresql://{SUPERUSER}:{quote(password, safe='')}@127.0.0.1:{port}"
            _create_database(f"{url}/postgres")
            yield f"{url}/{DATABASE}"
        finally:
            pg_ctl = str(binaries / "pg_ctl")
            account.run([pg_ctl, f"--pgdata={data}", "--mode=immediate", "--wait", "stop"], base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _start(account: _Account, binaries: Path, data: Path, log: Path, cwd: Path) -> int:
    """Start the server on a free port (another process may take a port between the probe and
    the start, so try a few); returns the port."""
    error = PostgresUnavailable("pg_ctl start was not tried")
    for _ in range(3):
        port = _free_port()
        try:
            account.run(
                [
                    str(binaries / "pg_ctl"),
                    f"--pgdata={data}",
                    f"--log={log}",
                    f"--options=-p {port}",
                    f"--timeout={START_TIMEOUT}",
                    "--wait",
                    "start",
                ],
                cwd=cwd,
            )
        except PostgresUnavailable as failure:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            error = PostgresUnavailable(f"{failure}\n{tail}".strip())
            continue
        return port
    raise error


def _create_database(admin_url: str) -> None:
    import psycopg  # the tests that use this module skip when psycopg is missing

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield a ``postgresql://`` URL of a database to test in (see the module docstring).

    Raises :class:`PostgresUnavailable` before yielding when there is no server to be had.
    """
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        yield url
        return
    binaries = find_binaries()
    if binaries is None:
        raise PostgresUnavailable(
            f"no PostgreSQL server: set {URL_ENV} to a postgresql:// URL, or install the server "
            "binaries (initdb, pg_ctl; Debian/Ubuntu: apt-get install postgresql)"
        )
    with _cluster(binaries) as cluster_url:
        yield cluster_url


def _unavailable(reason: str) -> NoReturn:
    if required():
        pytest.fail(f"{reason} ({REQUIRED_ENV} is set, so this fails instead of skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` URL of a database to test in, for the whole session (see the module
    docstring); skips the test, or fails it when ``$REFLECTKIT_TEST_POSTGRES_REQUIRED`` is set,
    when there is no server or the ``postgres`` extra is missing. Tests share the database, so
    each uses its own thread ids."""
    for module in ("psycopg", "langgraph.checkpoint.postgres"):
        try:
            importlib.import_module(module)
        except ImportError:
            _unavailable(f"{module} is not installed: pip install 'reflectkit[postgres]'")
    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_server())
        except PostgresUnavailable as why:
            _unavailable(str(why))
        yield url
