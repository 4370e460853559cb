"""OutboxRelay -> Redis -> Fanout -> local subscribers, against the real Redis."""

import asyncio
import json
import uuid

import pytest
from prometheus_client import REGISTRY

from fictures import posts, stories
from fictures.events.outbox import OutboxRelay
from fictures.events.schema import (
    PRIVATE_CHANNEL,
    DraftChanged,
    PostCreated,
    PostDeleted,
    PostUpdated,
    StoryDeleted,
    StoryPublished,
    StoryUpdated,
    is_private_channel,
)
from fictures.models import PostType, PostUpdate, StoryUpdate
from tests.conftest import in_db, next_event, outbox_mark, outbox_since, wait_until
from tests.factories import make_post, make_story, make_user


async def test_all_six_public_events_round_trip_typed_and_in_order(relay_running):
    def scenario(session):
        author, reader = make_user(session), make_user(session)
        author_id, reader_id = author.id, reader.id
        story = make_story(session, author, genre="fantasy")
        story_id = story.id
        stories.update_story(
            session=session, author=author, story_id=story_id,
            data=StoryUpdate(title="Second title", genre="horror"),
        )
        post = make_post(session, reader, story, title="Hello", type="question")
        post_id = post.id
        posts.update_post(
            session=session, author=reader, post_id=post_id,
            data=PostUpdate(type=PostType.review),
        )
        posts.delete_post(session=session, author=reader, post_id=post_id)
        stories.delete_story(session=session, author=author, story_id=story_id)
        return author_id, reader_id, story_id, post_id

    mark = outbox_mark()
    async with relay_running.fanout.subscribe() as sub:
        author_id, reader_id, story_id, post_id = await in_db(scenario)
        received = [
            await next_event(sub, lambda e: e.public and e.story_id_or_none == story_id)
            for _ in range(6)
        ]

    assert [type(e) for e in received] == [
        StoryPublished, StoryUpdated, PostCreated, PostUpdated, PostDeleted, StoryDeleted,
    ]
    published, updated, created, post_updated, post_deleted, deleted = received
    assert (published.author_id, published.genre) == (author_id, "fantasy")
    assert (updated.title, updated.genre, updated.status) == ("Second title", "horror", "published")
    assert (created.post_id, created.author_id, created.title, created.type) == (
        post_id, reader_id, "Hello", "question",
    )
    assert post_updated.post_id == post_deleted.post_id == post_id
    assert deleted.story_id == story_id

    ids = [e.id for e in received]
    assert ids == sorted(ids) and len(set(ids)) == 6
    # Each is the event an outbox row recorded, under the id the relay stored for it
    # (the relay records ids once its batch is sent, so possibly just after delivery).
    # (Public rows only: the post's notification has an id of the private sequence.)
    def public_rows():
        return {r.event_id: r for r in outbox_since(mark) if not is_private_channel(r.channel)}

    await wait_until(
        lambda: {e.id for e in received} <= set(public_rows()),
        message="the relay to record the event ids",
    )
    rows = public_rows()
    for event in received:
        row = rows[event.id]
        assert row.channel == event.channel
        assert json.loads(row.payload) == json.loads(event.body_without_id())


async def test_draft_events_arrive_typed_and_private(relay_running):
    def scenario(session):
        author = make_user(session)
        return author.id, make_story(session, author, published=False).id

    async with relay_running.fanout.subscribe() as sub:
        author_id, story_id = await in_db(scenario)
        event = await next_event(sub, lambda e: e.story_id_or_none == story_id)
    assert isinstance(event, DraftChanged)
    assert not event.public
    assert (event.user_id, event.action) == (author_id, "created")


