"""Who is reading: presence per room, kept in Redis, announced on the signals lane.

A story page shows "N reading now" and /community "N readers online": the open
tabs on that page across every worker and instance, with the names of the
logged-in readers (a user with several tabs counts once; anonymous tabs are
only counted). The rooms are the pages' live rooms (fictures.rooms): "story:<id>"
and "community".

Redis (keys under `<stream_key>:presence:`) holds, per room, a sorted set of
members scored by their expiry time:

- `u:<user id>:<username>:<process>`: a logged-in user's tabs in that room
  served by one process (however many);
- `a:<tab hash>`: one anonymous tab (a hash of its client token, never the token).

Each process tracks its own tabs (`TabHub.on_rooms_changed`), and a moment
later writes what changed, one script per room (a burst of joins costs one
write). Every heartbeat it pushes back the expiry of everything it holds, and
one process (a lock) sweeps every room for members nobody refreshed: a worker
that died leaves no ghosts. The count and names are recomputed in the same Lua
script that changed them, and when they changed the script PUBLISHes them on the
signals channel (fictures.signals, kind "presence"): announcements leave Redis
in the order the changes happened, and each carries a version (Redis time in
µs, increasing per room) so a summary read directly (after a resubscribe) is
never overwritten by an older announcement still in flight. Every process
applies an announcement to its room values: one frame per room to its local
tabs, nothing per tab; and to the SSE streams that asked for `presence`.

When a tab stops counting:
- it closes, navigates away or its websocket drops: at once (the TabHub);
- its connection went silent without closing (a dead network, a suspended
  laptop): Engine.IO pings every tab every `socket_ping_seconds`; a tab that
  leaves one unanswered for `PONG_GRACE` seconds stops counting at the next
  heartbeat (and counts again if it answers);
- its worker died: its members expire after `presence_ttl_seconds`, and the next
  sweep (every `presence_heartbeat_seconds`) removes and announces them.

Nothing here touches the database or the durable event stream. The scripts name
a room's keys from its name (the sweep walks every room), so they need one Redis
server, as the rest of the app does, not a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from fictures import metrics, reflex_compat, rooms, signals
from fictures.settings import settings

logger = logging.getLogger(__name__)

KIND = "presence"  # the signal
COMMUNITY = "community"  # the community page's room
STORY = "story"
TRACKED_KINDS = frozenset({STORY, COMMUNITY})
# A tab that leaves an Engine.IO ping unanswered this long is not counted.
PONG_GRACE = 4.0
# How long a flush waits for more changes to write together.
COALESCE_SECONDS = 0.1
# At most one frame per room and process per interval: a burst of joins (a
# thousand readers arriving at once) shows as a few frames of the latest count.
# The interval grows with the room (a frame costs ~50 µs per socket) up to a
# limit that keeps a join visible within 2 s.
FRAME_INTERVAL = 0.5
FRAME_INTERVAL_MAX = 1.5
SOCKETS_PER_FRAME_SECOND = 2000


def frame_interval(sockets: int) -> float:
    """Seconds between two presence frames to a room of `sockets` local sockets."""
    return min(FRAME_INTERVAL_MAX, max(FRAME_INTERVAL, sockets / SOCKETS_PER_FRAME_SECOND))
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_ROOM = re.compile(r"community|story:[0-9]{1,10}")

Identity = tuple[int, str] | None  # (user id, username) of a logged-in tab, None if anonymous


def story_room(story_id: int) -> str:
    return f"{STORY}:{story_id}"


def story_id_of(room: str) -> int | None:
    kind, _, rest = room.partition(":")
    return int(rest) if kind == STORY and rest.isdigit() else None


def tracked(room: str) -> bool:
    return room.partition(":")[0] in TRACKED_KINDS


@dataclass
class Readers:
    """What a room shows: how many read it (users once, anonymous tabs each),
    the logged-in readers' names (sorted, at most `presence_max_names`), and how
    many of the count are anonymous."""

    count: int = 0
    users: list[str] = field(default_factory=list)
    guests: int = 0

    def public(self) -> dict[str, Any]:
        """The API's shape."""
        return {"count": self.count, "users": list(self.users)}


