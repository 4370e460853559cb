"""Delivery records in a real Redis: shares of several processes sum, records
expire with their window, and their number stays bounded."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from fictures.analytics import tally as tally_module
from fictures.analytics.records import READERS_SLOT, DeliveryRecords
from fictures.analytics.tally import BOUNDS, Tally, bucket, quantile
from fictures.events.schema import DraftChanged, PostCreated, StoryPublished
from fictures.settings import settings


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    # Under the session's stream key (removed at the end on a shared server).
    return f"{settings.stream_key}:analytics-test-{uuid.uuid4().hex[:8]}"


def process(redis: aioredis.Redis, prefix: str, name: str, **kwargs) -> tuple[Tally, DeliveryRecords]:
    """One process's tally and its view of the records."""
    options = {"ttl": 86_400, "max_events": 1000, **kwargs}
    return Tally(), DeliveryRecords(redis, prefix=prefix, proc=name, **options)


def story(event_id: int, at: float) -> StoryPublished:
    return StoryPublished(
        id=event_id, timestamp=datetime.fromtimestamp(at, UTC), story_id=event_id, title="T",
        author_id=1,
    )


async def test_two_processes_shares_sum_into_one_record(redis, prefix):
    now = time.time()
    a_tally, a = process(redis, prefix, "a")
    b_tally, b = process(redis, prefix, "b")
    event = story(101, now - 1)
    # Process a: a broadcast to 98 tabs at 10 ms, one SSE stream at 12 ms.
    a_tally.delivered(event, "tab_broadcast", 98, now=event.timestamp.timestamp() + 0.010)
    a_tally.delivered(event, "sse", now=event.timestamp.timestamp() + 0.012)
    # Process b: one story page (handler) at 2 s; its SSE later, in a second flush.
    b_tally.delivered(event, "tab_handler", now=event.timestamp.timestamp() + 2.0)
    await a.flush(a_tally.take(), now=now)
    await b.flush(b_tally.take(), now=now)
    b_tally.delivered(event, "sse", 0)  # recorded, no reader: adds nothing
    b_tally.delivered(event, "sse", now=event.timestamp.timestamp() + 0.011)
    await b.flush(b_tally.take(), now=now)

    record = await a.event(101)
    assert record is not None and record == await b.event(101)
    assert record.channel == "story:published"
    assert record.timestamp == pytest.approx(now - 1, abs=0.001)
    assert record.readers == {"tab_broadcast": 98, "tab_handler": 1, "sse": 2}
    assert record.total == 101
    # Exact bucket counts summed over both processes: 100 of 101 within 12 ms.
    assert sum(record.buckets.values()) == 101
    assert record.buckets[bucket(2.0)] == 1
    assert BOUNDS[bucket(0.010) - 1] < record.p50 <= BOUNDS[bucket(0.010)]
    assert 0.010 < record.p99 <= BOUNDS[bucket(0.012)]

    # The minute counts the event once, however many processes added to it.
    (minute,) = await a.minutes(now=event.timestamp.timestamp(), count=1)
    assert minute.events == {"story:published": 1}
    assert minute.deliveries == {"tab_broadcast": 98, "tab_handler": 1, "sse": 2}
    assert minute.p99 == record.p99
    assert [r.id for r in await a.recent(5)] == [101]


