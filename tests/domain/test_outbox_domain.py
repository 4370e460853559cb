"""The outbox between a change and Redis: rows stay unsent until the relay sends them."""

import asyncio
import json
import os

import pytest
from sqlalchemy import text
from sqlmodel import Session

from fictures import db, stories
from fictures.events import outbox
from fictures.events.outbox import OutboxRelay
from fictures.events.schema import StoryUpdated
from fictures.models import Story, StoryUpdate, User
from tests.conftest import in_db, outbox_mark, outbox_since, wait_until
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


# ---------------------------------------------------------------- commit order


def _backend_pid(session: Session) -> int:
    return session.exec(text("SELECT pg_backend_pid()")).one()[0]


def _blocked_by(pid: int) -> list[int]:
    with db.session() as s:
        return list(s.exec(text("SELECT pg_blocking_pids(:pid)"), params={"pid": pid}).one()[0])


@pytest.mark.skipif(
    os.environ["DATABASE_URL"].startswith("sqlite"),
    reason="SQLite has one writer at a time: its outbox ids follow commit order anyway",
)
@pytest.mark.parametrize("second", ["update", "delete"])
async def test_two_changes_to_one_story_are_announced_in_commit_order(bus, listen, second):
    """On PostgreSQL an outbox row draws its id when inserted, not when committed.
    A change that waits for another one's row lock must draw its id after that
    one committed, or its event goes out first and readers end on the older state."""
    author_id, story_id = await in_db(
        lambda s: (author := make_user(s), author.id, make_story(s, author).id)[1:]
    )
    await OutboxRelay(bus).flush()
    holder = db.session()
    try:
        # A first change to the story, not committed yet: it holds the row's lock.
        holder_pid = _backend_pid(holder)
        story = holder.get(Story, story_id)
        story.title = "First"
        holder.add(story)
        holder.flush()

        pids: list[int] = []

        def second_change() -> None:
            with db.session() as s:
                pids.append(_backend_pid(s))
                author = s.get(User, author_id)
                if second == "update":
                    stories.update_story(
                        session=s, author=author, story_id=story_id,
                        data=StoryUpdate(title="Second"),
                    )
                else:
                    stories.delete_story(session=s, author=author, story_id=story_id)

        waiting = asyncio.create_task(asyncio.to_thread(second_change))
        await wait_until(
            lambda: bool(pids) and holder_pid in _blocked_by(pids[0]),
            message="the second change to wait for the first one's lock",
        )
        outbox.record(holder, StoryUpdated(story_id=story_id, title="First", status="published"))
        holder.commit()
    finally:
        holder.close()
    await waiting

    async with listen("story:updated", "story:deleted") as events:
        await OutboxRelay(bus).flush()
        if second == "update":
            later = await events.next("story:updated", lambda e: e["title"] == "Second")
        else:
            later = await events.next("story:deleted", lambda e: e["storyId"] == story_id)
        earlier = await events.next(
            "story:updated", lambda e: e["storyId"] == story_id and e["title"] == "First"
        )
    assert earlier["id"] < later["id"]
    assert [r.id for r in events.received] == [earlier["id"], later["id"]]
