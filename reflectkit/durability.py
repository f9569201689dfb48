"""Durable runs: LangGraph checkpointers that save reflectkit's graph state after every step.

A run's state (the conversation, every draft with its verdict, usage so far, the stop decision)
is plain data, so a LangGraph checkpointer can save it after each step. A run started with a
``thread_id`` that fails half-way (a provider outage, a crash, a deploy) can then be resumed:
invoking the same graph again with input ``None`` and the same ``thread_id`` continues from the
last completed step instead of paying for the drafts and critiques again.

:func:`open_checkpointer` turns one setting into a checkpointer:

* ``None`` or ``True``: the default, ``$REFLECTKIT_CHECKPOINTS`` (a path or a URL, as below)
  or else SQLite in ``<user data dir>/reflectkit/checkpoints.sqlite3``;
* a path (``str`` or :class:`~pathlib.Path`; ``":memory:"`` for a throw-away one): SQLite there;
* a ``postgresql://`` (or ``postgres://``) URL: PostgreSQL, with the ``postgres`` extra;
* a ready ``BaseCheckpointSaver`` (yours, with its own serializer): used as it is.

Why a serializer of our own: LangGraph's default serializer restores any class a checkpoint
names, logging a warning for each type not on its allow-list ("will be blocked in a future
version"), and blocks them outright under ``LANGGRAPH_STRICT_MSGPACK``. The savers opened here
get :func:`serializer`, whose allow-list is LangGraph's safe types plus exactly the types in
reflectkit's state (:data:`STATE_TYPES`), so the state comes back as the same objects, with no
warning, and a checkpoint cannot make the process import anything else.

Savers from ``aiosqlite`` and ``psycopg`` are bound to the event loop that opened them: open
the checkpointer in the loop that runs the graph, and close it there.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import Iterable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from reflectkit.critics.verdict import Verdict
from reflectkit.errors import ConfigurationError
from reflectkit.redaction import REDACTED, is_secret_name, redact
from reflectkit.result import Draft, Iteration, ReflectionResult, StopReason, TrialRecord
from reflectkit.sqlite import BUSY_TIMEOUT, connect, user_data_dir
from reflectkit.tags import ParseStatus
from reflectkit.usage import Usage

__all__ = [
    "ENV_VAR",
    "POSTGRES_INSTALL",
    "STATE_TYPES",
    "Checkpointer",
    "CheckpointerSetting",
    "default_path",
    "open_checkpointer",
    "serializer",
]

ENV_VAR = "REFLECTKIT_CHECKPOINTS"
"""Where the default checkpointer saves: a file path, or a ``postgresql://`` URL."""

POSTGRES_INSTALL = 'pip install "reflectkit[postgres]"'

STATE_TYPES: tuple[type, ...] = (
    Draft,
    Iteration,
    ParseStatus,
    ReflectionResult,
    StopReason,
    TrialRecord,
    Usage,
    Verdict,
)
"""The classes a reflectkit graph keeps in its state; checkpoints may rebuild these and no
others (besides LangGraph's own safe types: messages, datetimes, UUIDs, ...)."""

CheckpointerSetting = bool | str | os.PathLike[str] | BaseCheckpointSaver[Any] | None
"""What :func:`open_checkpointer` accepts (see the module docstring)."""

CONNECT_TIMEOUT = 10
"""Seconds to wait for a Postgres server, unless the URL sets ``connect_timeout``."""

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def _default_setting() -> str:
    """``$REFLECTKIT_CHECKPOINTS`` as set (a path or a URL), or "" when unset or blank."""
    return os.environ.get(ENV_VAR, "").strip()


def default_path() -> Path:
    """The SQLite file of the default checkpointer: ``$REFLECTKIT_CHECKPOINTS`` when it holds a
    path, else ``<user data dir>/reflectkit/checkpoints.sqlite3`` (see
    :func:`reflectkit.sqlite.user_data_dir`). When the variable holds a ``postgresql://`` URL
    the default checkpointer is that server, and this is where it would save otherwise."""
    override = _default_setting()
    if override and not _URL.match(override):
        return Path(override).expanduser()
    return user_data_dir() / "reflectkit" / "checkpoints.sqlite3"