async def test_the_relay_times_each_commit_it_is_woken_by_until_the_publish(relay_running):
    """fictures_outbox_relay_seconds: the commit's wake-up to the PUBLISH (what
    benchmarks/fanout.py reports as the relay's share of publish → PUBLISH)."""
    def count() -> float:
        return REGISTRY.get_sample_value("fictures_outbox_relay_seconds_count") or 0.0

    def total() -> float:
        return REGISTRY.get_sample_value("fictures_outbox_relay_seconds_sum") or 0.0

    before, before_sum = count(), total()
    async with relay_running.fanout.subscribe() as sub:
        story_id = await in_db(lambda session: make_story(session, make_user(session)).id)
        await next_event(sub, lambda e: e.story_id_or_none == story_id)
    assert count() == before + 1
    assert 0 < total() - before_sum < 5


def _malformed_count() -> float:
    return REGISTRY.get_sample_value("fictures_malformed_events_total") or 0.0


async def test_malformed_messages_are_skipped_and_later_events_still_arrive(relay_running):
    bus, fanout = relay_running.bus, relay_running.fanout
    valid_without_id = StoryPublished(
        story_id=1, title="No id", author_id=1
    ).body_without_id()
    garbage = [
        ("story:published", "not json at all"),
        ("story:published", valid_without_id),  # valid shape, but never sent through the bus
        ("post:created", json.dumps({"id": 10**9, "postId": 1})),  # missing fields
        ("story:deleted", json.dumps({"id": 10**9, "storyId": "one"})),
        ("story:updated", json.dumps({"id": "seven", "storyId": 1, "title": "t",
                                      "status": "published"})),
        ("post:deleted", json.dumps([1, 2, 3])),
    ]
    before = _malformed_count()
    async with fanout.subscribe() as sub:
        for channel, raw in garbage:
            await bus.redis.publish(channel, raw)
        _, story_id = await in_db(
            lambda s: (author := make_user(s), make_story(s, author).id)
        )
        event = await next_event(sub, lambda e: e.story_id_or_none == story_id)
    assert isinstance(event, StoryPublished)
    # Skipped, not delivered: the huge ids above did not hold back later events.
    assert event.id < 10**9 and fanout.last_id < 10**9
    assert _malformed_count() - before == len(garbage)
    assert fanout.healthy


async def test_a_slow_subscriber_is_dropped_without_holding_back_the_others(relay_running):
    fanout = relay_running.fanout
    async with fanout.subscribe(maxsize=2) as slow, fanout.subscribe() as fast:
        assert fanout.subscriber_count == 2

        def scenario(session):
            author = make_user(session)
            return [make_story(session, author).id for _ in range(4)]

        story_ids = await in_db(scenario)
        for story_id in story_ids:
            await next_event(fast, lambda e, sid=story_id: e.story_id_or_none == sid)
        assert slow.overflowed and slow.closed
        queued = []
        while (event := await slow.get()) is not None:
            queued.append(event)
        assert len(queued) <= 2
    assert fanout.subscriber_count == 0


async def test_relay_stops_when_cancelled_just_as_it_is_woken(bus):
    """Shutdown must not hang: a cancel that lands with a wake-up still stops the relay.

    (asyncio.wait_for on Python 3.11 returned the wake-up and dropped the cancel.)
    The relay's private wake event is used to make the two land in the same step.
    """
    relay = OutboxRelay(bus)
    task = asyncio.create_task(relay.run())
    try:
        await wait_until(lambda: bool(relay._wake._waiters), message="the relay to go idle")
        relay._wake.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
    finally:
        task.cancel()


async def test_an_event_with_a_field_this_version_does_not_know_is_delivered(relay_running):
    """A newer worker (rolling deploy) sends events with a field added: older workers
    deliver them (without that field) instead of skipping every one as malformed."""
    bus, fanout = relay_running.bus, relay_running.fanout
    body = json.loads(StoryDeleted(story_id=777_001).body_without_id())
    newer = json.dumps({**body, "reason": "spam", "moderation": {"by": 1}})
    before = _malformed_count()
    async with fanout.subscribe() as sub:
        event_id = await bus.send("story:deleted", newer, dedupe_key=uuid.uuid4().hex)
        event = await next_event(sub, lambda e: e.story_id_or_none == 777_001)
    assert isinstance(event, StoryDeleted)
    assert event.id == event_id
    assert _malformed_count() == before
    # Building one in code stays strict: a misspelt field is an error, not dropped.
    with pytest.raises(ValueError, match="reason"):
        StoryDeleted(story_id=1, reason="spam")


