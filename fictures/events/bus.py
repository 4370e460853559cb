"""The Redis side of events: send (stream + PUBLISH, atomically), read history, subscribe.

Two sequences, each with its own counter and Redis Stream: the public one
(`<stream_key>`, `<stream_key>:seq`) and the private one (`private:draft`,
`<stream_key>:private`, `<stream_key>:private:seq`). Drafts draw no public
ids, so a gap in the public ids says nothing about anyone's drafts. Each
private entry also records `after`: the public sequence's value when it was
sent, which is how `replay` puts the two back in the order they were sent.

Sending runs one Lua script so that the id, the stream entry and the PUBLISH
happen as one step: stream order is publish order, and a retried send (same
dedupe key) never produces a second event.

Why the id `send` returns is always the id this very event got, so that the
relay may record it and mark its row sent:

- The dedupe key is the outbox row's `event_key` (a uuid4, unique across
  databases), never the row number: a new, restored or second database reuses
  row numbers, and Redis then "remembered" events it had never seen. The key
  lives under the stream it was sent to, so a second deployment on the same
  Redis with another stream key, or the other sequence, never finds it.
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
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis

from fictures.events.schema import ALL_CHANNELS, is_private_channel

logger = logging.getLogger(__name__)

DEDUPE_TTL = 86_400

# KEYS: 1 sequence, 2 stream, 3 dedupe key, 4 (private events only) the public sequence
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
if KEYS[4] then
  local after = redis.call('GET', KEYS[4]) or '0'
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0',
             'channel', ARGV[1], 'data', msg, 'after', after)
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0', 'channel', ARGV[1], 'data', msg)
end
redis.call('PUBLISH', ARGV[1], msg)
redis.call('SET', KEYS[3], id, 'EX', ARGV[5])
return id
"""


@dataclass(frozen=True)
class StoredEvent:
    id: int
    channel: str
    data: str
    private: bool = False
    # Private entries: the public sequence's value when this one was sent.
    after: int = 0


def _entry(entry: tuple[str, dict[str, str]], private: bool) -> StoredEvent:
    entry_id, fields = entry
    return StoredEvent(
        int(entry_id.split("-", 1)[0]),
        fields["channel"],
        fields["data"],
        private,
        int(fields.get("after", 0)),
    )


class EventBus:
    def __init__(self, url: str, *, stream_key: str, maxlen: int):
        self.url = url
        self.stream_key = stream_key
        self.seq_key = f"{stream_key}:seq"
        self.private_stream_key = f"{stream_key}:private"
        self.private_seq_key = f"{self.private_stream_key}:seq"
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

    def keys(self, *, private: bool = False) -> tuple[str, str]:
        """(stream, sequence) of the public or the private sequence."""
        if private:
            return self.private_stream_key, self.private_seq_key
        return self.stream_key, self.seq_key

    async def send(self, channel: str, body: str, *, dedupe_key: str, floor: int = 0) -> int:
        """Assign the next id of the channel's sequence, append to its stream and
        publish; returns the id. Sending the same `dedupe_key` again returns the id
        it got the first time without sending anything (see the module doc)."""
        private = is_private_channel(channel)
        stream, seq = self.keys(private=private)
        keys = [seq, stream, f"{stream}:sent:{dedupe_key}"]
        if private:
            keys.append(self.seq_key)
        return int(await self._send(keys=keys, args=[channel, body, self.maxlen, floor, DEDUPE_TTL]))

    async def head(self, *, private: bool = False) -> int:
        """The id of the newest event sent so far in the sequence (0 if none)."""
        return int(await self.redis.get(self.keys(private=private)[1]) or 0)

    async def read_after(
        self, last_id: int, *, private: bool = False, limit: int = 1000
    ) -> list[StoredEvent]:
        stream, _ = self.keys(private=private)
        entries = await self.redis.xrange(stream, min=f"({last_id}-0", max="+", count=limit)
        return [_entry(e, private) for e in entries]

    async def read_last(self, count: int) -> list[StoredEvent]:
        """The newest `count` stored public events, oldest first."""
        entries = await self.redis.xrevrange(self.stream_key, max="+", min="-", count=count)
        return [_entry(e, False) for e in reversed(entries)]

    async def covers(self, last_id: int, *, private: bool = False) -> bool:
        """Whether every event of the sequence after `last_id` is still in its history."""
        head = await self.head(private=private)
        if last_id > head:
            return False  # an id from before a history reset
        if last_id == head:
            return True
        stream, _ = self.keys(private=private)
        first = await self.redis.xrange(stream, min="-", max="+", count=1)
        return bool(first) and _entry(first[0], private).id <= last_id + 1

    async def replay(
        self, public_after: int | None, private_after: int | None, *, batch: int = 1000
    ) -> AsyncIterator[StoredEvent]:
        """The stored events after the given ids (None: not that sequence), both
        sequences merged back into the order they were sent in."""
        cursor = {False: public_after, True: private_after}
        pending: dict[bool, deque[StoredEvent]] = {False: deque(), True: deque()}
        more = {private: after is not None for private, after in cursor.items()}
        while True:
            for private in (False, True):
                while more[private] and not pending[private]:
                    got = await self.read_after(cursor[private], private=private, limit=batch)
                    if got:
                        cursor[private] = got[-1].id
                    more[private] = len(got) == batch
                    # Entries of the other sequence in this stream were written before
                    # there were two (one shared sequence): they would poison its ids.
                    pending[private].extend(
                        e for e in got if is_private_channel(e.channel) == private
                    )
            public, private_ = pending[False], pending[True]
            if private_ and (not public or private_[0].after < public[0].id):
                yield private_.popleft()
            elif public:
                yield public.popleft()
            elif not (more[False] or more[True]):
                return

    def pubsub(self) -> aioredis.client.PubSub:
        """A subscription on its own connection: no read timeout (it idles between
        events), keep-alive, and a PING every few seconds so a dead server is noticed."""
        return self._pubsub_client.pubsub(ignore_subscribe_messages=True)

    @staticmethod
    def channels() -> tuple[str, ...]:
        return ALL_CHANNELS
