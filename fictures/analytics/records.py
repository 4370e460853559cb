"""Delivery records in Redis: every process adds its share, readers see the sum.

Keys, under `<stream_key>:analytics`:

- `event:<id>`, a hash per event: `c` channel, `t` timestamp, `n:<kind>`
  readers reached per kind, `b:<i>` deliveries per latency bucket (all kinds),
  expiring 24 h (`analytics_ttl_seconds`) after the event.
- `events`, the index of the records (sorted by timestamp), trimmed to that
  window and to `analytics_max_events`; a dropped record's hash goes with it,
  and a share arriving later for an event older than the newest one dropped
  is ignored (so no partial record comes back).
- `minute:<epoch minute>`, a hash per minute for the charts: `e:<channel>`
  events (counted once, by whichever process creates the record), `n:<kind>`
  and `b:<i>` as above summed over the minute's events, and `r:<slot>:<proc>`
  each process's readers ("tabs,sse") sampled every `READERS_SLOT` seconds.
- `watching` (exists while an admin watches /admin somewhere) and `stories`
  (per process: readers per story room, written only while watching); both
  expire a few intervals after the last admin leaves.

A process's flush is one Lua script (one round trip every
`analytics_seconds`), so a share is added whole or not at all. Counts are
added with HINCRBY: two processes' shares of one event sum exactly, and so do
the bucket counts its p50/p99 come from. The script builds key names from the
prefix it is given, which a single Redis server (as the rest of the app uses)
allows; it would need hash tags to run on Redis Cluster.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from fictures.analytics.tally import KINDS, Share, quantile

# Readers are sampled into slots of this many seconds.
READERS_SLOT = 5

# ARGV: 1 key prefix, 2 JSON payload (see `DeliveryRecords.flush`). Returns 1
# while an admin is watching (on any process), else 0.
_FLUSH = """
local p = ARGV[1]
local d = cjson.decode(ARGV[2])
local now, ttl, max = tonumber(d.now), tonumber(d.ttl), tonumber(d.max)
local index = p .. ':events'
local floor = tonumber(redis.call('GET', index .. ':floor') or '0')
for _, e in ipairs(d.events) do
  local t = tonumber(e.t)
  if t + ttl > now and t > floor then
    local key = p .. ':event:' .. e.id
    local minute_start = math.floor(t / 60) * 60
    local minute = p .. ':minute:' .. minute_start
    if redis.call('HSETNX', key, 'c', e.c) == 1 then
      redis.call('HSET', key, 't', e.t)
      redis.call('ZADD', index, t, e.id)
      redis.call('HINCRBY', minute, 'e:' .. e.c, 1)
    end
    for name, n in pairs(e.f) do
      redis.call('HINCRBY', key, name, n)
      redis.call('HINCRBY', minute, name, n)
    end
    redis.call('EXPIREAT', key, math.ceil(t + ttl))
    redis.call('EXPIREAT', minute, minute_start + 60 + ttl)
  end
end
if d.readers then
  local minute_start = math.floor(now / 60) * 60
  local minute = p .. ':minute:' .. minute_start
  redis.call('HSET', minute, 'r:' .. d.slot .. ':' .. d.proc, d.readers)
  redis.call('EXPIREAT', minute, minute_start + 60 + ttl)
