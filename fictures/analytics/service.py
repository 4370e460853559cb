"""The process's analytics task: every `analytics_seconds`, one Redis round trip.

Each tick, every process sends in one script (fictures.analytics.records):

- its share of the delivery records since the last tick (from the tally);
- a sample of its readers (live tabs, SSE streams) for the readers chart;
- while an admin watches anywhere: how many of its tabs are on each story's
  page (its tabs' page rooms, `story:<id>`), for "top stories by readers now";
- whether an admin watches here (tabs of this process in the admin room).

and learns whether an admin watches anywhere. Only a process with admins in
its admin room then reads the aggregates back and publishes them to the room
(only the values that changed, in one frame). With no admin watching, a tick
costs one script call and nothing per reader: the story counts, the reads and
the frames happen only while someone watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import reflex as rx
from sqlmodel import select

from fictures import db, metrics, reflex_compat, rooms
from fictures.analytics.records import READERS_SLOT, DeliveryRecords, EventRecord, Minute
from fictures.analytics.room import ADMIN_ROOM, AdminRoom, EventRow, watchers
from fictures.analytics.tally import Share, tally
from fictures.events.schema import PUBLIC_CHANNELS
from fictures.live import TabHub
from fictures.models import Story, StoryStatus, User, UserRole
from fictures.settings import redis_url, settings

logger = logging.getLogger(__name__)

_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
# Chart windows.
EVENT_MINUTES = 30
READER_MINUTES = 10
TOP_STORIES = 10
RECENT_EVENTS = 12
# Story rooms a process reports (its busiest): bounds what it writes per tick.
_STORIES_PER_PROCESS = 50
# Shares kept for the next try while Redis is down.
_MAX_BACKLOG = 20_000
# Events per script call.
_CHUNK = 500


def channel_key(channel: str) -> str:
    """A channel as a chart data key ("story:published" -> "story_published")."""
    return channel.replace(":", "_")


def _hhmm(ts: float, seconds: bool = False) -> str:
    return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.gmtime(ts))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _readable(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _published_titles(ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    with db.session() as s:
        rows = s.exec(
            select(Story.id, Story.title).where(
                Story.id.in_(ids), Story.status == StoryStatus.published.value
            )
        )
        return {story_id: title for story_id, title in rows}


def _admin_ids(user_ids: set[int]) -> set[int]:
    with db.session() as s:
        rows = s.exec(
            select(User.id).where(User.id.in_(user_ids), User.role == UserRole.admin.value)
        )
        return set(rows)


def _sse_streams() -> int:
    return int(metrics.SSE_CLIENTS.collect()[0].samples[0].value)


def event_rows(records: list[EventRecord]) -> list[EventRow]:
    return [
        EventRow(
            id=r.id,
            channel=r.channel,
            time=_hhmm(r.timestamp, seconds=True),
            tab_broadcast=r.readers["tab_broadcast"],
            tab_handler=r.readers["tab_handler"],
            sse=r.readers["sse"],
            p50=_readable(r.p50),
            p99=_readable(r.p99),
        )
        for r in records
    ]


def chart_values(
    minutes: list[Minute], top: list[tuple[int, str, int]], recent: list[EventRecord], now: float
) -> dict[str, Any]:
    """The admin room's values from what Redis holds (see AdminRoom)."""
    events = [
        {"t": _hhmm(m.start), **{channel_key(c): m.events.get(c, 0) for c in PUBLIC_CHANNELS}}
        for m in minutes
    ]
    latency = [{"t": _hhmm(m.start), "p50": _ms(m.p50), "p99": _ms(m.p99)} for m in minutes]
    since = now - READER_MINUTES * 60
    readers = [
        {"t": _hhmm(slot, seconds=True), "tabs": tabs, "sse": sse}
        for m in minutes
        for slot, (tabs, sse) in m.readers.items()
        if slot >= since
    ]
    tabs, sse = (readers[-1]["tabs"], readers[-1]["sse"]) if readers else (0, 0)
    return {
        "readers_now": f"{tabs} tab{'s' * (tabs != 1)}, {sse} SSE stream{'s' * (sse != 1)}",
        "events_per_minute": events,
        "latency": latency,
        "readers": readers,
        "top_stories": [{"id": i, "title": title, "readers": n} for i, title, n in top],
        "recent": event_rows(recent),
        "updated": _hhmm(now, seconds=True),
    }