def serializer(extra_types: Iterable[type] = ()) -> JsonPlusSerializer:
    """LangGraph's serializer with an allow-list of :data:`STATE_TYPES` plus ``extra_types``
    (the classes of your own graph's state, when a reflectkit graph is a subgraph of it)."""
    return JsonPlusSerializer(allowed_msgpack_modules=[*STATE_TYPES, *extra_types])


def _display_url(url: str) -> str:
    """``url`` fit for a message: no ``user:password@``, secret-named query values redacted.
    ``url`` must have passed :func:`urlsplit` (see ``Checkpointer._check``)."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    query = urlencode(
        [
            (name, REDACTED if is_secret_name(name) else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="[]",
    )
    return redact(urlunsplit((parts.scheme, hosts, parts.path, query, parts.fragment)))


def _url_secrets(url: str) -> list[str]:
    """The password of ``url`` (as written and percent-decoded) and secret-named query values."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    found = [userinfo.partition(":")[2]] if ":" in userinfo else []
    found += [v for k, v in parse_qsl(parts.query) if is_secret_name(k)]
    return [s for value in found if value for s in {value, unquote(value)}]


def _one_line(error: BaseException, secrets: Iterable[str] = ()) -> str:
    detail = " ".join(str(error).split()) or type(error).__name__
    return redact(detail, secrets)


