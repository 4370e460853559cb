"""Which users have a tab open right now, on any worker or instance (for Web Push).

A push is for a user with no open tab: one with a tab sees the notification
live in the bell (and, while the tab is hidden, as a system notification the
tab raises itself). So each process records, in Redis, a lease per logged-in
tab it serves: a sorted set per user (member: a hash of the tab's token, score:
expiry in Redis server time), refreshed while the tab lives and removed when
it closes or logs out. A process that dies without cleaning up has its leases
expire within `LEASE_SECONDS`, after which that user gets pushes again.

`enter` and `leave` only note the change (a page load never waits on Redis);
one task per process writes the changes at once and refreshes every lease
it holds a few times per lease lifetime. When Redis cannot be reached, nobody
counts as online: a push then goes out (a duplicate beats a lost notification).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from functools import cache

import redis.asyncio as aioredis
import redis.exceptions

from fictures.settings import redis_url, settings

logger = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
_UNAVAILABLE = (redis.exceptions.RedisError, OSError)

# KEYS[1]: the user's leases. ARGV: lease lifetime (ms), then members.
_REFRESH = """
local t = redis.call('TIME')
local expiry = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
    redis.call('ZADD', KEYS[1], expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return #ARGV - 1
"""

# KEYS[1]: the user's leases. Returns how many are still live.
_COUNT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


def _member(token: str) -> str:
    # Not the token itself: it is the key to the tab's state.
    return hashlib.sha256(token.encode()).hexdigest()[:24]


class OnlineUsers:
    def __init__(self, client: aioredis.Redis, *, prefix: str, lease_seconds: float = LEASE_SECONDS):
        self.redis = client
        self.prefix = prefix
        self.lease_ms = int(lease_seconds * 1000)
        self.refresh_every = lease_seconds / 3
        self._refresh = client.register_script(_REFRESH)
        self._count = client.register_script(_COUNT)
        self._held: dict[str, int] = {}  # token -> user id
        self._dirty: set[int] = set()  # users whose leases to write now
        self._gone: list[tuple[int, str]] = []  # (user id, token) to remove
        self._wake = asyncio.Event()
        self._warned = False

    def _key(self, user_id: int) -> str:
        return f"{self.prefix}:{user_id}"

    def enter(self, token: str, user_id: int) -> None:
        """The tab `token` is logged in as `user_id` (a previous user's lease is dropped)."""
        previous = self._held.get(token)
        if previous == user_id:
            return
        if previous is not None:
            self._gone.append((previous, token))
        self._held[token] = user_id
        self._dirty.add(user_id)
        self._wake.set()

    def leave(self, token: str) -> None:
        """The tab closed or logged out."""
        user_id = self._held.pop(token, None)
        if user_id is not None:
            self._gone.append((user_id, token))
            self._wake.set()

    async def tabs(self, user_id: int) -> int:
        """How many live tabs `user_id` has on every process (0 if Redis is unavailable)."""
        return int(await self._call(self._count(keys=[self._key(user_id)])) or 0)

    async def flush(self, users: set[int] | None = None) -> None:
        """Write pending removals, then the leases of `users` (None: every user held)."""
        gone, self._gone = self._gone, []
        for user_id, token in gone:
            if self._held.get(token) != user_id:
                await self._call(self.redis.zrem(self._key(user_id), _member(token)))
        by_user: dict[int, list[str]] = {}
        for token, user_id in list(self._held.items()):
            if users is None or user_id in users:
                by_user.setdefault(user_id, []).append(_member(token))
        for user_id, members in by_user.items():
            await self._call(self._refresh(keys=[self._key(user_id)], args=[self.lease_ms, *members]))

    async def _call(self, awaitable):
        try:
            result = await awaitable
        except _UNAVAILABLE as exc:
            if not self._warned:
                self._warned = True
                logger.warning("Open tabs cannot be recorded in Redis (%s); pushes go to everyone", exc)
            return None
        self._warned = False
        return result

    async def run(self) -> None:
        """Write changes as they come, and refresh every lease regularly."""
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + self.refresh_every
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_refresh - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            if loop.time() >= next_refresh:
                self._dirty.clear()
                await self.flush()
                next_refresh = loop.time() + self.refresh_every
            else:
                dirty, self._dirty = self._dirty, set()
                await self.flush(dirty)

    async def close(self) -> None:
        """Drop this process's leases (it is shutting down)."""
        for token in list(self._held):
            self.leave(token)
        await self.flush(set())


@cache
def tracker() -> OnlineUsers:
    client = aioredis.Redis.from_url(
        redis_url(), decode_responses=True, socket_connect_timeout=1, socket_timeout=2
    )
    return OnlineUsers(client, prefix=f"{settings.stream_key}:online")