async def test_each_sequence_is_deduplicated_on_its_own(relay_running):
    """Private ids count separately, so a draft's id may well be below the last
    public id: it must still be delivered (and a repeated one still dropped)."""
    bus, fanout = relay_running.bus, relay_running.fanout

    def scenario(session):
        author = make_user(session)
        return author.id, make_story(session, author, published=False).id

    async with fanout.subscribe() as sub:
        # Public ids well ahead of private ones.
        ahead = await bus.head(private=True) + 100
        public_id = await bus.send(
            "story:deleted", StoryDeleted(story_id=777_002).body_without_id(),
            dedupe_key=uuid.uuid4().hex, floor=ahead,
        )
        await next_event(sub, lambda e: e.public and e.id == public_id)
        author_id, draft_id = await in_db(scenario)
        draft = await next_event(sub, lambda e: e.story_id_or_none == draft_id)
    assert isinstance(draft, DraftChanged) and draft.user_id == author_id
    assert draft.id < public_id <= fanout.last_id
    assert fanout.last_private_id == draft.id
    assert fanout.dispatch(draft) == 0  # seen already: dropped
    assert (fanout.last_seen(private=True), fanout.last_seen(private=False)) == (
        fanout.last_private_id, fanout.last_id,
    )


def _published_total(channel: str) -> float:
    return REGISTRY.get_sample_value(
        "fictures_events_published_total", {"channel": channel}
    ) or 0.0


async def test_draft_activity_stays_out_of_the_public_metrics(relay_running):
    before = {c: _published_total(c) for c in ("story:published", PRIVATE_CHANNEL)}

    def scenario(session):
        author = make_user(session)
        draft = make_story(session, author, published=False)
        stories.update_story(
            session=session, author=author, story_id=draft.id, data=StoryUpdate(title="Again")
        )
        return make_story(session, author).id

    async with relay_running.fanout.subscribe() as sub:
        story_id = await in_db(scenario)
        await next_event(sub, lambda e: e.story_id_or_none == story_id and e.public)
    assert _published_total("story:published") == before["story:published"] + 1
    assert _published_total(PRIVATE_CHANNEL) == before[PRIVATE_CHANNEL] == 0


async def test_a_subscription_hands_out_events_in_order_says_when_idle_and_ends_after_its_last_event():
    from fictures.events.fanout import IDLE, Subscription

    sub = Subscription(maxsize=3)
    events = [StoryDeleted(id=i, story_id=i) for i in (1, 2, 3)]
    started = asyncio.get_running_loop().time()
    assert await sub.get(idle=0.05) is IDLE  # nothing within the idle time
    assert asyncio.get_running_loop().time() - started >= 0.04
    waiting = asyncio.create_task(sub.get(idle=5))
    await asyncio.sleep(0)
    assert all(sub.offer(e) for e in events)
    assert await waiting is events[0]  # woken by the offer, not the timer
    assert sub.take(10) == events[1:] and sub.pending() == 0
    for e in events:
        sub.offer(e)
    assert not sub.offer(events[0]) and sub.overflowed and sub.closed  # a fourth: too far behind
    assert [await sub.get(), await sub.get(), await sub.get()] == events  # what was queued still comes
    assert await sub.get() is None and await sub.get(idle=0.01) is None


