"""fictures.events.bus against the real Redis: ids, the stream, dedupe, floors.

Each test uses a stream key of its own, so counts are exact.
"""

import json
import uuid

import pytest

from fictures.events.bus import EventBus
from fictures.events.schema import DraftChanged, StoryDeleted, StoryPublished
from fictures.settings import settings


@pytest.fixture
async def own_bus():
    the_bus = EventBus(
        settings.redis_url,
        stream_key=f"{settings.stream_key}:bus-{uuid.uuid4().hex[:8]}",
        maxlen=settings.stream_maxlen,
    )
    yield the_bus
    await the_bus.redis.delete(
        the_bus.stream_key, the_bus.seq_key, the_bus.private_stream_key, the_bus.private_seq_key
    )
    await the_bus.close()


def _body(story_id: int) -> str:
    return StoryDeleted(story_id=story_id).body_without_id()


def _draft(story_id: int) -> str:
    return DraftChanged(user_id=1, story_id=story_id, action="updated", title="D").body_without_id()


async def test_ids_strictly_increase_and_match_the_stream(own_bus):
    assert await own_bus.head() == 0
    ids = [
        await own_bus.send("story:deleted", _body(n), dedupe_key=uuid.uuid4().hex)
        for n in range(1, 6)
    ]
    assert ids == [1, 2, 3, 4, 5]
    assert await own_bus.head() == 5
    stored = await own_bus.read_after(0)
    assert [e.id for e in stored] == ids
    for event_id, entry in zip(ids, stored, strict=True):
        data = json.loads(entry.data)
        assert entry.channel == "story:deleted"
        assert data["id"] == event_id
        assert data["storyId"] == event_id  # in send order
    assert [e.id for e in await own_bus.read_after(3)] == [4, 5]


async def test_retried_send_returns_the_same_id_without_a_second_entry(own_bus, listen):
    async with listen("story:deleted", on_bus=own_bus) as events:
        first = await own_bus.send("story:deleted", _body(7), dedupe_key="outbox:42")
        again = await own_bus.send("story:deleted", _body(7), dedupe_key="outbox:42")
        other = await own_bus.send("story:deleted", _body(8), dedupe_key="outbox:43")
        await events.next("story:deleted", lambda e: e["id"] == other)
    assert again == first
    assert other == first + 1
    assert await own_bus.redis.xlen(own_bus.stream_key) == 2
    assert [r.id for r in events.received] == [first, other]  # published once each


async def test_floor_lifts_the_sequence(own_bus):
    assert await own_bus.send("story:deleted", _body(1), dedupe_key="a") == 1
    assert await own_bus.send("story:deleted", _body(2), dedupe_key="b", floor=100) == 101
    # A lower floor never lowers it.
    assert await own_bus.send("story:deleted", _body(3), dedupe_key="c", floor=5) == 102


async def test_published_message_is_the_stream_entry(own_bus, listen):
    body = StoryPublished(story_id=3, title="T", author_id=4, genre=None).body_without_id()
    async with listen("story:published", on_bus=own_bus) as events:
        event_id = await own_bus.send("story:published", body, dedupe_key="x")
        received = await events.next("story:published", lambda e: e["id"] == event_id)
    [stored] = await own_bus.read_after(event_id - 1)
    assert json.loads(stored.data) == received
    assert received == {"id": event_id, **json.loads(body)}


async def test_covers_tells_whether_history_still_has_what_came_after(own_bus):
    small = EventBus(settings.redis_url, stream_key=own_bus.stream_key, maxlen=1)
    try:
        assert await small.covers(0)  # nothing sent yet
        for n in range(1, 251):
            await small.send("story:deleted", _body(n), dedupe_key=f"k{n}")
        assert await small.covers(250)
        assert not await small.covers(251)  # an id from before a reset
        # MAXLEN ~ trims in whole nodes: the oldest entries are gone.
        first = (await small.redis.xrange(small.stream_key, count=1))[0][0]
        oldest = int(first.split("-")[0])
        assert oldest > 1
        assert await small.covers(oldest - 1)
        assert not await small.covers(0)
    finally:
        await small.close()


async def test_a_remembered_id_counts_only_if_the_sequence_has_reached_it(own_bus, listen):
    """The counter and the stream are gone (deleted by hand, evicted) but the dedupe
    key survived: returning its id would publish nothing, and hand the same id to
    the next event, which every reader would then skip as already seen."""
    async with listen("story:deleted", on_bus=own_bus) as events:
        first = await own_bus.send("story:deleted", _body(1), dedupe_key="kept")
        await events.next("story:deleted", lambda e: e["id"] == first)  # recorded before
        await own_bus.redis.delete(own_bus.stream_key, own_bus.seq_key)
        again = await own_bus.send("story:deleted", _body(1), dedupe_key="kept")
        other = await own_bus.send("story:deleted", _body(2), dedupe_key="new")
        await events.next("story:deleted", lambda e: e["id"] == other and e["storyId"] == 2)
    assert first == again == 1  # sent again: the first id of the new history
    assert other == 2
    assert [(r.id, r.data["storyId"]) for r in events.received] == [(1, 1), (1, 1), (2, 2)]
    assert [e.id for e in await own_bus.read_after(0)] == [1, 2]


