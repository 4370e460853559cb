"""The outbox between a change and Redis: rows stay unsent until the relay sends them."""

import json

from fictures.events.outbox import OutboxRelay
from tests.conftest import outbox_mark, outbox_since
from tests.factories import make_post, make_story, make_user


async def test_relay_sends_unsent_rows_in_order_and_records_their_ids(db_session, bus):
    author = make_user(db_session)
    mark = outbox_mark()
    story = make_story(db_session, author)
    make_post(db_session, author, story)
    draft = make_story(db_session, author, published=False)
    rows = outbox_since(mark)
    assert [r.channel for r in rows] == ["story:published", "post:created", "private:draft"]
    assert all(r.sent_at is None and r.event_id is None for r in rows)

    relay = OutboxRelay(bus)
    assert await relay.flush() >= 3
    sent = outbox_since(mark)
    assert all(r.sent_at is not None for r in sent)
    ids = [r.event_id for r in sent]
    assert ids == sorted(ids) and len(set(ids)) == 3

    # Redis holds each row under the id recorded for it, completed with that id.
    for row in sent:
        [stored] = [
            e for e in await bus.read_after(row.event_id - 1, limit=1) if e.id == row.event_id
        ]
        assert stored.channel == row.channel
        assert json.loads(stored.data) == {"id": row.event_id, **json.loads(row.payload)}
    assert json.loads((await bus.read_after(ids[2] - 1, limit=1))[0].data)["storyId"] == draft.id

    # Sent rows are not sent again.
    head = await bus.head()
    assert await relay.flush() == 0
    assert await bus.head() == head

