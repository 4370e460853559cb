"""Transactional outbox: events are rows written with the change, then relayed to Redis.

`record` adds the event to the caller's session (committed with the change).
`OutboxRelay` (one per process) sends unsent rows in order, records the id
Redis assigned, and retries with backoff while Redis is unreachable, so a
change made during an outage is announced, in order, once Redis is back.

Each row is sent under its `event_key` (see fictures.events.bus for why the
id Redis returns for it can only be the id this very event got) and marked
sent by that key, never by its row number: a database replaced or restored
while a relay was sending reuses row numbers, and marking by number would
mark a row that was never sent.

Several relays (one per worker or instance) on one database send nothing
twice and nothing out of order, without locking rows:

- Each relay sends its batch one row at a time in row-id order. A batch is
  its own read, made after recording the last batch, or the read a committing
  thread of its process made right after its commit (`kick`): either lists
  the rows unsent when it was read, oldest first.
- Redis dedupes by event key: whichever relay sends a row first gives it its
  id; the others get that same id back, publish nothing, and record the same
  id (marking only rows still unsent, so the first record stands).
- So a row is first sent only after the row before it was (the relay sending
  it had sent that one, or found it sent, or saw it marked): first sends, and
  with them Redis ids, follow row order, within each sequence.
- On PostgreSQL a row's id is drawn when it is inserted, not when it commits,
  so a lower id can become visible after a higher one; the relay then sends it
  later, under a higher Redis id: commit order, not row order. That is the
  order that matters for two changes to the same story, and `record` makes it
  the row order too: it flushes the change first, so the transaction waits
  for the story's row lock before it draws its outbox id. On SQLite a write
  transaction holds the database's only write lock, so ids follow commit order.

`FOR UPDATE SKIP LOCKED` would not do better: a second relay would skip the
rows the first holds and send later rows ahead of them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import redis.exceptions
import sqlalchemy as sa
from sqlalchemy import func, update
from sqlmodel import Session, col, select

from fictures import db, metrics
from fictures.events.bus import EventBus
from fictures.events.schema import PRIVATE_CHANNELS, CommunityEvent, is_private_channel
from fictures.models import OutboxEvent, new_event_key, utcnow
from fictures.settings import settings

logger = logging.getLogger(__name__)

_BATCH = 200


# Rows are written and read with Core statements on the session's connection:
# an ORM object and the unit of work cost several times more on the way from a
# commit to its PUBLISH (benchmarks/publish_floor.py; README "Performance").
_OUTBOX = OutboxEvent.__table__
_INSERT = _OUTBOX.insert()
_UNSENT_COLUMNS = (_OUTBOX.c.id, _OUTBOX.c.event_key, _OUTBOX.c.channel, _OUTBOX.c.payload)
_UNSENT = (
    sa.select(*_UNSENT_COLUMNS)
    .where(_OUTBOX.c.sent_at.is_(None))
    .order_by(_OUTBOX.c.id)
    .limit(sa.bindparam("limit"))
)


def record(session: Session, event: CommunityEvent) -> None:
    """Write `event`'s row in the session's transaction; the caller then calls `commit`.

    Make the change first: the change's pending writes are flushed here, before
    the event's row draws its id (see the module doc)."""
    # Taking the change's row locks now means a concurrent change to the same
    # rows has committed (with its lower outbox id) before this row gets an id.
    session.flush()
    session.connection().execute(
        _INSERT,
        {"event_key": new_event_key(), "channel": event.channel,
         "payload": event.body_without_id(), "created_at": utcnow(),
         "event_id": None, "sent_at": None},
    )


def commit(session: Session, *refresh: object) -> None:
    """Commit the change and its events, hand the unsent rows to the relay, then
    reload `refresh` (the relay starts sending while the caller's objects
    reload, not after)."""
    session.commit()
    kick(session)
    for obj in refresh:
        session.refresh(obj)


_relays: set[OutboxRelay] = set()
_relays_lock = threading.Lock()


def kick(session: Session | None = None) -> None:
    """Wake this process's relay (thread-safe). Other processes' relays sweep.

    With the `session` that just committed, the unsent rows are read here, in
    the committing thread, and handed over with the wake-up: the relay then
    publishes at once instead of first reading them in a thread of its own
    (a thread hop and a session: about half of its wake-up-to-PUBLISH time,
    benchmarks/RESULTS.md "issue10" sections). It is the read the relay would
    have made, only earlier: the same rows, in the same order."""
    with _relays_lock:
        relays = list(_relays)
    if not relays:
        return
    kicked_at = time.perf_counter()
    rows = _unsent_rows(session, _BATCH) if session is not None else None
    for relay in relays:
        relay.wake(rows, kicked_at=kicked_at)


def _unsent_rows(session: Session, limit: int) -> list[Any]:
    """Unsent rows, oldest first, as (id, event_key, channel, payload) rows."""
    return list(session.connection().execute(_UNSENT, {"limit": limit}))


def _unsent(limit: int) -> list[Any]:
    with db.session() as s:
        return _unsent_rows(s, limit)


def _mark_sent(sent: list[tuple[str, int]]) -> None:
    """Record (event_key, event id) pairs: by key, so a row that merely reuses the
    number of one that was sent is never marked; only rows still unsent, so the
    id recorded by the relay that sent it first stands."""
    now = utcnow()
    with db.session() as s:
        for event_key, event_id in sent:
            s.exec(
                update(OutboxEvent)
                .where(OutboxEvent.event_key == event_key, OutboxEvent.sent_at.is_(None))
                .values(event_id=event_id, sent_at=now)
            )
        s.commit()


