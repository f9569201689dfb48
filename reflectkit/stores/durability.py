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

SQLite files are created owner-only (they hold prompts and drafts as they were). A file SQLite
finds damaged raises :class:`~reflectkit.errors.ConfigurationError` naming it and saying to move
it aside, on open or at the first read or write that meets the damage (:mod:`.checkpoint_sqlite`);
a file that looks, before SQLite opens it, as if it lost data (:mod:`.checkpoint_loss`) makes
each thread that then finds no state give a :class:`CheckpointLossWarning` and a log warning.
URLs are shown without their secrets (:mod:`.checkpoint_urls`). See docs/durability.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import time
import warnings
from collections.abc import Iterable
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from reflectkit.errors import ConfigurationError
from reflectkit.redaction import one_line
from reflectkit.result import Draft, Iteration, ReflectionResult, StopReason, TrialRecord
from reflectkit.stores import checkpoint_loss
from reflectkit.stores.checkpoint_loss import NEW_FILE_SECONDS
from reflectkit.stores.checkpoint_sqlite import guarded, open_error, prepare_file
from reflectkit.stores.checkpoint_urls import URL, display_url, url_secrets
from reflectkit.stores.sqlite import BUSY_TIMEOUT, user_data_dir
from reflectkit.tags import ParseStatus
from reflectkit.usage import Usage
from reflectkit.verdict import Verdict

__all__ = [
    "ENV_VAR",
    "NEW_FILE_SECONDS",
    "POSTGRES_INSTALL",
    "STATE_TYPES",
    "CheckpointLossWarning",
    "Checkpointer",
    "CheckpointerSetting",
    "default_path",
    "open_checkpointer",
    "serializer",
]

logger = logging.getLogger(__name__)

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

_POSTGRES_SCHEMES = ("postgresql", "postgres")


class CheckpointLossWarning(UserWarning):
    """A durable run found no saved state for its thread in a checkpoint file that looks like it
    lost data (see docs/durability.md): if the run was meant to resume, its completed steps are
    being made, and paid for, again."""


def _default_setting() -> str:
    """``$REFLECTKIT_CHECKPOINTS`` as set (a path or a URL), or "" when unset or blank."""
    return os.environ.get(ENV_VAR, "").strip()


def default_path() -> Path:
    """The SQLite file of the default checkpointer: ``$REFLECTKIT_CHECKPOINTS`` when it holds a
    path, else ``<user data dir>/reflectkit/checkpoints.sqlite3`` (see
    :func:`reflectkit.stores.sqlite.user_data_dir`). When the variable holds a ``postgresql://`` URL
    the default checkpointer is that server, and this is where it would save otherwise."""
    override = _default_setting()
    if override and not URL.match(override):
        return Path(override).expanduser()
    return user_data_dir() / "reflectkit" / "checkpoints.sqlite3"


def serializer(extra_types: Iterable[type] = ()) -> JsonPlusSerializer:
    """LangGraph's serializer with an allow-list of :data:`STATE_TYPES` plus ``extra_types``
    (the classes of your own graph's state, when a reflectkit graph is a subgraph of it)."""
    return JsonPlusSerializer(allowed_msgpack_modules=[*STATE_TYPES, *extra_types])


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
    lost_data: str | None = None
    """Why the SQLite file looked, when it was last opened, as if it had lost data (it was empty
    but not new, or its write-ahead log was damaged or left without its database), else None.
    A thread that then has no saved state gives a :class:`CheckpointLossWarning`."""

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
        scheme = URL.match(text)
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
                f"unsupported checkpointer URL {display_url(text)}: use postgresql://... "
                "or a file path"
            )
        self.kind, self.location = "postgres", display_url(text)
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
                # Looked at before SQLite touches the file: opening it rolls a damaged WAL back
                # and writes a header into an empty file, and the evidence is gone.
                self.lost_data = await asyncio.to_thread(
                    checkpoint_loss.lost_data, path, time.time()
                )
                # The shared SQLite plumbing creates the directory (and the file, owner-only),
                # refuses a file that is not a database, and switches to WAL with retries: the
                # saver's own switch fails at once when two processes open a new file together.
                await asyncio.to_thread(prepare_file, path)
            conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT)
        except (sqlite3.Error, OSError) as error:
            raise open_error(where, error) from None
        stack.push_async_callback(conn.close)
        lost = self.lost_data
        warn = None if lost is None else functools.partial(_warn_missing, path, lost)
        saver = guarded(AsyncSqliteSaver)(conn, serializer(self._allowed), path, warn)
        if self.lost_data is not None:
            logger.warning("%s looks like it lost data: %s", where, self.lost_data)
        try:
            await saver.setup()
        except sqlite3.Error as error:
            raise open_error(where, error) from None
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
        url, secrets = self._target, url_secrets(self._target)
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
            raise ConfigurationError(f"{where}: {one_line(error, secrets)}") from None
        stack.push_async_callback(conn.close)
        saver = AsyncPostgresSaver(conn, serde=serializer(self._allowed))
        try:
            await saver.setup()
        except psycopg.Error as error:
            raise ConfigurationError(f"{where}: {one_line(error, secrets)}") from None
        return saver


def _warn_missing(path: str, lost_data: str, thread: object) -> None:
    message = (
        f"thread {thread!r} has no saved state in checkpoint file {path}, which looks like it "
        f"lost data ({lost_data}): if the run was to resume, it starts over and its completed "
        "steps are paid for again"
    )
    logger.warning("%s", message)
    warnings.warn(message, CheckpointLossWarning, stacklevel=3)


def open_checkpointer(
    setting: CheckpointerSetting = None, *, allowed_types: Iterable[type] = ()
) -> Checkpointer:
    """The checkpointer for ``setting`` (see the module docstring), not yet open:

        async with open_checkpointer("runs.sqlite3") as saver:
            graph = build_graph(model=..., checkpointer=saver)
            await graph.ainvoke(inputs, {"configurable": {"thread_id": "run-1"}})

    ``allowed_types`` are classes besides reflectkit's that checkpoints may rebuild (your own
    state's, when the reflectkit graph is part of a larger graph). Bad settings raise
    :class:`~reflectkit.errors.ConfigurationError` here; connection failures raise it on open.
    """
    return Checkpointer(setting, allowed_types=allowed_types)
