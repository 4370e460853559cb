"""fictures.ratelimit: rate limits and stream slots, on the real Redis.

Each limiter here has its own Redis connections, as each worker process has:
what they count together is what every worker and instance counts together.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest

from fictures.errors import TooManyRequests
from fictures.ratelimit import POST_PER_USER, Limiter, StreamSlots, connect
from fictures.settings import settings
from tests.conftest import wait_until


def _prefix() -> str:
    return f"{settings.stream_key}:limits"


@pytest.fixture
async def workers():
    """Two limiters on the session's Redis, like two worker processes."""
    clients = [connect(settings.redis_url) for _ in range(2)]
    yield [Limiter(client, prefix=_prefix()) for client in clients]
    for client in clients:
        await client.aclose()


async def _outcomes(limiters: list[Limiter], attempts: int, who: str) -> list[int | None]:
    """Hit POST_PER_USER for `who` `attempts` times at once, spread over the limiters;
    None for a pass, the Retry-After for a refusal."""

    async def attempt(i: int) -> int | None:
        try:
            await limiters[i % len(limiters)].hit(POST_PER_USER, who)
        except TooManyRequests as exc:
            return exc.retry_after
        return None

    return await asyncio.gather(*(attempt(i) for i in range(attempts)))


async def test_concurrent_hits_on_several_workers_pass_exactly_the_limit(workers, monkeypatch):
    monkeypatch.setattr(settings, "post_limit_per_user", "5/minute")
    outcomes = await _outcomes(workers, 100, uuid.uuid4().hex)
    assert outcomes.count(None) == 5
    retry_afters = [r for r in outcomes if r is not None]
    assert len(retry_afters) == 95
    # The oldest of the five leaves the one-minute window in a minute at most.
    assert all(50 <= r <= 60 for r in retry_afters), sorted(set(retry_afters))


async def test_refusal_detail_and_other_identifiers_unaffected(workers, monkeypatch):
    monkeypatch.setattr(settings, "post_limit_per_user", "2/hour")
    who, other = uuid.uuid4().hex, uuid.uuid4().hex
    limiter = workers[0]
    await limiter.hit(POST_PER_USER, who)
    await limiter.hit(POST_PER_USER, who)
    with pytest.raises(TooManyRequests) as refused:
        await limiter.hit(POST_PER_USER, who)
    assert refused.value.status_code == 429
    assert refused.value.detail.startswith("you are posting too often (limit 2 per hour); try again in ")
    assert 3500 <= refused.value.retry_after <= 3600
    await limiter.hit(POST_PER_USER, other)  # someone else is not limited


async def test_keys_live_under_the_session_prefix(workers, monkeypatch):
    monkeypatch.setattr(settings, "post_limit_per_user", "3/minute")
    who = uuid.uuid4().hex
    await workers[0].hit(POST_PER_USER, who)
    keys = [k.decode() async for k in workers[0].redis.scan_iter(match=f"*{who}*")]
    assert keys and all(k.startswith(f"{settings.stream_key}:limits:") for k in keys), keys


async def test_redis_down_fails_open_with_one_warning(embedded_redis, monkeypatch, caplog):
    monkeypatch.setattr(settings, "post_limit_per_user", "1/minute")
    server = embedded_redis()
    client = connect(server.url)
    limiter = Limiter(client, prefix=_prefix())
    who = uuid.uuid4().hex
    try:
        await limiter.hit(POST_PER_USER, who)
        with pytest.raises(TooManyRequests):
            await limiter.hit(POST_PER_USER, who)
        port = server.port
        server.stop()
        with caplog.at_level(logging.INFO, logger="fictures.ratelimit"):
            started = time.monotonic()
            for _ in range(3):
                await limiter.hit(POST_PER_USER, who)  # allowed: fail open
            assert time.monotonic() - started < 5
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
            assert "not enforced" in warnings[0].getMessage()

            embedded_redis(port=port)  # back, empty
            await limiter.hit(POST_PER_USER, who)
            with pytest.raises(TooManyRequests):
                await limiter.hit(POST_PER_USER, who)
            assert any("available again" in r.getMessage() for r in caplog.records)
    finally:
        await client.aclose()


