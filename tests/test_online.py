"""fictures.online: who has a tab open, counted in Redis across processes."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from fictures.online import OnlineUsers
from fictures.settings import settings
from tests.conftest import wait_until


def _tracker(client: aioredis.Redis, **kwargs) -> OnlineUsers:
    return OnlineUsers(client, prefix=f"{settings.stream_key}:online-test-{uuid.uuid4().hex[:6]}", **kwargs)


async def test_tabs_are_counted_per_user_across_processes():
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        first = _tracker(client)
        second = OnlineUsers(client, prefix=first.prefix)  # another worker, the same Redis
        first.enter("tab-a", 1)
        first.enter("tab-b", 1)
        second.enter("tab-c", 1)
        second.enter("tab-d", 2)
        await first.flush()
        await second.flush()
        assert (await first.tabs(1), await first.tabs(2), await first.tabs(3)) == (3, 1, 0)

        first.enter("tab-a", 2)  # logged in as someone else
        second.leave("tab-c")  # closed
        second.leave("never-seen")
        await first.flush()
        await second.flush()
        assert (await second.tabs(1), await second.tabs(2)) == (1, 2)

        await first.close()  # a process shutting down drops its leases
        assert (await second.tabs(1), await second.tabs(2)) == (0, 1)
    finally:
        await client.aclose()


async def test_a_dead_process_s_leases_expire():
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        dead = _tracker(client, lease_seconds=0.3)
        dead.enter("tab", 7)
        await dead.flush()
        assert await dead.tabs(7) == 1
        # Nobody refreshes them any more.
        await wait_until(lambda: _zero(dead, 7), timeout=5, message="the lease to expire")
    finally:
        await client.aclose()


async def _zero(tracker: OnlineUsers, user_id: int) -> bool:
    return await tracker.tabs(user_id) == 0


async def test_redis_down_counts_nobody_online():
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        tracker = _tracker(client)
        tracker.enter("tab", 1)
        await tracker.flush()  # logged once as a warning, never raised
        assert await tracker.tabs(1) == 0
    finally:
        await client.aclose()
