"""Redis going away and coming back, on a dedicated server each test controls.

Stopping the session's Redis would disturb other tests, so each test here starts
its own embedded Valkey, stops it, and starts a new one on the same port.
"""

import json

import pytest
import redis.exceptions

from fictures.events.outbox import OutboxRelay
from fictures.events.schema import StoryPublished
from tests.conftest import (
    in_db,
    make_bus,
    next_event,
    outbox_mark,
    outbox_since,
    run_event_service,
    unsent_outbox_rows,
    wait_until,
)
from tests.factories import make_story, make_user

RECONNECT_TIMEOUT = 15.0


async def _new_story(author_id: int) -> int:
    from fictures.models import User

    return await in_db(lambda s: make_story(s, s.get(User, author_id)).id)


async def test_fanout_survives_a_redis_restart(embedded_redis):
    server = embedded_redis()
    author_id = await in_db(lambda s: make_user(s).id)
    # Rows other tests left unsent are not this test's business.
    async with run_event_service(make_bus(server.url)) as service:
        await wait_until(lambda: not unsent_outbox_rows(), message="the outbox to drain")
        fanout = service.fanout
        health: list[bool] = []
        fanout.on_health_change(health.append)
        assert fanout.healthy

        async with fanout.subscribe() as sub:
            before_id = await _new_story(author_id)
            before = await next_event(sub, lambda e: e.story_id_or_none == before_id)

            server.stop()
            await wait_until(
                lambda: not fanout.healthy, timeout=RECONNECT_TIMEOUT, message="health to drop"
            )

            # Made while Redis is down: saved, and queued in the outbox.
            mark = outbox_mark()
            during_id = await _new_story(author_id)
            [row] = outbox_since(mark)
            assert row.sent_at is None

            embedded_redis(port=server.port)  # a new, empty server on the same port
            await wait_until(
                lambda: fanout.healthy, timeout=RECONNECT_TIMEOUT, message="health to return"
            )
            during = await next_event(
                sub, lambda e: e.story_id_or_none == during_id, timeout=RECONNECT_TIMEOUT
            )

            after_id = await _new_story(author_id)
            after = await next_event(sub, lambda e: e.story_id_or_none == after_id)
            assert fanout.healthy

    # Lost once, back once (stopping the service at the end reports a last False).
    assert health[:2] == [False, True] and True not in health[2:-1]
    assert all(isinstance(e, StoryPublished) for e in (before, during, after))
    # The empty server did not restart the ids: the relay continues above the last one.
    assert before.id < during.id < after.id


async def test_changes_made_while_redis_is_unreachable_are_sent_once_it_is_back(
    embedded_redis, listen
):
    server = embedded_redis()
    port = server.port
    server.stop()
    bus = make_bus(server.url)
    try:
        relay = OutboxRelay(bus)
        mark = outbox_mark()
        story_id = await in_db(lambda s: make_story(s, make_user(s)).id)

        # The story is saved regardless; its event waits in the outbox.
        with pytest.raises((redis.exceptions.ConnectionError, OSError)):
            await relay.flush()
        [row] = [r for r in outbox_since(mark) if r.channel == "story:published"]
        assert (row.sent_at, row.event_id) == (None, None)
        assert json.loads(row.payload)["storyId"] == story_id

        embedded_redis(port=port)
        async with listen("story:published", on_bus=bus) as events:
            assert await relay.flush() >= 1
            event = await events.next("story:published", lambda e: e["storyId"] == story_id)
        [row] = [r for r in outbox_since(mark) if r.channel == "story:published"]
        assert row.sent_at is not None
        assert row.event_id == event["id"]
        assert [e.id for e in await bus.read_after(event["id"] - 1, limit=1)] == [event["id"]]
    finally:
        await bus.close()


async def test_a_fresh_redis_continues_ids_above_every_recorded_one(embedded_redis, bus):
    """After Redis loses its data, ids still only grow, in each sequence: clients resume by id."""
    await in_db(lambda s: (author := make_user(s), make_story(s, author),
                           make_story(s, author, published=False)))
    await OutboxRelay(bus).flush()  # ids from the session's Redis are now recorded
    rows = outbox_since(0)
    floor = {
        private: max((r.event_id or 0) for r in rows if (r.channel == "private:draft") == private)
        for private in (False, True)
    }
    assert floor[False] >= 1 and floor[True] >= 1

    fresh = make_bus(embedded_redis().url)
    try:
        assert await fresh.head() == await fresh.head(private=True) == 0
        mark = outbox_mark()
        await in_db(lambda s: (author := make_user(s), make_story(s, author),
                               make_story(s, author, published=False)))
        assert await OutboxRelay(fresh).flush() == 2
        public, private = outbox_since(mark)
        assert (public.event_id, private.event_id) == (floor[False] + 1, floor[True] + 1)
    finally:
        await fresh.close()