# ---------------------------------------------------------------- Redis

# Shared by every script. ARGV[1..4]: key prefix, signals channel, names per
# summary, member lifetime (ms). A summary is the JSON fields
# `"count":N,"users":[...],"guests":G`; `announce` publishes it (as a signal) if
# it changed, and returns {published (0/1), summary, version}.
_LUA_COMMON = r"""
local prefix, channel = ARGV[1], ARGV[2]
local max_names, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local index = prefix .. ':rooms'

local function zkey(room) return prefix .. ':room:' .. room end
local function meta(room) return prefix .. ':meta:' .. room end

local function summarise(members, limit)
  local seen, names, guests = {}, {}, 0
  for _, m in ipairs(members) do
    if string.sub(m, 1, 2) == 'a:' then
      guests = guests + 1
    else
      local id, name = string.match(m, '^u:(%d+):(.*):[^:]*$')
      if id and not seen[id] then
        seen[id] = true
        names[#names + 1] = name
      end
    end
  end
  table.sort(names)
  local shown = {}
  for i = 1, math.min(#names, limit) do shown[i] = cjson.encode(names[i]) end
  return '"count":' .. (guests + #names) .. ',"users":[' .. table.concat(shown, ',')
    .. '],"guests":' .. guests, guests + #names
end

local function announce(room)
  local key = zkey(room)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
  local summary, count = summarise(redis.call('ZRANGE', key, 0, -1), max_names)
  local m = meta(room)
  local old = redis.call('HMGET', m, 's', 'v')
  if old[1] == summary then
    return {0, summary, old[2]}
  end
  local version = string.format('%.0f', math.max(tonumber(old[2] or '0') + 1, now_us))
  redis.call('HSET', m, 's', summary, 'v', version)
  if count == 0 then
    redis.call('SREM', index, room)
    redis.call('PEXPIRE', m, ttl * 6)
  else
    redis.call('SADD', index, room)
    redis.call('PERSIST', m)
  end
  redis.call('PUBLISH', channel, '{"kind":"presence","room":' .. cjson.encode(room) .. ','
    .. summary .. ',"v":' .. version .. '}')
  return {1, summary, version}
end
"""

# ARGV[5]: room; ARGV[6]: how many members to remove; then those, then members to add.
_UPDATE = _LUA_COMMON + r"""
local room = ARGV[5]
local key = zkey(room)
local removes = tonumber(ARGV[6])
for i = 7, 6 + removes do redis.call('ZREM', key, ARGV[i]) end
if #ARGV > 6 + removes then
  for i = 7 + removes, #ARGV do redis.call('ZADD', key, now_ms + ttl, ARGV[i]) end
  redis.call('PEXPIRE', key, ttl * 2)
end
return announce(room)
"""

# ARGV[5..]: groups of (room, n, n members): pushes back their expiry (re-adding
# any a Redis restart or an outage lost). Returns {room, announce(room)} per group.
_REFRESH = _LUA_COMMON + r"""
local results = {}
local i = 5
while i <= #ARGV do
  local room, n = ARGV[i], tonumber(ARGV[i + 1])
  local key = zkey(room)
  for j = i + 2, i + 1 + n do redis.call('ZADD', key, now_ms + ttl, ARGV[j]) end
  redis.call('PEXPIRE', key, ttl * 2)
  results[#results + 1] = {room, announce(room)}
  i = i + 2 + n
end
return results
"""

