"""Real deliveries through a real Redis: SSE streams of the process's event
service observe the latency histogram, and the process's analytics tick turns
them into the event's record."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from fictures.analytics import service as analytics
from fictures.analytics.records import DeliveryRecords
from fictures.analytics.tally import tally
from fictures.api import sse
from fictures.events import service
from fictures.events.schema import PUBLIC_CHANNELS
from fictures.settings import settings
from tests.conftest import in_db, unsent_outbox_rows, wait_until
from tests.factories import make_story, make_user

ANONYMOUS = sse.StreamFilter(channels=frozenset(PUBLIC_CHANNELS), story_id=None, user_id=None)


@pytest.fixture
async def event_service(database: None) -> AsyncIterator[None]:
    async with service.lifespan():
        await wait_until(lambda: service.fanout().healthy, message="the fan-out")
        await wait_until(lambda: not unsent_outbox_rows(), message="the outbox to drain")
        yield


def _sse(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"client": "sse"}) or 0.0


async def _read(seen: list[int]) -> None:
    async for item in sse._stream(ANONYMOUS, None, "test-client"):
        raw = item if isinstance(item, bytes) else item.encode()
        # One chunk may carry several frames (the events queued behind the first).
        seen.extend(int(m) for m in re.findall(rb"(?:^|\n)id: (\d+)\r\n", raw))


async def test_sse_deliveries_are_observed_and_recorded(event_service):
    records = DeliveryRecords(
        analytics._redis(), prefix=f"{settings.stream_key}:analytics-deliveries",
        ttl=3600, max_events=100, proc="this",
    )
    task_service = analytics.AnalyticsService(None, records, interval=1)
    tally().take()  # earlier tests' deliveries are not this test's
    count_before, sum_before = _sse("fictures_delivery_latency_seconds_count"), _sse(
        "fictures_delivery_latency_seconds_sum"
    )
    seen: list[list[int]] = [[], []]
    readers = [asyncio.create_task(_read(ids)) for ids in seen]
    try:
        await wait_until(lambda: service.fanout().subscriber_count >= 2, message="two streams")
        started = time.time()
        story_ids = await in_db(lambda s: [make_story(s, make_user(s)).id for _ in range(3)])
        await wait_until(lambda: all(len(ids) == 3 for ids in seen), message="three events in both")
        elapsed = time.time() - started
    finally:
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # Six deliveries observed (3 events x 2 streams), each no slower than the test.
    assert _sse("fictures_delivery_latency_seconds_count") == count_before + 6
    total = _sse("fictures_delivery_latency_seconds_sum") - sum_before
    assert 0 < total <= 6 * elapsed

    await task_service.tick()
    event_ids = seen[0]
    for event_id in event_ids:
        record = await records.event(event_id)
        assert record is not None and record.channel == "story:published"
        assert record.readers == {"tab_broadcast": 0, "tab_handler": 0, "sse": 2}
        assert 0 < record.p50 <= record.p99 <= elapsed * 1.5
    assert len(story_ids) == 3


async def test_a_tick_while_redis_is_down_keeps_the_shares_for_the_next(embedded_redis, caplog):
    import redis.asyncio as aioredis

    from fictures.events.schema import StoryPublished

    caplog.set_level(logging.INFO, logger="fictures.analytics.service")
    server = embedded_redis()
    client = aioredis.Redis.from_url(server.url, decode_responses=True, socket_timeout=2)
    records = DeliveryRecords(client, prefix="outage", ttl=3600, max_events=100, proc="p")
    task_service = analytics.AnalyticsService(None, records, interval=1)
    tally().take()
    event = StoryPublished(id=77, story_id=1, title="T", author_id=1)
    tally().delivered(event, "sse", 4)
    port = server.port
    server.stop()
    try:
        await task_service.tick()  # warns once, keeps the share for the next tick
        await task_service.tick()
        assert caplog.text.count("Delivery records cannot reach Redis") == 1
        embedded_redis(port=port)
        await wait_until(lambda: _ping(client), timeout=10, message="Redis back")
        await task_service.tick()
        record = await records.event(77)
        assert record is not None and record.readers["sse"] == 4
        assert "Delivery records reach Redis again" in caplog.text
    finally:
        await client.aclose()


async def _ping(client) -> bool:
    try:
        return bool(await client.ping())
    except Exception:  # noqa: BLE001
        return False