class Checkpointer:
    """A checkpointer for one setting: :meth:`open` it (or ``async with`` it) to get the
    LangGraph saver, and :meth:`close` it when done. Settings are checked on construction, so
    a bad one fails before anything is opened; a saver passed in is used as it is and never
    closed here.

    ``kind`` is ``"sqlite"``, ``"postgres"`` or ``"custom"``; ``location`` is the file path,
    the URL without credentials, or the saver's class name, fit for logs and messages.
    """

    kind: Literal["sqlite", "postgres", "custom"]
    location: str

    def __init__(self, setting: CheckpointerSetting = None, *, allowed_types: Iterable[type] = ()):
        self._allowed = tuple(allowed_types)
        for allowed in self._allowed:
            if not isinstance(allowed, type):
                raise ConfigurationError(f"allowed_types must be classes, not {allowed!r}")
        self._given: BaseCheckpointSaver[Any] | None = None
        self._saver: BaseCheckpointSaver[Any] | None = None
        self._stack: AsyncExitStack | None = None
        self._target = ""
        if isinstance(setting, BaseCheckpointSaver):
            self.kind, self.location, self._given = "custom", type(setting).__name__, setting
            return
        if setting is None or setting is True:
            target: str | os.PathLike[str] = _default_setting() or default_path()
        elif isinstance(setting, (str, os.PathLike)):
            target = setting
        else:
            raise ConfigurationError(
                f"checkpointer must be None, True, a file path, a postgresql:// URL or a LangGraph "
                f"checkpoint saver, not {type(setting).__name__} {setting!r}"
            )
        self._target = self._check(target)

    def _check(self, target: str | os.PathLike[str]) -> str:
        text = os.fspath(target)
        if not isinstance(text, str):
            raise ConfigurationError(f"checkpointer path must be text, not {text!r}")
        text = text.strip()
        if not text:
            raise ConfigurationError("checkpointer path is empty")
        scheme = _URL.match(text)
        if scheme is None:
            # Absolute now, so a later change of directory does not move the file.
            path = text if text == ":memory:" else os.path.abspath(os.path.expanduser(text))
            self.kind, self.location = "sqlite", path
            return path
        name = scheme.group(0)[:-3].lower()
        try:
            urlsplit(text)
        except ValueError as error:  # e.g. an unclosed "[" of an IPv6 host
            # The URL itself may hold a password, so the message names only its scheme.
            raise ConfigurationError(f"malformed checkpointer URL {name}://...: {error}") from None
        if name not in _POSTGRES_SCHEMES:
            raise ConfigurationError(
                f"unsupported checkpointer URL {_display_url(text)}: use postgresql://... "
                "or a file path"
            )
        self.kind, self.location = "postgres", _display_url(text)
        return text

    @property
    def saver(self) -> BaseCheckpointSaver[Any]:
        """The open saver; raises ConfigurationError before :meth:`open`."""
        if self._given is not None:
            return self._given
        if self._saver is None:
            raise ConfigurationError(f"checkpointer {self.location} is not open")
        return self._saver

    async def open(self) -> BaseCheckpointSaver[Any]:
        """Connect, create the tables if needed, and return the saver (the same one when
        already open). Failures raise ConfigurationError naming the location, never a
        password."""
        if self._given is not None:
            return self._given
        if self._saver is not None:
            return self._saver
        stack = AsyncExitStack()
        try:
            if self.kind == "postgres":
                saver = await self._open_postgres(stack)
            else:
                saver = await self._open_sqlite(stack)
        except BaseException:
            await stack.aclose()
            raise
        winner = self._opened()  # a method: mypy would keep the narrowing from before the await
        if winner is not None:
            # Another open() finished while this one waited: keep one connection, not two.
            await stack.aclose()
            return winner
        self._stack, self._saver = stack, saver
        return saver

    def _opened(self) -> BaseCheckpointSaver[Any] | None:
        return self._saver

    async def close(self) -> None:
        """Close the connection this opened (nothing for a saver passed in). Safe to repeat;
        :meth:`open` may be called again afterwards."""
        stack, self._stack, self._saver = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> BaseCheckpointSaver[Any]:
        return await self.open()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "open" if self._saver is not None or self._given is not None else "closed"
        return f"<Checkpointer {self.kind} {self.location} ({state})>"

    async def _open_sqlite(self, stack: AsyncExitStack) -> BaseCheckpointSaver[Any]:
        try:
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
        except ImportError as error:
            raise ConfigurationError(
                f"a SQLite checkpointer needs langgraph-checkpoint-sqlite ({error.name} is "
                'missing): pip install "reflectkit"'
            ) from None
        path = self._target
        where = f"checkpoint file {path}"
        try:
            if path != ":memory:":
                # The shared SQLite plumbing creates the directory, refuses a file that is not
                # a database, and switches to WAL with retries: the saver's own switch fails at
                # once when two processes open a new file together.
                await asyncio.to_thread(_prepare_file, path)
            conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT)
        except (sqlite3.Error, OSError) as error:
            raise ConfigurationError(f"{where}: {_one_line(error)}") from None
        stack.push_async_callback(conn.close)
        saver = AsyncSqliteSaver(conn, serde=serializer(self._allowed))
        try:
            await saver.setup()
        except sqlite3.Error as error:
            raise ConfigurationError(f"{where}: {_one_line(error)}") from None
        return saver

    async def _open_postgres(self, stack: AsyncExitStack) -> BaseCheckpointSaver[Any]:
        try:
            import psycopg
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.conninfo import conninfo_to_dict
            from psycopg.rows import dict_row
        except ImportError as error:
            raise ConfigurationError(
                f"a Postgres checkpointer needs the postgres extra ({error.name} is missing): "
                f"{POSTGRES_INSTALL}"
            ) from None
        url, secrets = self._target, _url_secrets(self._target)
        where = f"Postgres checkpointer {self.location}"
        try:
            options: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
            if "connect_timeout" in conninfo_to_dict(url):
                options = {}
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, prepare_threshold=0, row_factory=dict_row, **options
            )
        except (psycopg.Error, OSError) as error:
            # `from None`: the original error may quote the URL it could not parse.
            raise ConfigurationError(f"{where}: {_one_line(error, secrets)}") from None
        stack.push_async_callback(conn.close)
        saver = AsyncPostgresSaver(conn, serde=serializer(self._allowed))
        try:
            await saver.setup()
        except psycopg.Error as error:
            raise ConfigurationError(f"{where}: {_one_line(error, secrets)}") from None
        return saver


def _prepare_file(path: str) -> None:
    connect(path).close()


def open_checkpointer(
    setting: CheckpointerSetting = None, *, allowed_types: Iterable[type] = ()
) -> Checkpointer:
    """The checkpointer for ``setting`` (see the module docstring), not yet open::

        async with open_checkpointer("runs.sqlite3") as saver:
            graph = build_graph(model=..., checkpointer=saver)
            await graph.ainvoke(inputs, {"configurable": {"thread_id": "run-1"}})

    ``allowed_types`` are classes besides reflectkit's that checkpoints may rebuild (your own
    state's, when the reflectkit graph is part of a larger graph). Bad settings raise
    :class:`~reflectkit.errors.ConfigurationError` here; connection failures raise it on open.
    """
    return Checkpointer(setting, allowed_types=allowed_types)