# ARGV[5]: the sweep lock's lifetime (ms). Announces every room that lost
# expired members; -1 if another process swept within the lock's lifetime.
_SWEEP = _LUA_COMMON + r"""
if not redis.call('SET', prefix .. ':sweep', '1', 'NX', 'PX', ARGV[5]) then
  return -1
end
local swept = 0
for _, room in ipairs(redis.call('SMEMBERS', index)) do
  if redis.call('ZCOUNT', zkey(room), '-inf', now_ms) > 0 or redis.call('EXISTS', zkey(room)) == 0 then
    swept = swept + announce(room)[1]
  end
end
return swept
"""

# ARGV[5]: room. Read only: {summary of the unexpired members, version}.
_READ = _LUA_COMMON + r"""
local room = ARGV[5]
local summary = summarise(redis.call('ZRANGEBYSCORE', zkey(room), '(' .. now_ms, '+inf'), max_names)
return {summary, redis.call('HGET', meta(room), 'v') or '0'}
"""


@dataclass(frozen=True)
class Summary:
    readers: Readers
    version: int
    published: bool = False


def _summary(raw: Any, version: Any, published: Any = 0) -> Summary:
    data = json.loads("{" + (raw.decode() if isinstance(raw, bytes) else raw) + "}")
    readers = Readers(count=int(data["count"]), users=list(data["users"]), guests=int(data["guests"]))
    return Summary(readers, int(version or 0), bool(published))


class PresenceStore:
    """The Redis side: members of each room, and the scripts that change and announce them."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        channel: str,
        ttl_seconds: float,
        max_names: int,
    ):
        self.redis = client
        self.prefix = prefix
        self.channel = channel
        self.ttl_ms = int(ttl_seconds * 1000)
        self.max_names = max_names
        self._update = client.register_script(_UPDATE)
        self._refresh = client.register_script(_REFRESH)
        self._sweep = client.register_script(_SWEEP)
        self._read = client.register_script(_READ)

    def _args(self, max_names: int | None = None) -> list[Any]:
        names = self.max_names if max_names is None else max_names
        return [self.prefix, self.channel, names, self.ttl_ms]

    async def update(self, room: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()) -> Summary:
        removes, adds = list(remove), list(add)
        published, raw, version = await self._update(
            args=[*self._args(), room, len(removes), *removes, *adds]
        )
        return _summary(raw, version, published)

    async def refresh(self, held: dict[str, Iterable[str]]) -> dict[str, Summary]:
        """Push back the expiry of `held` (room -> members); the rooms' summaries."""
        args = self._args()
        for room, members in held.items():
            listed = list(members)
            args += [room, len(listed), *listed]
        if len(args) == 4:
            return {}
        results = await self._refresh(args=args)
        return {
            (room.decode() if isinstance(room, bytes) else room): _summary(raw, version, published)
            for room, (published, raw, version) in results
        }

    async def sweep(self, lock_seconds: float) -> int:
        """Remove and announce expired members of every room (-1: another process just did)."""
        return int(await self._sweep(args=[*self._args(), int(lock_seconds * 1000)]))

    async def read(self, room: str, *, all_names: bool = False) -> Summary:
        raw, version = await self._read(args=[*self._args(1_000_000 if all_names else None), room])
        return _summary(raw, version)


def member_for(identity: Identity, token: str, process: str) -> str:
    """A tab's member: its user on this process (several tabs: one member), or the tab."""
    if identity is None:
        return "a:" + hashlib.blake2b(token.encode(), digest_size=8).hexdigest()
    user_id, username = identity
    return f"u:{user_id}:{username}:{process}"