class AnalyticsService:
    """This process's analytics task (see the module doc)."""

    _current: AnalyticsService | None = None

    def __init__(self, app: rx.App | None, records: DeliveryRecords, *, interval: float):
        self.app = app
        self.records = records
        self.interval = interval
        self.watching = False  # an admin watches somewhere (as of the last tick)
        self._backlog: list[Share] = []
        self._warned = False
        self._publishing = asyncio.Lock()

    @classmethod
    def current(cls) -> AnalyticsService | None:
        return cls._current

    # -- what this process knows --------------------------------------------------------

    def admins_here(self) -> bool:
        return self.app is not None and reflex_compat.room_size(self.app, ADMIN_ROOM) > 0

    @staticmethod
    def _hub() -> TabHub | None:
        return TabHub._current

    def _readers(self) -> tuple[int, int]:
        hub = self._hub()
        return (len(hub.tabs) if hub is not None else 0), _sse_streams()

    def _story_rooms(self) -> dict[int, int]:
        """This process's tabs per story page (their page rooms)."""
        hub = self._hub()
        if hub is None:
            return {}
        counts: Counter[str] = Counter()
        for names in list(hub.page_rooms.values()):
            counts.update(name for name in names if name.startswith("story:"))
        return {
            int(room.partition(":")[2]): n for room, n in counts.most_common(_STORIES_PER_PROCESS)
        }

    # -- the tick -----------------------------------------------------------------------

    async def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        here = self.admins_here()
        stories = self._story_rooms() if (here or self.watching) else None
        shares = [*self._backlog, *tally().take()]
        self._backlog = []
        metrics.count_tasks()  # (with several workers, a scrape reads every worker's count)
        try:
            for start in range(0, max(len(shares), 1), _CHUNK):
                last = start + _CHUNK >= len(shares)
                watching = await self.records.flush(
                    shares[start : start + _CHUNK],
                    now=now,
                    readers=self._readers() if last else None,
                    admin=here and last,
                    stories=stories if last else None,
                    watch_ttl=3 * self.interval,
                )
            self.watching = watching
        except _REDIS_DOWN as exc:
            self._keep(shares)
            if not self._warned:
                self._warned = True
                logger.warning("Delivery records cannot reach Redis (%s); kept until it is back", exc)
            return
        if self._warned:
            self._warned = False
            logger.info("Delivery records reach Redis again")
        if here:
            await self._check_admins()
            await self.publish(now)

    def _keep(self, shares: list[Share]) -> None:
        if len(shares) > _MAX_BACKLOG:
            logger.warning("Dropped the delivery records of %d events (Redis down too long)",
                           len(shares) - _MAX_BACKLOG)
            shares = shares[-_MAX_BACKLOG:]
        self._backlog = shares

    async def publish(self, now: float | None = None, *, welcome: str | None = None) -> None:
        """Send the admin room the values that changed (only if tabs here are in it),
        and the tab `welcome` (a socket id: one that just joined, whose hydrate had
        none of them) all of them."""
        here = self.admins_here()
        if self.app is None or not (here or welcome):
            return
        now = time.time() if now is None else now
        async with self._publishing:
            try:
                values = await self.values(now)
            except _REDIS_DOWN as exc:
                logger.warning("The admin room cannot read Redis (%s); not refreshed", exc)
                return
            changed = {k: v for k, v in values.items() if rooms.current(ADMIN_ROOM, k) != v}
            if here and changed:
                await rooms.publish(AdminRoom, ADMIN_ROOM, **changed)
            if welcome is not None:
                # (Also to a paused tab, which is not in the room: its first view.)
                # Every socket is also a room of its own, named by its id.
                await reflex_compat.emit_to_room(self.app, welcome, rooms.frame(AdminRoom, **values))

    async def values(self, now: float) -> dict[str, Any]:
        minutes = await self.records.minutes(now=now, count=EVENT_MINUTES)
        recent = await self.records.recent(RECENT_EVENTS)
        readers = await self.records.story_readers(now=now, fresh=3 * self.interval)
        busiest = sorted(readers.items(), key=lambda item: (-item[1], item[0]))[: TOP_STORIES * 2]
        titles = await asyncio.to_thread(_published_titles, [i for i, _ in busiest])
        top = [(i, titles[i], n) for i, n in busiest if i in titles][:TOP_STORIES]
        return chart_values(minutes, top, recent, now)

    async def _check_admins(self) -> None:
        """Tabs whose user lost the admin role leave the room (and the page)."""
        watchers.prune()
        tabs = watchers.items()
        if not tabs:
            return
        admins = await asyncio.to_thread(_admin_ids, {w.user_id for _, w in tabs})
        for token, watcher in tabs:
            if watcher.user_id not in admins:
                await self.refuse(token)

    async def refuse(self, token: str) -> None:
        """Take a tab out of the admin room and the watchers; its page redirects."""
        watcher = watchers.forget(token)
        if watcher is None or self.app is None:
            return
        logger.info("Tab %s is no longer an admin's; removed from the admin room", token[:8])
        hub = self._hub()
        if hub is not None:
            await hub.enter(token, watcher.sid, [])  # out of the page's rooms, as if it left
        else:
            await reflex_compat.leave_room(self.app, watcher.sid, ADMIN_ROOM)
        try:
            await reflex_compat.run_in_tab(
                self.app, token, watcher.state_cls, lambda state: state._admin_refused()
            )
        except Exception as exc:  # noqa: BLE001 (the tab may be gone: it is out of the room anyway)
            logger.warning("Could not send tab %s away from /admin: %s", token[:8], exc)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except Exception:
                logger.exception("An analytics tick failed")


@cache
def _redis() -> aioredis.Redis:
    return aioredis.Redis.from_url(
        redis_url(), decode_responses=True, socket_connect_timeout=2, socket_timeout=5
    )


def records() -> DeliveryRecords:
    """The records on the app's Redis, as this process."""
    return DeliveryRecords(
        _redis(),
        prefix=f"{settings.stream_key}:analytics",
        ttl=settings.analytics_ttl_seconds,
        max_events=settings.analytics_max_events,
        proc=f"{socket.gethostname()}:{os.getpid()}",
    )


@contextlib.asynccontextmanager
async def lifespan(app: rx.App) -> AsyncIterator[None]:
    """Runs the process's analytics task (registered after the tab hub)."""
    service = AnalyticsService(app, records(), interval=settings.analytics_seconds)
    AnalyticsService._current = service
    task = asyncio.create_task(service.run(), name="fictures-analytics")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # What this process delivered since the last tick.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(service.tick(), timeout=2)
        AnalyticsService._current = None


__all__ = ["READERS_SLOT", "AnalyticsService", "lifespan", "records"]