async def test_readers_of_every_process_are_summed_per_slot_and_stories_while_watching(redis, prefix):
    now = (time.time() // 60) * 60 + 7  # early in a minute, away from its end
    _, a = process(redis, prefix, "a")
    _, b = process(redis, prefix, "b")
    assert await a.flush([], now=now, readers=(3, 1)) is False
    assert await b.flush([], now=now, readers=(2, 4), stories={7: 2}) is False
    (minute,) = await a.minutes(now=now, count=1)
    slot = int(now // READERS_SLOT) * READERS_SLOT
    assert minute.readers == {slot: (5, 5)}
    assert minute.events == {}

    # An admin watches on process a: every process learns it with its next flush.
    assert await a.flush([], now=now, admin=True, stories={7: 1, 9: 3}, watch_ttl=30)
    assert await b.flush([], now=now, stories={7: 2}, watch_ttl=30)
    assert await a.story_readers(now=now, fresh=6) == {7: 3, 9: 3}
    # A process that stopped reporting drops out (and is removed).
    assert await a.story_readers(now=now + 10, fresh=6) == {}
    assert await redis.hlen(f"{prefix}:stories") == 0


async def test_records_expire_with_their_window(redis, prefix):
    now = time.time()
    tally, records = process(redis, prefix, "a", ttl=60)
    for event_id, age in ((1, 61), (2, 58), (3, 1)):
        tally.delivered(story(event_id, now - age), "sse", now=now)
    await records.flush(tally.take(), now=now)
    assert await records.event(1) is None  # older than the window: never stored
    assert [r.id for r in await records.recent(10)] == [3, 2]
    # Each record expires 60 s after its event; the minute keys a minute after theirs.
    assert 1 <= await redis.ttl(f"{prefix}:event:2") <= 3
    assert 58 <= await redis.ttl(f"{prefix}:event:3") <= 60
    minute_start = int((now - 1) // 60) * 60
    assert minute_start + 120 - now - 1 <= await redis.ttl(f"{prefix}:minute:{minute_start}") <= 120

    # Three seconds later the next flush trims the index; the record's key expires.
    await records.flush([], now=now + 3)
    await _until_gone(redis, f"{prefix}:event:2")
    assert [r.id for r in await records.recent(10)] == [3]


async def _until_gone(redis: aioredis.Redis, key: str) -> None:
    from tests.conftest import wait_until

    async def gone() -> bool:
        return not await redis.exists(key)

    await wait_until(gone, timeout=5, message=f"{key} to expire")


async def test_records_are_bounded_and_a_late_share_does_not_bring_one_back(redis, prefix):
    now = time.time()
    a_tally, a = process(redis, prefix, "a", max_events=5)
    b_tally, b = process(redis, prefix, "b", max_events=5)
    events = [story(i, now - 100 + i) for i in range(1, 9)]
    b_tally.delivered(events[0], "sse", now=now)  # a straggler's share of event 1, flushed late
    for event in events:
        a_tally.delivered(event, "tab_broadcast", 3, now=now)
    await a.flush(a_tally.take(), now=now)
    assert await a.count() == 5
    assert [r.id for r in await a.recent(10)] == [8, 7, 6, 5, 4]
    for dropped in (1, 2, 3):
        assert not await redis.exists(f"{prefix}:event:{dropped}")
    await b.flush(b_tally.take(), now=now)
    assert await a.event(1) is None
    assert await a.count() == 5


async def test_private_events_are_never_recorded():
    tally = Tally()
    draft = DraftChanged(id=5, user_id=1, story_id=2, action="created", title="Mine")
    tally.delivered(draft, "sse")
    assert tally.take() == []


def test_quantiles_interpolate_inside_their_bucket_and_name_the_slowest_bound():
    assert quantile([], 0.5) is None
    assert quantile({3: 0}, 0.5) is None
    i = bucket(0.004)
    low, high = BOUNDS[i - 1], BOUNDS[i]
    assert quantile({i: 10}, 0.5) == pytest.approx(low + (high - low) / 2)
    assert quantile({i: 99, bucket(1.2): 1}, 0.99) == pytest.approx(high)
    assert quantile({i: 98, bucket(1.2): 2}, 0.99) > 1.0
    assert quantile({len(BOUNDS): 1}, 0.5) == BOUNDS[-1]
    # Bucket edges: a latency equal to a bound is in that bound's bucket.
    assert bucket(BOUNDS[5]) == 5 and bucket(-0.5) == 0 and bucket(1e9) == len(BOUNDS)


def test_the_process_tally_is_what_prometheus_reads():
    from prometheus_client import REGISTRY

    def sample(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = sample("fictures_delivery_latency_seconds_count", {"client": "tab_handler"})
    slow = sample("fictures_delivery_latency_seconds_bucket", {"client": "tab_handler", "le": "0.5"})
    counted = sample("fictures_events_delivered_total", {"channel": "post:created", "client": "tab"})
    event = PostCreated(id=10**9, story_id=1, post_id=1, author_id=1, title="T", type="review")
    tally_module.tally().delivered(event, "tab_handler", 2, now=event.timestamp.timestamp() + 0.3)
    # Pending (not yet flushed) deliveries are in the scrape already.
    assert sample("fictures_delivery_latency_seconds_count", {"client": "tab_handler"}) == before + 2
    assert sample("fictures_delivery_latency_seconds_bucket", {"client": "tab_handler", "le": "0.5"}) == slow + 2
    assert sample("fictures_events_delivered_total", {"channel": "post:created", "client": "tab"}) == counted + 2
    tally_module.tally().take()
    assert sample("fictures_delivery_latency_seconds_count", {"client": "tab_handler"}) == before + 2