def _floors_and_backlog() -> tuple[dict[bool, int], int]:
    """The newest recorded id of each sequence ({private?: id}) and the unsent count."""
    with db.session() as s:
        newest = select(func.max(OutboxEvent.event_id))
        floors = {
            False: s.exec(newest.where(col(OutboxEvent.channel).not_in(PRIVATE_CHANNELS))).one() or 0,
            True: s.exec(newest.where(col(OutboxEvent.channel).in_(PRIVATE_CHANNELS))).one() or 0,
        }
        backlog = s.exec(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.sent_at.is_(None))
        ).one()
    return floors, backlog


class OutboxRelay:
    def __init__(self, bus: EventBus, *, seen_id: Callable[[bool], int] = lambda private: 0):
        """`seen_id(private)` gives the newest id of that sequence this process has
        seen: with the DB's newest recorded id it is the floor for new ids, so ids
        keep growing even after Redis lost its data (an embedded or non-persistent
        server restarted)."""
        self.bus = bus
        self._seen_id = seen_id
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._floors = {False: 0, True: 0}  # per sequence: {private?: floor}
        # The DB floor is read once, and again after Redis failed (it may come
        # back empty): not on every publish.
        self._floor_stale = True
        self._woken_at: float | None = None  # when a commit in this process woke it
        self._offered: list[Any] | None = None  # unsent rows read by a committing thread
        # Event keys this relay sent lately: an offer read before they were
        # marked sent lists them again, and resending costs a Redis round trip
        # (Redis would dedupe it). Its own reads come after its marks: not
        # filtered, so a row whose mark failed is sent (deduped) and marked.
        self._recently_sent: OrderedDict[str, None] = OrderedDict()

    def wake(self, rows: list[Any] | None = None, *, kicked_at: float | None = None) -> None:
        """Send what is unsent (thread-safe); `rows`, if given, are the unsent rows
        the committing thread read, starting at `kicked_at` (see `kick`)."""
        if self._loop is not None and not self._loop.is_closed():
            if self._woken_at is None:
                # fictures_outbox_relay_seconds: from the commit's kick to the PUBLISH
                self._woken_at = kicked_at or time.perf_counter()
            if rows is None:
                self._loop.call_soon_threadsafe(self._wake.set)
            else:
                self._loop.call_soon_threadsafe(self._take_offer, rows)

    def _take_offer(self, rows: list[Any]) -> None:
        # Two committing threads' reads may arrive in either order: an offer not
        # taken yet is merged with the new one (by event key, in row order), so
        # an earlier read arriving last cannot hide the rows of a later one.
        if self._offered:
            merged = {row.event_key: row for row in (*self._offered, *rows)}
            rows = sorted(merged.values(), key=lambda row: row.id)
        self._offered = rows
        self._wake.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        with _relays_lock:
            _relays.add(self)
        backoff = settings.redis_backoff_initial
        try:
            while True:
                try:
                    await self.flush()
                    backoff = settings.redis_backoff_initial
                    # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that
                    # lands as the wake-up fires, and shutdown then waits forever.
                    try:
                        async with asyncio.timeout(settings.outbox_sweep_seconds):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                    self._floor_stale = True
                    _, backlog = await asyncio.to_thread(_floors_and_backlog)
                    metrics.OUTBOX_BACKLOG.set(backlog)
                    logger.warning(
                        "Outbox relay cannot reach Redis (%s); %d events wait; retry in %.1fs",
                        exc, backlog, backoff,
                    )
                    await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                    backoff = min(backoff * 2, settings.redis_backoff_max)
                except Exception:
                    logger.exception("Outbox relay failed; retrying")
                    await asyncio.sleep(settings.redis_backoff_max)
        finally:
            with _relays_lock:
                _relays.discard(self)

    async def flush(self) -> int:
        """Send every unsent row, oldest first. Returns how many were sent."""
        total = 0
        self._wake.clear()
        woken_at, self._woken_at = self._woken_at, None
        if self._floor_stale:
            floors, _ = await asyncio.to_thread(_floors_and_backlog)
            for private, floor in floors.items():
                self._floors[private] = max(self._floors[private], floor)
            self._floor_stale = False
        for private in (False, True):
            self._floors[private] = max(self._floors[private], self._seen_id(private))
        while True:
            offered, self._offered = self._offered, None
            batch = offered if offered is not None else await asyncio.to_thread(_unsent, _BATCH)
            if not batch:
                break
            rows = batch if offered is None else [r for r in batch if r.event_key not in self._recently_sent]
            metrics.OUTBOX_BACKLOG.set(len(rows))
            sent: list[tuple[str, int]] = []
            try:
                for row in rows:
                    sent.append((row.event_key, await self._send(row)))
                    if woken_at is not None:
                        metrics.OUTBOX_RELAY_SECONDS.observe(time.perf_counter() - woken_at)
                        woken_at = None
            finally:
                if sent:
                    self._recently_sent.update(dict.fromkeys(key for key, _ in sent))
                    while len(self._recently_sent) > 2 * _BATCH:
                        self._recently_sent.popitem(last=False)
                    await asyncio.to_thread(_mark_sent, sent)
                    total += len(sent)
                    metrics.OUTBOX_BACKLOG.dec(len(sent))
            if len(batch) < _BATCH:
                break
        metrics.OUTBOX_BACKLOG.set(0)
        return total

    async def _send(self, row: Any) -> int:
        """Publish one row under its event key; returns the id Redis gave it."""
        private = is_private_channel(row.channel)
        event_id = await self.bus.send(
            row.channel, row.payload, dedupe_key=row.event_key, floor=self._floors[private],
        )
        self._floors[private] = max(self._floors[private], event_id)
        if not private:
            # The metrics endpoint is public: draft activity stays out of it.
            metrics.EVENTS_PUBLISHED.labels(row.channel).inc()
        logger.info("Published %s #%s (outbox row %s)", row.channel, event_id, row.id)
        return event_id