# ---------------------------------------------------------------- stream slots


@pytest.fixture
async def slot_workers():
    made: list[StreamSlots] = []

    def make(**kwargs) -> StreamSlots:
        """Stream slots with a Redis client of their own, as each worker has."""
        slots = StreamSlots(connect(settings.redis_url), prefix=_prefix(), **kwargs)
        made.append(slots)
        return slots

    yield make
    for slots in made:
        slots.stop()
        await slots.redis.aclose()


def _address() -> str:
    return f"2001:db8::{uuid.uuid4().hex[:4]}"


async def test_sixty_concurrent_streams_on_two_workers_get_exactly_the_limit(slot_workers):
    workers = [slot_workers(), slot_workers()]
    address = _address()
    leases = await asyncio.gather(
        *(workers[i % 2].acquire(address, 7) for i in range(60))
    )
    held = [(i % 2, lease) for i, lease in enumerate(leases) if lease is not None]
    assert len(held) == 7
    # Full for this address, not for another.
    assert await workers[0].acquire(address, 7) is None
    assert await workers[1].acquire(_address(), 7) is not None
    # A stream that ends frees its slot for any worker.
    worker, lease = held[0]
    await workers[worker].release(lease)
    assert await workers[1 - worker].acquire(address, 7) is not None
    assert await workers[0].acquire(address, 7) is None


async def test_a_dead_workers_streams_expire(slot_workers):
    address = _address()
    dead = slot_workers(lease_seconds=1.0)
    assert await dead.acquire(address, 2) is not None
    assert await dead.acquire(address, 2) is not None
    alive = slot_workers()
    assert await alive.acquire(address, 2) is None
    # The process dies: nothing refreshes or releases its leases.
    dead.stop()

    async def slot_free() -> bool:
        lease = await alive.acquire(address, 2)
        return lease is not None

    await wait_until(slot_free, timeout=5, interval=0.1, message="the dead leases to expire")


async def test_leases_of_live_streams_are_refreshed(slot_workers):
    address = _address()
    slots = slot_workers(lease_seconds=0.6)
    lease = await slots.acquire(address, 1)
    assert lease is not None
    first_expiry = await slots.redis.zscore(lease.key, lease.id)

    async def past_first_expiry() -> bool:
        seconds, micros = await slots.redis.time()
        return seconds * 1000 + micros // 1000 > first_expiry + 100

    # Well past the first lease lifetime, the stream still holds its slot.
    await wait_until(past_first_expiry, timeout=5, message="the first expiry to pass")
    assert await slot_workers().acquire(address, 1) is None
    assert await slots.redis.zscore(lease.key, lease.id) > first_expiry
    await slots.release(lease)
    assert await slots.redis.zscore(lease.key, lease.id) is None
    assert slots._refresher is None  # nothing left to refresh: no task lingers


async def test_streams_opened_while_redis_is_down_are_counted_once_it_is_back(embedded_redis):
    server = embedded_redis()
    port = server.port
    slots = StreamSlots(connect(server.url), prefix=_prefix(), lease_seconds=0.6)
    address = _address()
    try:
        server.stop()
        # Fail open: both streams may open.
        leases = [await slots.acquire(address, 1), await slots.acquire(address, 1)]
        assert all(lease is not None for lease in leases)
        embedded_redis(port=port)  # back, and empty

        async def both_counted() -> bool:
            return await slots.redis.zcard(leases[0].key) == 2

        await wait_until(both_counted, message="the refresh to re-add the open streams' leases")
        assert await slots.acquire(address, 1) is None
    finally:
        slots.stop()
        await slots.redis.aclose()
