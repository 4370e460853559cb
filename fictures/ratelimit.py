"""Abuse limits, counted in Redis so they hold across every worker and instance.

Two kinds:

- **Rate limits** (`Rule`, `Limiter.hit`): logins per account and per client
  address, registrations per address, community posts and push subscriptions
  saved per user. The `limits`
  library's *moving window* strategy on its async Redis storage: each key is a
  list of the last N hit times, checked and appended to by one Lua script, so
  concurrent requests on any number of workers are counted exactly (no
  check-then-act race), and a window never lets 2N through across a boundary
  the way a fixed window does. The refusal carries the time until the oldest
  hit in the window leaves it (`Retry-After`). Every attempt counts, failed or
  not: counting only failures would need a check before the password is
  verified and a count after it, and concurrent guesses would all pass the
  check; it also keeps the number of argon2 verifications a client can ask for
  bounded.
- **Concurrency slots** (`StreamSlots`): open event streams per client address.
  Each stream holds a lease in a sorted set per address (member: lease id,
  score: expiry in Redis server time). One Lua script drops expired leases,
  counts and adds, atomically; each process refreshes its own leases while their
  streams live and removes a lease when its stream ends. The leases of a worker
  that died expire instead of counting forever.

Keys live under ``<stream_key>:limits`` (``fictures:events:limits:…``), so test
sessions and apps sharing a Redis do not count each other.

**When Redis is unavailable, limits fail open**: the request goes ahead, a
warning is logged once per outage (and again when Redis is back). Locking every
user out of logging in because a cache is down would turn a Redis outage into
a full outage; the cost is that nothing is throttled meanwhile. A stream opened
during an outage still gets its lease once Redis answers again (the refresh
re-adds it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TypeVar

import anyio
import limits
import limits.errors
import redis.asyncio as aioredis
import redis.exceptions
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from fictures import metrics
from fictures.errors import TooManyRequests
from fictures.settings import redis_url, settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

_UNAVAILABLE = (redis.exceptions.RedisError, limits.errors.StorageError, OSError)


@dataclass(frozen=True)
class Rule:
    name: str  # part of the Redis key
    setting: str  # the Settings field holding the limit ("10/minute")
    refusal: str  # the start of the 429's detail


LOGIN_PER_ACCOUNT = Rule(
    "login-account", "login_limit_per_account", "too many login attempts for this account"
)
LOGIN_PER_ADDRESS = Rule(
    "login-address", "login_limit_per_address", "too many login attempts from your address"
)
REGISTER_PER_ADDRESS = Rule(
    "register-address", "register_limit_per_address", "too many new accounts from your address"
)
POST_PER_USER = Rule("post-user", "post_limit_per_user", "you are posting too often")
READ_PER_ADDRESS = Rule(
    "read-address", "read_limit_per_address", "too many new anonymous reads from your address"
)
PUSH_SUBSCRIBE_PER_USER = Rule(
    "push-subscribe-user", "push_subscribe_limit_per_user", "too many push subscriptions saved"
)


@lru_cache(maxsize=64)
def _item(spec: str) -> limits.RateLimitItem:
    return limits.parse(spec)


class _Availability:
    """Logs a Redis outage once when it starts and once when it ends."""

    def __init__(self, what: str):
        self.what = what
        self.up = True

    def failed(self, exc: BaseException) -> None:
        if self.up:
            self.up = False
            logger.warning(
                "Redis unavailable for %s (%s: %s): not enforced until it is back",
                self.what, type(exc).__name__, exc,
            )

    def ok(self) -> None:
        if not self.up:
            self.up = True
            logger.info("Redis available again: %s enforced", self.what)


class Limiter:
    """Rate limits on one Redis; `hit` raises `TooManyRequests` over a limit."""

    def __init__(self, client: aioredis.Redis, *, prefix: str):
        self.redis = client
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=prefix,
            connection_pool=self.redis.connection_pool,
        )
        self.strategy = MovingWindowRateLimiter(storage)
        self._availability = _Availability("rate limits")
        # Which keys were reported over their limit, so an attack logs one line
        # per window and not one per refused request.
        self._reported: OrderedDict[tuple[str, str], float] = OrderedDict()

    async def hit(self, rule: Rule, identifier: str) -> None:
        """Count one attempt of `identifier` against `rule`; refuse it over the limit."""
        item = _item(getattr(settings, rule.setting))
        try:
            if await self.strategy.hit(item, rule.name, identifier):
                self._availability.ok()
                return
            stats = await self.strategy.get_window_stats(item, rule.name, identifier)
        except _UNAVAILABLE as exc:
            self._availability.failed(exc)
            return
        self._availability.ok()
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        metrics.RATE_LIMITED.labels(rule.name).inc()
        self._report(rule, identifier, item, retry_after)
        raise TooManyRequests(
            f"{rule.refusal} (limit {item.amount} per {_per(item)}); "
            f"try again in {retry_after} s",
            retry_after=retry_after,
        )

    def _report(self, rule: Rule, identifier: str, item: limits.RateLimitItem, wait: int) -> None:
        key, now = (rule.name, identifier), time.monotonic()
        if self._reported.get(key, 0.0) > now:
            return
        self._reported[key] = now + wait
        self._reported.move_to_end(key)
        while len(self._reported) > 1024:
            self._reported.popitem(last=False)
        logger.info("Rate limit %s (%s) reached by %r", rule.name, item, identifier)


def _per(item: limits.RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


POOL_SIZE = 16
CLIENT_NAME = "fictures-limits"


def connect(url: str) -> aioredis.Redis:
    """The limits' Redis client: at most POOL_SIZE connections (a burst waits for one
    rather than opening hundreds), named in CLIENT LIST. Short timeouts and one
    immediate retry (a connection Redis dropped): a stalled Redis delays a request
    by a few seconds at most before the limits fail open."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=2,
        socket_connect_timeout=1,
        socket_timeout=2,
        retry=Retry(NoBackoff(), 1),
        client_name=CLIENT_NAME,
    )
    return aioredis.Redis(connection_pool=pool)


