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
it aside, on open or at the first read or write that meets the damage; a file that looks, before
SQLite opens it, as if it lost data (:func:`_lost_data`) makes each thread that then finds no
state give a :class:`CheckpointLossWarning` and a log warning. See docs/durability.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import sqlite3
import struct
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from reflectkit.errors import ConfigurationError
from reflectkit.redaction import REDACTED, is_secret_name, one_line, redact
from reflectkit.result import Draft, Iteration, ReflectionResult, StopReason, TrialRecord
from reflectkit.stores.sqlite import BUSY_TIMEOUT, connect, user_data_dir
from reflectkit.tags import ParseStatus
from reflectkit.usage import Usage
from reflectkit.verdict import Verdict

if TYPE_CHECKING:
    import aiosqlite
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        ChannelVersions,
        Checkpoint,
        CheckpointMetadata,
        CheckpointTuple,
        DeltaChannelHistory,
    )
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

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

NEW_FILE_SECONDS = 60.0
"""An empty checkpoint file younger than this may be one another process is creating; an older
one has lost its data (a SQLite file reflectkit has opened is never empty)."""

_DAMAGE_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums of little-endian / big-endian 32-bit words
_WAL_VERSION = 3007000


class CheckpointLossWarning(UserWarning):
    """A durable run found no saved state for its thread in a checkpoint file that looks like it
    lost data (see docs/durability.md): if the run was meant to resume, its completed steps are
    being made, and paid for, again."""


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def _default_setting() -> str:
    """``$REFLECTKIT_CHECKPOINTS`` as set (a path or a URL), or "" when unset or blank."""
    return os.environ.get(ENV_VAR, "").strip()


def default_path() -> Path:
    """The SQLite file of the default checkpointer: ``$REFLECTKIT_CHECKPOINTS`` when it holds a
    path, else ``<user data dir>/reflectkit/checkpoints.sqlite3`` (see
    :func:`reflectkit.stores.sqlite.user_data_dir`). When the variable holds a ``postgresql://`` URL
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
                # Looked at before SQLite touches the file: opening it rolls a damaged WAL back
                # and writes a header into an empty file, and the evidence is gone.
                self.lost_data = await asyncio.to_thread(_lost_data, path, time.time())
                # The shared SQLite plumbing creates the directory (and the file, owner-only),
                # refuses a file that is not a database, and switches to WAL with retries: the
                # saver's own switch fails at once when two processes open a new file together.
                await asyncio.to_thread(_prepare_file, path)
            conn = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT)
        except (sqlite3.Error, OSError) as error:
            raise _open_error(where, error) from None
        stack.push_async_callback(conn.close)
        saver = _guarded(AsyncSqliteSaver)(conn, serializer(self._allowed), path, self.lost_data)
        if self.lost_data is not None:
            logger.warning("%s looks like it lost data: %s", where, self.lost_data)
        try:
            await saver.setup()
        except sqlite3.Error as error:
            raise _open_error(where, error) from None
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
            raise ConfigurationError(f"{where}: {one_line(error, secrets)}") from None
        stack.push_async_callback(conn.close)
        saver = AsyncPostgresSaver(conn, serde=serializer(self._allowed))
        try:
            await saver.setup()
        except psycopg.Error as error:
            raise ConfigurationError(f"{where}: {one_line(error, secrets)}") from None
        return saver


def _prepare_file(path: str) -> None:
    connect(path).close()


def _is_damage(error: BaseException) -> bool:
    """Whether SQLite said the file is damaged (corrupt, or not a database at all)."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _DAMAGE_CODES


def _damaged(path: str, error: BaseException) -> ConfigurationError:
    return ConfigurationError(
        f"checkpoint file {path} is damaged ({one_line(error)}): move it aside, with its -wal "
        "and -shm files if any (runs then start a new file there, and `sqlite3 FILE .recover` "
        "may save what is left of the old one), or choose another checkpointer path"
    )


