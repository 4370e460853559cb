"""Database sessions, on the URL from settings (the same one `reflex db` migrates)."""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import reflex as rx
import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql, sqlite

from fictures.reflex_compat import forget_inherited_db_connections

T = TypeVar("T")

# Worker threads for pages' loads (reads), at most this many at once per process.
PAGE_THREADS = 8
# One limiter per event loop (a worker's; tests run several loops in turn).
_page_threads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def session() -> sqlmodel.Session:
    """A new session; use as ``with db.session() as s:``."""
    return rx.session()


async def page_read(fn: Callable[..., T], *args: Any) -> T:
    """Run a page load's blocking DB reads in a worker thread of the pages' own.

    The REST API runs its work in Starlette's shared pool (40 threads). Pages
    queue apart: a reconnect storm (an instance's 500 tabs reloading on another)
    queues hundreds of page loads, and in the shared pool an author's publish
    waited behind all of them (43 of 12,000 publish requests took over 10 s in
    the soak, benchmarks/RESULTS.md). Here the loads wait their turn among
    themselves, a few at a time, and each is done sooner. Writes (publishing
    from /writing, posting) keep the shared pool: they never queue behind loads."""
    loop = asyncio.get_running_loop()
    if (limiter := _page_threads.get(loop)) is None:
        limiter = _page_threads[loop] = anyio.CapacityLimiter(PAGE_THREADS)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter)


def insert_ignore(
    session: sqlmodel.Session, model: type[sqlmodel.SQLModel], conflict: list[str], **values: Any
) -> bool:
    """Insert one row unless a row with the same `conflict` columns exists (a
    unique constraint); True if it was inserted. One statement (`ON CONFLICT DO
    NOTHING`): concurrent inserts of the same row, from any worker, neither fail
    nor duplicate, where a check-then-insert would race."""
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(dialect)
    if insert is None:
        raise NotImplementedError(f"insert_ignore does not support {dialect}")
    statement = insert(model).values(**values).on_conflict_do_nothing(index_elements=conflict)
    return session.exec(statement).rowcount == 1


# Production workers are forked from the `reflex` process, which has already
# used the engine (Reflex checks the schema there). A pooled connection
# inherited that way is the parent's socket: two workers sharing it corrupt
# each other's results (psycopg2 "error with status PGRES_TUPLES_OK").
os.register_at_fork(after_in_child=forget_inherited_db_connections)


@sa.event.listens_for(sa.engine.Engine, "connect")
def _sqlite_write_ahead_log(dbapi_connection: Any, _record: Any) -> None:
    """SQLite (the embedded default) in write-ahead-log mode with `synchronous=NORMAL`.

    The default rollback journal syncs the disk several times per commit
    (0.9 ms p50, 8.9 ms p99 on this project's machines), and every published
    story waits for one commit before its event can go out; in WAL mode a commit
    appends to the log (0.01 ms), readers (pages, the outbox relay, SSE replay)
    never wait for a writer, and a crash of the app loses nothing. A power cut
    may lose the last commits, not corrupt the file: fine for a development
    database (production runs PostgreSQL). A busy timeout makes a second
    process wait for the write lock instead of failing at once.
    """
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=10000")
        finally:
            cursor.close()
