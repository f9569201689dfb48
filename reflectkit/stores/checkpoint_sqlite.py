"""LangGraph's SQLite checkpoint saver, made to say which file is damaged and what to do.

SQLite reports a damaged file (or one that is not a database) as a bare "database disk image is
malformed"; a durable run meeting it should rather be told which checkpoint file it is and
that it can be moved aside. :func:`open_error` and ``_guarding`` turn SQLite's word into such
a :class:`~reflectkit.errors.ConfigurationError`, on open and at every read or write of the saver
:func:`guarded` makes; that saver also warns once per thread that finds no state, when told to
(a file that looked as if it lost data: :mod:`.checkpoint_loss`). :func:`prepare_file` creates
a new file the way the other stores do (owner-only, in WAL mode).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from reflectkit.errors import ConfigurationError
from reflectkit.redaction import one_line
from reflectkit.stores.sqlite import connect

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

__all__ = ["Warn", "guarded", "open_error", "prepare_file"]

_DAMAGE_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def prepare_file(path: str) -> None:
    """Create the file at ``path`` as every store's is (owner-only, in WAL mode), or check that
    the one there is a database: see :func:`reflectkit.stores.sqlite.connect`."""
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


def open_error(where: str, error: BaseException) -> ConfigurationError:
    """The ConfigurationError for a failure to open; a damaged file says what to do."""
    if _is_damage(error):
        return ConfigurationError(
            f"{where}: {one_line(error)} (a damaged checkpoint file, or not one at all): move "
            "it aside, with its -wal and -shm files if any, or choose another checkpointer path"
        )
    return ConfigurationError(f"{where}: {one_line(error)}")


@contextmanager
def _guarding(path: str) -> Iterator[None]:
    """Turn SQLite's word that the file is damaged into a ConfigurationError saying what to do."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        if not _is_damage(error):
            raise
        raise _damaged(path, error) from None


Warn = Callable[[object], None]
"""What a saver does, once per thread, when the thread has no saved state (given its id)."""


@functools.cache
def guarded(
    base: type[AsyncSqliteSaver],
) -> Callable[[aiosqlite.Connection, JsonPlusSerializer, str, Warn | None], AsyncSqliteSaver]:
    """LangGraph's SQLite saver, made to say which file is damaged and what to do about it, and
    to call its ``warn`` once per thread that has no state (given when the file looked as if it
    lost data). Made on first use: langgraph-checkpoint-sqlite is imported only when a SQLite
    file is opened."""

    # The base is a value (imported on first use), which mypy cannot take as a class.
    class GuardedSqliteSaver(base):  # type: ignore[valid-type,misc]
        def __init__(
            self,
            conn: aiosqlite.Connection,
            serde: JsonPlusSerializer,
            path: str,
            warn: Warn | None,
        ) -> None:
            super().__init__(conn, serde=serde)
            self.reflectkit_path, self.reflectkit_warn = path, warn
            self.reflectkit_warned: set[str] = set()

        async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
            with _guarding(self.reflectkit_path):
                found: CheckpointTuple | None = await super().aget_tuple(config)
            thread = (config.get("configurable") or {}).get("thread_id")
            warn, warned = self.reflectkit_warn, self.reflectkit_warned
            missing = found is None and thread is not None and str(thread) not in warned
            if missing and warn is not None:
                warned.add(str(thread))
                warn(thread)
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