async def test_a_trimmed_stream_keeps_a_sent_event_sent(own_bus, listen):
    async with listen("story:deleted", on_bus=own_bus) as events:
        first = await own_bus.send("story:deleted", _body(1), dedupe_key="trimmed")
        await events.next("story:deleted", lambda e: e["id"] == first)  # recorded before
        await own_bus.redis.xtrim(own_bus.stream_key, maxlen=0)
        assert await own_bus.send("story:deleted", _body(1), dedupe_key="trimmed") == first
        other = await own_bus.send("story:deleted", _body(2), dedupe_key="later")
        await events.next("story:deleted", lambda e: e["id"] == other)
    assert other == first + 1
    assert [r.id for r in events.received] == [first, other]  # no second publish


async def test_private_events_have_a_sequence_and_a_stream_of_their_own(own_bus, listen):
    sent = []
    async with listen("story:deleted", "private:draft", on_bus=own_bus) as events:
        for n, channel in enumerate(
            ["story:deleted", "private:draft", "private:draft", "story:deleted",
             "private:draft", "story:deleted"], start=1,
        ):
            body = _draft(n) if channel == "private:draft" else _body(n)
            sent.append((channel, await own_bus.send(channel, body, dedupe_key=f"k{n}")))
        await events.next("story:deleted", lambda e: e["storyId"] == 6)
    # Public ids have no gap where a draft changed; private ones count on their own.
    assert sent == [
        ("story:deleted", 1), ("private:draft", 1), ("private:draft", 2),
        ("story:deleted", 2), ("private:draft", 3), ("story:deleted", 3),
    ]
    assert (await own_bus.head(), await own_bus.head(private=True)) == (3, 3)
    public = await own_bus.read_after(0)
    private = await own_bus.read_after(0, private=True)
    assert [(e.channel, e.id) for e in public] == [("story:deleted", n) for n in (1, 2, 3)]
    assert [(e.channel, e.id, e.private) for e in private] == [
        ("private:draft", n, True) for n in (1, 2, 3)
    ]
    # Each private entry remembers where the public sequence stood when it was sent.
    assert [e.after for e in private] == [1, 1, 2]
    assert [(r.channel, r.id) for r in events.received] == sent
    assert await own_bus.covers(3, private=True) and not await own_bus.covers(4, private=True)


async def test_replay_merges_both_sequences_back_into_send_order(own_bus):
    order = ["story:deleted", "private:draft", "private:draft", "story:deleted",
             "story:deleted", "private:draft", "story:deleted", "private:draft"]
    sent = []
    for n, channel in enumerate(order, start=1):
        body = _draft(n) if channel == "private:draft" else _body(n)
        sent.append((channel, await own_bus.send(channel, body, dedupe_key=f"m{n}")))

    async def replayed(public_after, private_after, batch):
        return [
            (e.channel, e.id)
            async for e in own_bus.replay(public_after, private_after, batch=batch)
        ]

    for batch in (1, 2, 1000):  # refills between and within batches
        assert await replayed(0, 0, batch) == sent
        assert await replayed(2, 1, batch) == [
            ("private:draft", 2), ("story:deleted", 3), ("private:draft", 3),
            ("story:deleted", 4), ("private:draft", 4),
        ]
        assert await replayed(0, None, batch) == [e for e in sent if e[0] == "story:deleted"]
        assert await replayed(None, 2, batch) == [("private:draft", 3), ("private:draft", 4)]


async def test_replay_skips_private_events_left_in_the_public_stream(own_bus):
    """Before private events had a sequence of their own they shared the public one:
    such entries must not be read as private ids."""
    await own_bus.send("story:deleted", _body(1), dedupe_key="p1")
    await own_bus.redis.xadd(
        own_bus.stream_key, {"channel": "private:draft", "data": '{"id":2}'}, id="2-0"
    )
    await own_bus.redis.set(own_bus.seq_key, 2)
    await own_bus.send("story:deleted", _body(3), dedupe_key="p3")
    got = [(e.channel, e.id) async for e in own_bus.replay(0, 0, batch=1)]
    assert got == [("story:deleted", 1), ("story:deleted", 3)]