def process_name() -> str:
    """This process, unique across hosts and restarts (no ':', which ends a member's name)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}".replace(":", "-")


# ---------------------------------------------------------------- one per process


class PresenceTracker:
    """This process's tabs in presence rooms, written to Redis; announcements
    applied to the local room values and streams."""

    def __init__(
        self,
        store: PresenceStore,
        *,
        identity: Callable[[str], Identity],
        find_silent: Callable[[set[str]], set[str]] = lambda tokens: set(),
        heartbeat_seconds: float | None = None,
        process: str | None = None,
    ):
        self.store = store
        self.identity = identity
        self.find_silent = find_silent  # which of these tabs stopped answering pings
        self.heartbeat_seconds = heartbeat_seconds or settings.presence_heartbeat_seconds
        self.process = process or process_name()
        self.local: dict[str, dict[str, str]] = {}  # room -> tab token -> member
        self.written: dict[str, frozenset[str]] = {}  # room -> members this process holds in Redis
        self.silent: set[str] = set()  # tabs that stopped answering pings
        self.versions: OrderedDict[str, int] = OrderedDict()  # room -> newest version applied
        self._dirty: set[str] = set()
        self._joined: set[str] = set()  # rooms a local tab entered since the last flush
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._redis_up = True
        self._frame_due: dict[str, float] = {}  # room -> when its next frame may go
        self._frame_later: dict[str, Readers] = {}  # room -> what its deferred frame shows
        self._frame_tasks: set[asyncio.Task] = set()

    # -- tabs (TabHub.on_rooms_changed) ----------------------------------------------

    async def rooms_changed(self, token: str, entered: frozenset[str], left: frozenset[str]) -> None:
        for room in left:
            tabs = self.local.get(room)
            if tabs is not None and tabs.pop(token, None) is not None:
                if not tabs:
                    del self.local[room]
                self._mark(room)
        for room in entered:
            if tracked(room):
                self.local.setdefault(room, {})[token] = member_for(self.identity(token), token, self.process)
                self._joined.add(room)
                self._mark(room)

    def _mark(self, room: str) -> None:
        self._dirty.add(room)
        self._wake.set()

    # -- writing ----------------------------------------------------------------------

    async def flush(self) -> None:
        """Write the rooms whose local members changed (one script each)."""
        async with self._lock:
            dirty, self._dirty = self._dirty, set()
            joined, self._joined = self._joined, set()
            for room in sorted(dirty):
                want = frozenset(m for token, m in self.local.get(room, {}).items() if token not in self.silent)
                have = self.written.get(room, frozenset())
                if want == have and room not in joined:
                    continue
                try:
                    summary = await self.store.update(room, add=want - have, remove=have - want)
                except _REDIS_DOWN as exc:
                    self._down(exc)
                    self._dirty.add(room)  # retried at the next heartbeat
                    if room in joined:
                        self._joined.add(room)
                    continue
                self._up()
                if want:
                    self.written[room] = want
                else:
                    self.written.pop(room, None)
                await self._apply(room, summary, joined=room in joined)

    async def heartbeat(self) -> None:
        """Drop silent tabs, write pending changes, refresh what this process holds, sweep."""
        tokens = {token for tabs in self.local.values() for token in tabs}
        silent = self.find_silent(tokens) & tokens
        for token in silent - self.silent:
            logger.info("Tab %s stopped answering pings; not counted as reading", token[:8])
        for token in (self.silent & tokens) - silent:
            logger.info("Tab %s answers pings again; counted as reading", token[:8])
        changed = silent ^ (self.silent & tokens)
        self.silent = silent
        if changed:
            for room, tabs in self.local.items():
                if not changed.isdisjoint(tabs):
                    self._mark(room)
        await self.flush()
        async with self._lock:
            held = dict(self.written)
            try:
                summaries = await self.store.refresh(held)
                swept = await self.store.sweep(self.heartbeat_seconds * 0.8)
            except _REDIS_DOWN as exc:
                self._down(exc)
                return
            self._up()
        for room, summary in summaries.items():
            await self._apply(room, summary)
        now = asyncio.get_running_loop().time()
        self._frame_due = {room: due for room, due in self._frame_due.items() if due > now}
        if swept > 0:
            logger.info("Presence sweep: expired readers removed from %d room(s)", swept)

    async def leave_all(self) -> None:
        """Remove everything this process holds (a clean shutdown: no wait for the TTL)."""
        async with self._lock:
            for room, members in list(self.written.items()):
                with contextlib.suppress(*_REDIS_DOWN):
                    await self.store.update(room, remove=members)
            self.written.clear()

    async def resync(self) -> None:
        """After the signal subscription (re)started: announcements sent meanwhile
        were lost, so read the summaries of the rooms shown here; and re-add what this
        process holds (a Redis restart lost it)."""
        for room in {*self.local, *self.written}:
            self._mark(room)
        for room in sorted({*self.local, COMMUNITY}):
            await self._apply(room, await self.store.read(room), joined=True)

    def _down(self, exc: BaseException) -> None:
        if self._redis_up:
            self._redis_up = False
            logger.warning("Presence cannot reach Redis (%s); counts are stale until it is back", exc)

    def _up(self) -> None:
        if not self._redis_up:
            self._redis_up = True
            logger.info("Presence reaches Redis again")

    # -- applying announcements -------------------------------------------------------

    async def on_signal(self, data: dict[str, Any]) -> None:
        """A `presence` signal (from any process, this one too)."""
        try:
            room = data["room"]
            readers = Readers(count=data["count"], users=data["users"], guests=data["guests"])
            version = data["v"]
            valid = (
                isinstance(room, str) and _ROOM.fullmatch(room) is not None
                and all(type(v) is int and v >= 0 for v in (readers.count, readers.guests, version))
                and isinstance(readers.users, list)
                and all(isinstance(u, str) and _NAME.fullmatch(u) for u in readers.users)
            )
        except (KeyError, TypeError):
            valid = False
        if not valid:
            logger.warning("Ignored a malformed presence signal: %.200s", data)
            return
        await self._apply(room, Summary(readers, version))

    async def _apply(self, room: str, summary: Summary, *, joined: bool = False) -> None:
        """Show `summary` unless a newer one was shown; a local join shows it to the
        room again even if it did not change (the new tab hydrated before joining)."""
        known = self.versions.get(room)
        newer = known is None or summary.version > known
        stored = rooms.current(room, "readers") is not None
        if not newer and (summary.version < known or (stored and not joined)):  # type: ignore[operator]
            return
        self.versions[room] = summary.version
        self.versions.move_to_end(room)
        while len(self.versions) > 10_000:
            self.versions.popitem(last=False)
        room_cls = rooms.room_class(room)
        if room_cls is not None and (room in self.local or room_cls.keep_without_tabs):
            rooms.store(room, readers=summary.readers)  # what a tab hydrating now reads
            await self._show(room, room_cls, summary.readers)
        if newer:
            metrics.PRESENCE_UPDATES.inc()
            _to_streams(room, summary.readers)

    async def _show(self, room: str, room_cls: type[rooms.Room], readers: Readers) -> None:
        """Send the room its readers: now, or (a frame went out less than
        FRAME_INTERVAL ago) in one frame at the end of the interval with the newest value."""
        if room in self._frame_later:
            self._frame_later[room] = readers  # the scheduled frame shows this one
            return
        now = asyncio.get_running_loop().time()
        due = self._frame_due.get(room, 0.0)
        if now >= due:
            sent = await self._send_frame(room, room_cls, readers)
            self._frame_due[room] = now + frame_interval(sent)
            return
        self._frame_later[room] = readers
        task = asyncio.create_task(self._show_later(room, room_cls, due - now))
        self._frame_tasks.add(task)
        task.add_done_callback(self._frame_tasks.discard)

    async def _show_later(self, room: str, room_cls: type[rooms.Room], delay: float) -> None:
        await asyncio.sleep(delay)
        readers = self._frame_later.pop(room, None)
        if readers is not None and (room in self.local or room_cls.keep_without_tabs):
            now = asyncio.get_running_loop().time()
            sent = await self._send_frame(room, room_cls, readers)
            self._frame_due[room] = now + frame_interval(sent)

    async def _send_frame(self, room: str, room_cls: type[rooms.Room], readers: Readers) -> int:
        sent = await rooms.publish(room_cls, room, readers=readers)
        if room in self.local:
            # Kept while a local tab is on the page, even a paused one (which
            # receives no frames; `publish` drops the values of a room no socket receives).
            rooms.store(room, readers=readers)
        return sent

    # -- running ----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await asyncio.gather(self._flusher(), self._beat())
        finally:
            for task in list(self._frame_tasks):
                task.cancel()

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(COALESCE_SECONDS)  # joins and leaves arriving together: one write
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                logger.exception("Writing presence failed")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self.heartbeat()
            except Exception:
                logger.exception("Presence heartbeat failed")


# ---------------------------------------------------------------- SSE streams

# Each stream that asked for `presence`: its queue and the room it follows (None: all).
_listeners: dict[asyncio.Queue[tuple[str, Readers]], str | None] = {}


def _to_streams(room: str, readers: Readers) -> None:
    for queue, only in _listeners.items():
        if only is None or only == room:
            with contextlib.suppress(asyncio.QueueFull):  # a stalled stream skips a count
                queue.put_nowait((room, readers))


@contextlib.asynccontextmanager
async def listen(room: str | None = None, maxsize: int = 256) -> AsyncIterator[asyncio.Queue[tuple[str, Readers]]]:
    """(room, Readers) for every presence change this process hears (of `room` only, if given)."""
    queue: asyncio.Queue[tuple[str, Readers]] = asyncio.Queue(maxsize)
    _listeners[queue] = room
    try:
        yield queue
    finally:
        _listeners.pop(queue, None)


# ---------------------------------------------------------------- the process's instances


@cache
def store() -> PresenceStore:
    hub = signals.hub()
    return PresenceStore(
        hub.redis,
        prefix=f"{settings.stream_key}:presence",
        channel=hub.channel,
        ttl_seconds=settings.presence_ttl_seconds,
        max_names=settings.presence_max_names,
    )


async def read(room: str, *, all_names: bool = True) -> Readers | None:
    """The room's readers now: every name, or as many as an announcement carries
    (None if Redis cannot be reached)."""
    try:
        return (await store().read(room, all_names=all_names)).readers
    except _REDIS_DOWN as exc:
        logger.warning("Presence read failed: %s", exc)
        return None


def _silent_tabs(app: Any, tokens: set[str]) -> set[str]:
    """The tabs whose socket is gone from this process, or left a ping unanswered too long."""
    return {
        token for token, unanswered in reflex_compat.unanswered_pings(app, tokens).items()
        if unanswered is None or unanswered >= PONG_GRACE
    }


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Tracks this process's tabs (registered on the app after the tab hub)."""
    # Imported here: fictures.live imports fictures.live_feed, which imports this module.
    from fictures.live import TabHub

    hub = TabHub.current()
    tracker = PresenceTracker(
        store(), identity=hub.user_of, find_silent=lambda tokens: _silent_tabs(app, tokens)
    )
    hub.on_rooms_changed(tracker.rooms_changed)
    signals.hub().on(KIND, tracker.on_signal)
    signals.hub().on_resync(tracker.resync)
    if signals.hub().healthy:
        # Subscribed before this tracker existed; if Redis is down, the next resync does it.
        with contextlib.suppress(*_REDIS_DOWN):
            await tracker.resync()
    task = asyncio.create_task(tracker.run(), name="fictures-presence")
    logger.info(
        "Presence started (heartbeat %ss, readers expire after %ss, pings every %ss)",
        tracker.heartbeat_seconds, settings.presence_ttl_seconds, settings.socket_ping_seconds,
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        signals.hub().off(KIND, tracker.on_signal)
        signals.hub().off_resync(tracker.resync)
        await tracker.leave_all()
