"""Who is writing a post: "ada is writing a post…" on a story page, for a few seconds.

Ephemeral from end to end: nothing here touches the database or the durable
event stream.

1. The typer's browser sends `StoryState.post_typing` from the post form's
   inputs, throttled by Reflex in the browser to one every
   `typing_throttle_seconds` (2 s).
2. The server drops whatever comes faster (`admit`: a Redis `SET NX PX` per user
   and story, with half a second of slack for network jitter), then sends ONE
   `typing` signal (fictures.signals: a Redis PUBLISH every process hears).
3. Every process keeps, per story room, who typed in the last
   `typing_hold_seconds` (5 s) and publishes the room's `typers` value
   (fictures.rooms) when that list changes: one frame per room to its local
   tabs, nothing per tab. A typer who keeps typing changes nothing (no frame);
   starting, stopping (`stop`: the post was submitted, or the typer's tab left
   the story) and expiring each cost one frame per room.
4. Each browser leaves its own user out of the line (see
   fictures.components.presence.typing_line).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from fictures import metrics, rooms, signals
from fictures.live import TabHub
from fictures.settings import settings

logger = logging.getLogger(__name__)

KIND = "typing"  # the signal
# The server lets a report through this much sooner than the browser's throttle
# allows, so network jitter never drops an honest one.
JITTER_SLACK = 0.5
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_ROOM = re.compile(r"story:[0-9]{1,10}")

Send = Callable[..., Awaitable[bool]]


class TypingTracker:
    """One per process: admits typing reports from its tabs, and shows every
    process's typers in its local story rooms."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        send: Send,
        hold_seconds: float | None = None,
        min_interval_seconds: float | None = None,
    ):
        self.redis = client
        self.prefix = prefix
        self.send = send
        self.hold = hold_seconds or settings.typing_hold_seconds
        interval = min_interval_seconds or max(0.1, settings.typing_throttle_seconds - JITTER_SLACK)
        self.min_interval_ms = int(interval * 1000)
        # room -> username -> when the line expires (loop time), for every process's typers.
        self.typers: dict[str, dict[str, float]] = {}
        # Expiries in order: (deadline, room, username); stale entries are skipped.
        self._deadlines: list[tuple[float, str, str]] = []
        # tab token -> {(room, user id, username)} it typed in: stopped when the tab leaves.
        self._typing_tabs: dict[str, set[tuple[str, int, str]]] = {}
        self._wake = asyncio.Event()

    def _key(self, room: str, user_id: int) -> str:
        return f"{self.prefix}:{room}:{user_id}"

    # -- the typer's side (its tab's process) -------------------------------------------

    async def admit(self, room: str, user_id: int) -> bool:
        """Whether a report from `user_id` in `room` may go out now (at most one
        per interval, across every worker and instance). Fails closed: with Redis
        down no signal could be sent anyway."""
        try:
            ok = await self.redis.set(self._key(room, user_id), "1", nx=True, px=self.min_interval_ms)
        except _REDIS_DOWN:
            ok = False
        metrics.TYPING_SIGNALS.labels("sent" if ok else "dropped").inc()
        return bool(ok)

    async def typed(self, *, room: str, user_id: int, username: str, token: str) -> None:
        """Announce that `username` types in `room` (after `admit`)."""
        self._typing_tabs.setdefault(token, set()).add((room, user_id, username))
        await self.send(KIND, room=room, user=username)

    async def stopped(self, *, room: str, user_id: int, username: str) -> None:
        """The typer submitted their post (or left): the line goes at once, and a
        new report is admitted right away."""
        for token, typed in list(self._typing_tabs.items()):
            typed.discard((room, user_id, username))
            if not typed:
                del self._typing_tabs[token]
        with contextlib.suppress(*_REDIS_DOWN):
            await self.redis.delete(self._key(room, user_id))
        await self.send(KIND, room=room, user=username, stop=True)

    async def rooms_changed(self, token: str, entered: frozenset[str], left: frozenset[str]) -> None:
        """TabHub listener: a typer's tab that leaves the story stops its line."""
        typed = self._typing_tabs.get(token)
        if not typed or not left:
            return
        for room, user_id, username in [t for t in typed if t[0] in left]:
            await self.stopped(room=room, user_id=user_id, username=username)

    # -- every process: showing typers ------------------------------------------------

    async def on_signal(self, data: dict[str, Any]) -> None:
        room, user, stop = data.get("room"), data.get("user"), data.get("stop", False)
        if not (
            isinstance(room, str) and _ROOM.fullmatch(room)
            and isinstance(user, str) and _NAME.fullmatch(user)
            and isinstance(stop, bool)
        ):
            logger.warning("Ignored a malformed typing signal: %.200s", data)
            return
        typers = self.typers.setdefault(room, {})
        known = user in typers
        if stop:
            typers.pop(user, None)
        else:
            deadline = asyncio.get_running_loop().time() + self.hold
            typers[user] = deadline
            heapq.heappush(self._deadlines, (deadline, room, user))
            self._wake.set()
        if not typers:
            del self.typers[room]
        if known == stop:  # someone started, or someone typing stopped
            await self._publish(room)

    async def _publish(self, room: str) -> None:
        room_cls = rooms.room_class(room)
        if room_cls is not None:
            await rooms.publish(room_cls, room, typers=sorted(self.typers.get(room, ())))

    async def expire(self) -> None:
        """Drop the typers whose line ran out; publish the rooms that changed."""
        now = asyncio.get_running_loop().time()
        changed = set()
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, room, user = heapq.heappop(self._deadlines)
            typers = self.typers.get(room)
            if typers is not None and typers.get(user) == deadline:
                del typers[user]
                if not typers:
                    del self.typers[room]
                changed.add(room)
        for room in sorted(changed):
            await self._publish(room)

    async def run(self) -> None:
        while True:
            self._wake.clear()
            timeout = None
            if self._deadlines:
                timeout = max(0.0, self._deadlines[0][0] - asyncio.get_running_loop().time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            try:
                await self.expire()
            except Exception:
                logger.exception("Expiring typing lines failed")


# ---------------------------------------------------------------- the process's instance


@cache
def tracker() -> TypingTracker:
    hub = signals.hub()
    return TypingTracker(hub.redis, prefix=f"{settings.stream_key}:typing", send=hub.send)


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Shows typers in this process's story rooms (registered after the tab hub)."""
    typing = tracker()
    TabHub.current().on_rooms_changed(typing.rooms_changed)
    signals.hub().on(KIND, typing.on_signal)
    task = asyncio.create_task(typing.run(), name="fictures-typing")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        signals.hub().off(KIND, typing.on_signal)