# ---------------------------------------------------------------- stream slots

# KEYS[1]: the address's leases. ARGV: lease id, limit, lease lifetime (ms).
# Returns 1 if the lease was taken, 0 if the address already holds `limit`.
_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# KEYS[1]: the address's leases. ARGV: lease lifetime (ms), then lease ids.
# Re-adds leases an outage or a Redis restart lost: their streams are open.
_REFRESH = """
local t = redis.call('TIME')
local expiry = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
    redis.call('ZADD', KEYS[1], expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return #ARGV - 1
"""


@dataclass(frozen=True)
class Lease:
    key: str
    id: str


class StreamSlots:
    """At most N open streams per client address, across every process on one Redis."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, lease_seconds: float = 60.0):
        self.redis = client
        self.prefix = prefix
        self.lease_ms = int(lease_seconds * 1000)
        self.refresh_every = lease_seconds / 3
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._refresh = self.redis.register_script(_REFRESH)
        self._held: dict[str, Lease] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._availability = _Availability("the event stream limit")

    def stop(self) -> None:
        """Stop refreshing (the process is going away); its leases then expire."""
        if self._refresher is not None:
            self._refresher.cancel()

    async def acquire(self, address: str, limit: int) -> Lease | None:
        """A lease for one more stream from `address`, or None if it holds `limit` already."""
        lease = Lease(f"{self.prefix}:streams:{address}", uuid.uuid4().hex)
        taken = await self._redis(self._acquire(keys=[lease.key], args=[lease.id, limit, self.lease_ms]))
        if taken is not None and not taken:
            return None
        self._held[lease.id] = lease
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._keep_alive(), name="fictures-stream-leases")
        return lease

    async def release(self, lease: Lease) -> None:
        """Give the slot back (the stream ended). Safe to call while being cancelled."""
        self._held.pop(lease.id, None)
        if not self._held and self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        with anyio.CancelScope(shield=True):
            await self._redis(self.redis.zrem(lease.key, lease.id))

    async def _redis(self, call: Awaitable[T]) -> T | None:
        try:
            result = await call
        except _UNAVAILABLE as exc:
            self._availability.failed(exc)
            return None
        self._availability.ok()
        return result

    async def _keep_alive(self) -> None:
        """Push the expiry of every lease this process holds, while it holds any."""
        while self._held:
            await asyncio.sleep(self.refresh_every)
            by_key: dict[str, list[str]] = {}
            for lease in list(self._held.values()):
                by_key.setdefault(lease.key, []).append(lease.id)
            for key, ids in by_key.items():
                await self._redis(self._refresh(keys=[key], args=[self.lease_ms, *ids]))
                # A stream that ended meanwhile had its lease removed before this
                # refresh put it back: take it out again, or its slot stays taken.
                if gone := [i for i in ids if i not in self._held]:
                    await self._redis(self.redis.zrem(key, *gone))


# ---------------------------------------------------------------- the process's instances


def _prefix() -> str:
    return f"{settings.stream_key}:limits"


@cache
def _client() -> aioredis.Redis:
    return connect(redis_url())


@cache
def limiter() -> Limiter:
    return Limiter(_client(), prefix=_prefix())


@cache
def stream_slots() -> StreamSlots:
    return StreamSlots(_client(), prefix=_prefix())


async def check_login(address: str, username: str) -> None:
    """Before a password is checked: per client address, then per account
    (case-insensitive, like the login). A refusal from one account's limit
    touches no other account's."""
    await limiter().hit(LOGIN_PER_ADDRESS, address)
    await limiter().hit(LOGIN_PER_ACCOUNT, username.lower())


async def check_registration(address: str) -> None:
    await limiter().hit(REGISTER_PER_ADDRESS, address)


async def check_post(user_id: int) -> None:
    await limiter().hit(POST_PER_USER, str(user_id))


async def check_anonymous_read(address: str) -> None:
    """Before a browser that is not logged in is counted as a new reader of a story."""
    await limiter().hit(READ_PER_ADDRESS, address)


async def check_push_subscribe(user_id: int) -> None:
    await limiter().hit(PUSH_SUBSCRIBE_PER_USER, str(user_id))