def _open_error(where: str, error: BaseException) -> ConfigurationError:
    """The ConfigurationError for a failure to open; a damaged file says what to do."""
    if _is_damage(error):
        return ConfigurationError(
            f"{where}: {one_line(error)} (a damaged checkpoint file, or not one at all): move "
            "it aside, with its -wal and -shm files if any, or choose another checkpointer path"
        )
    return ConfigurationError(f"{where}: {one_line(error)}")


def _lost_data(path: str, now: float) -> str | None:
    """Why the SQLite file at ``path`` looks as if it lost data, or None. Read-only: called
    before SQLite opens the file (which would tidy the evidence away).

    * an empty file older than :data:`NEW_FILE_SECONDS` (a file SQLite has opened in WAL mode
      is never empty: a young one may be another process's, being created);
    * a write-ahead log (``-wal``) with frames, next to a database that is missing or empty;
    * a write-ahead log whose header is not one SQLite wrote, or in whose first
      :data:`_WAL_CHECKED` bytes a frame fails its checksum while a committed frame follows it
      (SQLite ignores a log from its first bad frame on: the steps saved there are gone).
    """
    wal = f"{path}-wal"
    try:
        found = os.stat(path)
        size: int | None = found.st_size
        age = now - found.st_mtime
    except FileNotFoundError:
        size, age = None, 0.0
    try:
        wal_size = os.stat(wal).st_size
    except FileNotFoundError:
        wal_size = 0
    if wal_size and not size:
        state = "missing" if size is None else "empty"
        return f"its write-ahead log {wal} holds data but the database file is {state}"
    if size == 0 and age > NEW_FILE_SECONDS:
        return f"it is empty, and {age:.0f} s old (a checkpoint file in use is never empty)"
    if wal_size:
        try:
            with open(wal, "rb") as log:
                damage = _wal_damage(log)
        except OSError:
            damage = None  # unreadable here: SQLite will say what it thinks on open
        if damage is not None:
            return f"its write-ahead log {wal} is damaged ({damage})"
    return None


_WAL_CHECKED = 128 << 10
"""How much of a write-ahead log :func:`_lost_data` checksums (5 to 15 ms of Python); the
frames' headers are read to its end."""


def _wal_sums(data: bytes, big_endian: bool, sums: tuple[int, int]) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), continuing from ``sums``."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s0, s1 = sums
    for first, second in zip(words[::2], words[1::2], strict=True):
        s0 = (s0 + first + s1) & 0xFFFFFFFF
        s1 = (s1 + second + s0) & 0xFFFFFFFF
    return s0, s1


def _wal_damage(log: BinaryIO) -> str | None:
    """What is wrong with the write-ahead log ``log``, or None when it looks as SQLite left it.

    Its header must be SQLite's (magic number, format, page size, checksum). Then frames are
    checked in order while they belong to this log (their salt is the header's; older frames
    after them are left over from before the log was restarted, as SQLite leaves them): a
    frame that fails its checksum ends the log for SQLite, which is damage if a committed frame
    of this log comes after it. A torn last transaction (a crash mid-write) has no commit after
    it, and is what SQLite is meant to roll back."""
    header = log.read(32)
    if len(header) < 32:
        return "its header is cut short"
    magic, version, page_size = struct.unpack(">III", header[:12])
    if magic not in _WAL_MAGIC or version != _WAL_VERSION:
        return "its header is not SQLite's"
    page_size = 65536 if page_size == 1 else page_size
    big_endian = bool(magic & 1)
    if not 512 <= page_size <= 65536 or page_size & (page_size - 1):
        return "its header is not SQLite's"
    sums = _wal_sums(header[:24], big_endian, (0, 0))
    if sums != struct.unpack(">II", header[24:32]):
        return "its header fails its checksum"
    salt, frame_size, checked = header[16:24], 24 + page_size, 0
    while checked < _WAL_CHECKED and len(frame := log.read(frame_size)) == frame_size:
        checked += frame_size
        if frame[8:16] != salt:
            return None  # the end of this log: what follows is older
        sums = _wal_sums(frame[:8] + frame[24:], big_endian, sums)
        if sums != struct.unpack(">II", frame[16:24]):
            while len(later := log.read(frame_size)) >= 24:
                if later[8:16] == salt and later[4:8] != bytes(4):  # a commit of this log
                    return "a frame fails its checksum and committed frames follow it"
            return None
    return None


