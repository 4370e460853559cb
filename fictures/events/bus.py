"""The Redis side of events: send (stream + PUBLISH, atomically), read history, subscribe.

Sending runs one Lua script so that the id, the stream entry and the PUBLISH
happen as one step: stream order is publish order, and a retried send (same
dedupe key) never produces a second event.

Why the id `send` returns is always the id this very event got, so that the
relay may record it and mark its row sent:

- The dedupe key is the outbox row's `event_key` (a uuid4, unique across
  databases), never the row number: a new, restored or second database reuses
  row numbers, and Redis then "remembered" events it had never seen. The key
  lives under the stream it was sent to, so a second deployment on the same
  Redis with another stream key never finds it.
- The key is written by the same script that assigned the id, appended the
  entry and published: if it exists, all of that happened.
- A remembered id counts only if the sequence has reached it. Were the counter
  lost or reset while the key survived (keys deleted by hand, eviction), the
  sequence would hand that id out again to another event, and readers, who
  skip ids they have seen, would never see one of the two. Such an event is
  sent again, under a new id.
- Redis lost its data: the keys went with the counter, so the event is sent
  again; the relay's floor keeps new ids above every id recorded or seen.
- The stream was trimmed (MAXLEN, XTRIM): counter and key are untouched and
  the id is still this event's own; readers from before it get a reset.
- A key is forgotten after `DEDUPE_TTL` (24 h): a row retried later than that
  (its relay sent it but could not record it for a day) goes out twice, under
  a new id. A duplicate, never a loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from fictures.events.schema import ALL_CHANNELS

logger = logging.getLogger(__name__)

DEDUPE_TTL = 86_400

# KEYS: 1 sequence, 2 stream, 3 dedupe key
# ARGV: 1 channel, 2 JSON body without id (an object), 3 maxlen, 4 id floor, 5 dedupe ttl
_SEND = """
local floor = tonumber(ARGV[4])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < floor then
  redis.call('SET', KEYS[1], floor)
  cur = floor
end
local prev = tonumber(redis.call('GET', KEYS[3]) or '0')
if prev > 0 and prev <= cur then return prev end
local id = redis.call('INCR', KEYS[1])
local msg = '{"id":' .. id .. ',' .. string.sub(ARGV[2], 2)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0', 'channel', ARGV[1], 'data', msg)
redis.call('PUBLISH', ARGV[1], msg)
redis.call('SET', KEYS[3], id, 'EX', ARGV[5])
return id
"""


@dataclass(frozen=True)
class StoredEvent:
    id: int
    channel: str
    data: str


def _entry(entry: tuple[str, dict[str, str]]) -> StoredEvent:
    entry_id, fields = entry
    return StoredEvent(int(entry_id.split("-", 1)[0]), fields["channel"], fields["data"])


class EventBus:
    def __init__(self, url: str, *, stream_key: str, maxlen: int):
        self.url = url
        self.stream_key = stream_key
        self.seq_key = f"{stream_key}:seq"
        self.maxlen = maxlen
        self.redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=2, socket_timeout=5
        )
        self._pubsub_client = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_keepalive=True,
            health_check_interval=5,
        )
        self._send = self.redis.register_script(_SEND)

    async def close(self) -> None:
        await self.redis.aclose()
        await self._pubsub_client.aclose()

    async def send(self, channel: str, body: str, *, dedupe_key: str, floor: int = 0) -> int:
        """Assign the next id, append to the stream and publish; returns the id.
        Sending the same `dedupe_key` again returns the id it got the first time
        without sending anything (see the module doc)."""
        return int(
            await self._send(
                keys=[self.seq_key, self.stream_key, f"{self.stream_key}:sent:{dedupe_key}"],
                args=[channel, body, self.maxlen, floor, DEDUPE_TTL],
            )
        )

    async def head(self) -> int:
        """The id of the newest event sent so far (0 if none)."""
        return int(await self.redis.get(self.seq_key) or 0)

    async def read_after(self, last_id: int, *, limit: int = 1000) -> list[StoredEvent]:
        entries = await self.redis.xrange(
            self.stream_key, min=f"({last_id}-0", max="+", count=limit
        )
        return [_entry(e) for e in entries]

    async def read_last(self, count: int) -> list[StoredEvent]:
        """The newest `count` stored events, oldest first."""
        entries = await self.redis.xrevrange(self.stream_key, max="+", min="-", count=count)
        return [_entry(e) for e in reversed(entries)]

    async def covers(self, last_id: int) -> bool:
        """Whether every event after `last_id` is still in the retained history."""
        head = await self.head()
        if last_id > head:
            return False  # an id from before a history reset
        if last_id == head:
            return True
        first = await self.redis.xrange(self.stream_key, min="-", max="+", count=1)
        return bool(first) and _entry(first[0]).id <= last_id + 1

    def pubsub(self) -> aioredis.client.PubSub:
        """A subscription on its own connection: no read timeout (it idles between
        events), keep-alive, and a PING every few seconds so a dead server is noticed."""
        return self._pubsub_client.pubsub(ignore_subscribe_messages=True)

    @staticmethod
    def channels() -> tuple[str, ...]:
        return ALL_CHANNELS