async def test_a_busy_subscription_is_never_idle_and_keeps_no_timer_of_its_own():
    from fictures.deadline import sweep
    from fictures.events.fanout import IDLE, Subscription

    sub = Subscription(maxsize=100)
    loop = asyncio.get_running_loop()
    timers_before = len(loop._scheduled)

    async def feed() -> None:  # an event every 0.05 s for a second: never 0.5 s of nothing
        for i in range(20):
            await asyncio.sleep(0.05)
            sub.offer(StoryDeleted(id=i + 1, story_id=i + 1))

    feeder = asyncio.create_task(feed())
    got, timers = [], set()
    while len(got) < 20:
        waiting = asyncio.create_task(sub.get(idle=0.5))
        await asyncio.sleep(0)
        # the feeder's sleep and the loop's one sweep for 0.5 s waits, nothing per get
        timers.add(len(loop._scheduled) - timers_before)
        got.append(await waiting)
    await feeder
    assert IDLE not in got and [e.id for e in got] == list(range(1, 21))
    assert max(timers) <= 2, timers
    assert len(sweep(0.5 / 4)) == 1  # the subscription, looked at by the sweep
    # Then nothing: idle after its idle time, and at most a quarter of it later.
    started = loop.time()
    assert await sub.get(idle=0.2) is IDLE
    assert 0.19 <= loop.time() - started < 0.2 * 1.25 + 0.1
    # Another idle time moves it to that time's sweep; closing leaves every sweep.
    waiting = asyncio.create_task(sub.get(idle=5))
    await asyncio.sleep(0)
    assert len(sweep(5 / 4)) == 1 and len(sweep(0.2 / 4)) == 0
    sub.close()
    assert await waiting is None and len(sweep(5 / 4)) == 0


async def test_a_stream_writes_the_events_queued_behind_the_first_in_one_chunk():
    from fictures.api import sse
    from fictures.events.fanout import Subscription

    sub = Subscription(maxsize=100)
    for i in (1, 2, 3):
        sub.offer(StoryDeleted(id=10_000 + i, story_id=i))
    first = sse._ready(sub, await sub.get(idle=5))
    flt = sse.StreamFilter(channels=frozenset({"story:deleted"}), story_id=None, user_id=None)
    chunk, sent = sse._chunk(first, flt, sse.Position(10_001, 0))  # 10001 was already replayed
    assert [e.id for e in sent] == [10_002, 10_003]
    assert chunk.count(b"event: story:deleted") == 2 and b"id: 10003" in chunk


async def test_an_event_alone_goes_to_a_direct_consumer_and_a_burst_through_the_queue(relay_running):
    """`Subscription.direct`: a waiting direct consumer (an SSE stream writing to its
    connection) takes an event that arrives alone; events that arrive together
    (read in one go from the subscription) are queued for its own task to take in
    one batch, in order. Real Redis: the burst is one pipeline of PUBLISHes."""
    from fictures.events.fanout import Subscription

    bus, fanout = relay_running.bus, relay_running.fanout
    taken: list[int] = []

    class Consumer:
        def take(self, event) -> bool:
            taken.append(event.id)
            return True

    def raw(event_id: int) -> str:
        return StoryDeleted(id=event_id, story_id=event_id).to_json()

    async with fanout.subscribe() as sub:
        assert isinstance(sub, Subscription)
        sub.direct = Consumer()
        waiting = sub.wait()
        first = fanout.last_id + 1
        await bus.redis.publish("story:deleted", raw(first))
        await wait_until(lambda: taken == [first], timeout=5)
        assert sub.pending() == 0 and not waiting.done()  # taken: nothing queued, nobody woken
        burst = list(range(first + 1, first + 6))
        async with bus.redis.pipeline(transaction=False) as pipe:
            for event_id in burst:
                pipe.publish("story:deleted", raw(event_id))
            await pipe.execute()
        await asyncio.wait_for(waiting, 5)  # woken: the burst is in its queue
        assert taken == [first]
        got = [sub.next(), *sub.take(10)]
        assert [e.id for e in got] == burst