@contextmanager
def _guarding(path: str) -> Iterator[None]:
    """Turn SQLite's word that the file is damaged into a ConfigurationError saying what to do."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        if not _is_damage(error):
            raise
        raise _damaged(path, error) from None


def _warn_missing(path: str, lost_data: str, thread: object) -> None:
    message = (
        f"thread {thread!r} has no saved state in checkpoint file {path}, which looks like it "
        f"lost data ({lost_data}): if the run was to resume, it starts over and its completed "
        "steps are paid for again"
    )
    logger.warning("%s", message)
    warnings.warn(message, CheckpointLossWarning, stacklevel=3)


@functools.cache
def _guarded(
    base: type[AsyncSqliteSaver],
) -> Callable[[aiosqlite.Connection, JsonPlusSerializer, str, str | None], AsyncSqliteSaver]:
    """LangGraph's SQLite saver, made to say which file is damaged and what to do about it, and
    to warn once per thread that has no state in a file that looked as if it lost data. Made on
    first use: langgraph-checkpoint-sqlite is imported only when a SQLite file is opened."""

    # The base is a value (imported on first use), which mypy cannot take as a class.
    class GuardedSqliteSaver(base):  # type: ignore[valid-type,misc]
        def __init__(
            self,
            conn: aiosqlite.Connection,
            serde: JsonPlusSerializer,
            path: str,
            lost_data: str | None,
        ) -> None:
            super().__init__(conn, serde=serde)
            self.reflectkit_path, self.reflectkit_lost_data = path, lost_data
            self.reflectkit_warned: set[str] = set()

        async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
            with _guarding(self.reflectkit_path):
                found: CheckpointTuple | None = await super().aget_tuple(config)
            thread = (config.get("configurable") or {}).get("thread_id")
            lost, warned = self.reflectkit_lost_data, self.reflectkit_warned
            missing = found is None and thread is not None and str(thread) not in warned
            if missing and lost is not None:
                warned.add(str(thread))
                _warn_missing(self.reflectkit_path, lost, thread)
            return found

        async def alist(
            self,
            config: RunnableConfig | None,
            *,
            filter: dict[str, Any] | None = None,
            before: RunnableConfig | None = None,
            limit: int | None = None,
        ) -> AsyncIterator[CheckpointTuple]:
            with _guarding(self.reflectkit_path):
                async for item in super().alist(config, filter=filter, before=before, limit=limit):
                    yield item

        async def aput(
            self,
            config: RunnableConfig,
            checkpoint: Checkpoint,
            metadata: CheckpointMetadata,
            new_versions: ChannelVersions,
        ) -> RunnableConfig:
            with _guarding(self.reflectkit_path):
                saved: RunnableConfig = await super().aput(
                    config, checkpoint, metadata, new_versions
                )
                return saved

        async def aput_writes(
            self,
            config: RunnableConfig,
            writes: Sequence[tuple[str, Any]],
            task_id: str,
            task_path: str = "",
        ) -> None:
            with _guarding(self.reflectkit_path):
                await super().aput_writes(config, writes, task_id, task_path)

        async def adelete_thread(self, thread_id: str) -> None:
            with _guarding(self.reflectkit_path):
                await super().adelete_thread(thread_id)

        async def aget_delta_channel_history(
            self, *, config: RunnableConfig, channels: Sequence[str]
        ) -> Mapping[str, DeltaChannelHistory]:
            with _guarding(self.reflectkit_path):
                found: Mapping[str, DeltaChannelHistory]
                found = await super().aget_delta_channel_history(config=config, channels=channels)
                return found

    return GuardedSqliteSaver


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