end
redis.call('ZREMRANGEBYSCORE', index, '-inf', now - ttl)
local extra = redis.call('ZCARD', index) - max
if extra > 0 then
  local dropped = redis.call('ZRANGE', index, 0, extra - 1, 'WITHSCORES')
  for i = 1, #dropped, 2 do
    redis.call('DEL', p .. ':event:' .. dropped[i])
  end
  redis.call('ZREMRANGEBYRANK', index, 0, extra - 1)
  redis.call('SET', index .. ':floor', dropped[#dropped], 'EX', ttl)
end
if redis.call('EXISTS', index) == 1 then
  redis.call('EXPIRE', index, ttl)
end
local watch_ttl = tonumber(d.watch_ttl)
if d.admin then
  redis.call('SET', p .. ':watching', '1', 'EX', watch_ttl)
end
if d.stories then
  redis.call('HSET', p .. ':stories', d.proc, d.stories)
  redis.call('EXPIRE', p .. ':stories', watch_ttl)
end
return redis.call('EXISTS', p .. ':watching')
"""


@dataclass(frozen=True)
class EventRecord:
    """One event's deliveries, summed over every process."""

    id: int
    channel: str
    timestamp: float
    readers: dict[str, int]
    buckets: dict[int, int]

    @property
    def p50(self) -> float | None:
        return quantile(self.buckets, 0.5)

    @property
    def p99(self) -> float | None:
        return quantile(self.buckets, 0.99)

    @property
    def total(self) -> int:
        return sum(self.readers.values())


@dataclass
class Minute:
    """One minute of the charts, summed over every process."""

    start: int
    events: dict[str, int] = field(default_factory=dict)  # channel -> events
    deliveries: dict[str, int] = field(default_factory=dict)  # kind -> deliveries
    buckets: dict[int, int] = field(default_factory=dict)
    # slot start -> (tabs, sse), summed over the processes that sampled it
    readers: dict[int, tuple[int, int]] = field(default_factory=dict)

    @property
    def p50(self) -> float | None:
        return quantile(self.buckets, 0.5)

    @property
    def p99(self) -> float | None:
        return quantile(self.buckets, 0.99)


def _fields(share: Share) -> dict[str, int]:
    fields = {f"n:{kind}": n for kind, n in zip(KINDS, share.counts, strict=True) if n}
    fields.update({f"b:{i}": n for i, n in share.merged_buckets().items()})
    return fields


def _counts(raw: dict[str, str], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: int(v) for k, v in raw.items() if k.startswith(prefix)}


class DeliveryRecords:
    def __init__(
        self, redis: aioredis.Redis, *, prefix: str, ttl: int, max_events: int, proc: str
    ):
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self.max_events = max_events
        self.proc = proc
        self._flush = redis.register_script(_FLUSH)

    def _key(self, *parts: object) -> str:
        return ":".join((self.prefix, *map(str, parts)))

    async def flush(
        self,
        shares: Sequence[Share],
        *,
        now: float,
        readers: tuple[int, int] | None = None,
        admin: bool = False,
        stories: dict[int, int] | None = None,
        watch_ttl: float = 10,
    ) -> bool:
        """Add this process's shares (and its readers sample, its story readers,
        its "an admin watches here") in one step; True while an admin watches."""
        payload: dict[str, object] = {
            "now": now,
            "ttl": self.ttl,
            "max": self.max_events,
            "proc": self.proc,
            "events": [
                {"id": s.id, "c": s.channel, "t": f"{s.ts:.3f}", "f": _fields(s)} for s in shares
            ],
            "admin": admin,
            "watch_ttl": max(1, math.ceil(watch_ttl)),
        }
        # Left out rather than null (a JSON null is true in Lua).
        if readers is not None:
            payload["readers"] = f"{readers[0]},{readers[1]}"
            payload["slot"] = int(now // READERS_SLOT) * READERS_SLOT
        if stories is not None:
            payload["stories"] = json.dumps({"at": now, "s": stories})
        return bool(await self._flush(args=[self.prefix, json.dumps(payload)]))

    # ------------------------------------------------------------------ reading

    async def event(self, event_id: int) -> EventRecord | None:
        raw = await self.redis.hgetall(self._key("event", event_id))
        return self._record(event_id, raw)

    async def recent(self, count: int) -> list[EventRecord]:
        """The newest `count` records, newest first."""
        ids = await self.redis.zrevrange(self._key("events"), 0, count - 1)
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in ids:
                pipe.hgetall(self._key("event", event_id))
            raws = await pipe.execute()
        return [
            record for event_id, raw in zip(ids, raws, strict=True)
            if (record := self._record(int(event_id), raw)) is not None
        ]

    async def count(self) -> int:
        return int(await self.redis.zcard(self._key("events")))

    @staticmethod
    def _record(event_id: int, raw: dict[str, str]) -> EventRecord | None:
        if "c" not in raw:
            return None
        readers = _counts(raw, "n:")
        return EventRecord(
            id=event_id,
            channel=raw["c"],
            timestamp=float(raw.get("t", 0)),
            readers={kind: readers.get(kind, 0) for kind in KINDS},
            buckets={int(i): n for i, n in _counts(raw, "b:").items()},
        )

    async def minutes(self, *, now: float, count: int) -> list[Minute]:
        """The last `count` minutes up to `now`, oldest first."""
        last = int(now // 60) * 60
        starts = [last - 60 * i for i in range(count - 1, -1, -1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for start in starts:
                pipe.hgetall(self._key("minute", start))
            raws = await pipe.execute()
        minutes = []
        for start, raw in zip(starts, raws, strict=True):
            readers: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])
            for name, value in raw.items():
                if not name.startswith("r:"):
                    continue
                slot, _, _proc = name[2:].partition(":")
                tabs, _, sse = value.partition(",")
                readers[int(slot)][0] += int(tabs)
                readers[int(slot)][1] += int(sse or 0)
            minutes.append(Minute(
                start=start,
                events=_counts(raw, "e:"),
                deliveries=_counts(raw, "n:"),
                buckets={int(i): n for i, n in _counts(raw, "b:").items()},
                readers={slot: (tabs, sse) for slot, (tabs, sse) in sorted(readers.items())},
            ))
        return minutes

    async def watching(self) -> bool:
        return bool(await self.redis.exists(self._key("watching")))

    async def story_readers(self, *, now: float, fresh: float) -> dict[int, int]:
        """Readers per story, summed over the processes that reported within `fresh` s."""
        raw = await self.redis.hgetall(self._key("stories"))
        total: defaultdict[int, int] = defaultdict(int)
        stale = []
        for proc, value in raw.items():
            try:
                report = json.loads(value)
                if float(report["at"]) < now - fresh:
                    stale.append(proc)
                    continue
                for story_id, n in report["s"].items():
                    total[int(story_id)] += int(n)
            except (ValueError, KeyError, TypeError, AttributeError):
                stale.append(proc)
        if stale:
            await self.redis.hdel(self._key("stories"), *stale)  # a process that stopped
        return dict(total)
