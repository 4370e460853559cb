"""A dropped subscription while Redis stays up: events sent in the gap still arrive."""

from fictures.events.schema import StoryDeleted
from tests.conftest import make_bus, next_event, run_event_service, wait_until


async def test_events_sent_while_the_subscriber_was_disconnected_are_caught_up(embedded_redis):
    server = embedded_redis()
    async with run_event_service(make_bus(server.url)) as service:
        bus, fanout = service.bus, service.fanout
        health: list[bool] = []
        fanout.on_health_change(health.append)
        async with fanout.subscribe() as sub:
            # Drop the fan-out's subscription (Redis stays up) and send while nobody is
            # subscribed, so pub/sub alone would lose the event. The fan-out reconnects
            # within ~0.1 s; retry in the unlikely case it was back before the send.
            for attempt in range(5):
                await wait_until(lambda: fanout.healthy, message="the subscription")
                killed = await bus.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                assert killed == 1
                before = dict(await bus.redis.pubsub_numsub("story:deleted"))["story:deleted"]
                story_id = 424_242 + attempt
                event_id = await bus.send(
                    "story:deleted",
                    StoryDeleted(story_id=story_id).body_without_id(),
                    dedupe_key=f"gap-{attempt}",
                )
                after = dict(await bus.redis.pubsub_numsub("story:deleted"))["story:deleted"]
                if before == after == 0:
                    break
            else:
                raise AssertionError("the subscriber never stayed away long enough")

            event = await next_event(sub, lambda e: e.story_id_or_none == story_id)
            assert isinstance(event, StoryDeleted)
            assert event.id == event_id
            await wait_until(lambda: fanout.healthy, message="the subscription to be back")
            assert health[-2:] == [False, True]
