"""The outbox between a change and Redis: rows stay unsent until the relay sends them,
then go out once each, in order, whatever the database or the number of relays."""

import asyncio
import json
import os
from collections.abc import Awaitable, Callable

import pytest
from reflex.model import get_engine
from sqlalchemy import text
from sqlmodel import Session, select

from fictures import db, feed, stories
from fictures.events import outbox
from fictures.events.bus import EventBus
from fictures.events.outbox import OutboxRelay
from fictures.events.schema import PRIVATE_CHANNEL, StoryUpdated
from fictures.models import OutboxEvent, Story, StoryStatus, StoryUpdate, User
from fictures.settings import settings
from tests.conftest import in_db, make_bus, outbox_mark, outbox_since, wait_until
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
    public_ids = [r.event_id for r in sent[:2]]
    assert public_ids == sorted(public_ids) and len(set(public_ids)) == 2

    # Redis holds each row under the id recorded for it, completed with that id,
    # in the stream of its sequence (the draft's in the private one).
    for row in sent:
        private = row.channel == "private:draft"
        [stored] = [
            e
            for e in await bus.read_after(row.event_id - 1, private=private, limit=1)
            if e.id == row.event_id
        ]
        assert stored.channel == row.channel
        assert json.loads(stored.data) == {"id": row.event_id, **json.loads(row.payload)}
    [private_row] = sent[2:]
    [stored] = await bus.read_after(private_row.event_id - 1, private=True, limit=1)
    assert json.loads(stored.data)["storyId"] == draft.id

    # Sent rows are not sent again.
    heads = (await bus.head(), await bus.head(private=True))
    assert await relay.flush() == 0
    assert (await bus.head(), await bus.head(private=True)) == heads



# ---------------------------------------------------------------- a database replaced


def _is_postgres() -> bool:
    return get_engine().dialect.name == "postgresql"


def _replace_outbox(session: Session) -> None:
    """What a new, restored or second database looks like to the relay: the outbox
    rows it knew are gone, and row numbers start again (SQLite reuses max(rowid)+1)."""
    if _is_postgres():
        session.exec(text("TRUNCATE outboxevent RESTART IDENTITY"))
    else:
        session.exec(text("DELETE FROM outboxevent"))
    session.commit()


async def _new_story(**fields) -> int:
    return await in_db(lambda s: make_story(s, make_user(s), **fields).id)


def test_an_event_row_is_written_when_recorded_and_goes_with_a_rollback(db_session):
    """`record` writes the row at once, in the change's transaction (after the
    change's own writes, so it draws the later id); a rollback takes both away."""
    author = make_user(db_session)
    story = make_story(db_session, author)
    before = db_session.exec(select(OutboxEvent.id).order_by(OutboxEvent.id.desc())).first() or 0
    with db.session() as s:
        row = s.get(Story, story.id)
        row.title = "Renamed In A Rolled Back Change"
        s.add(row)
        outbox.record(s, StoryUpdated(story_id=story.id, title=row.title, status=row.status))
        [(event_id, channel)] = s.exec(
            select(OutboxEvent.id, OutboxEvent.channel).where(OutboxEvent.id > before)
        ).all()
        assert channel == "story:updated" and event_id > before
        assert s.exec(select(Story.title).where(Story.id == story.id)).one() == row.title
        s.rollback()
    with db.session() as fresh:
        assert fresh.exec(select(OutboxEvent.id).where(OutboxEvent.id > before)).all() == []
        assert fresh.get(Story, story.id).title == story.title


async def test_a_fresh_database_on_a_used_redis_still_publishes(bus, listen):
    await OutboxRelay(bus).flush()  # rows other tests left are not this test's business
    await in_db(_replace_outbox)
    async with listen("story:published") as events:
        first_story = await _new_story()
        [first_row] = outbox_since(0)
        await OutboxRelay(bus).flush()
        first = await events.next("story:published", lambda e: e["storyId"] == first_story)

        # The app restarts on a new database, same Redis: its first row has the
        # number of a row Redis has seen, but it is another event.
        await in_db(_replace_outbox)
        second_story = await _new_story()
        [row] = outbox_since(0)
        assert row.id == first_row.id and row.event_key != first_row.event_key
        assert await OutboxRelay(bus).flush() == 1
        second = await events.next("story:published", lambda e: e["storyId"] == second_story)

    assert second["id"] > first["id"]
    [stored] = await bus.read_after(second["id"] - 1, limit=1)
    assert json.loads(stored.data) == second
    [row] = outbox_since(0)
    assert row.event_id == second["id"] and row.sent_at is not None


class _BusThatRunsOnce(EventBus):
    """The real bus; runs `during` once, right after its first send returns."""

    def __init__(self, during: Callable[[], Awaitable[None]]):
        super().__init__(settings.redis_url, stream_key=settings.stream_key, maxlen=settings.stream_maxlen)
        self.during: Callable[[], Awaitable[None]] | None = during

    async def send(self, *args, **kwargs) -> int:
        event_id = await super().send(*args, **kwargs)
        if self.during is not None:
            during, self.during = self.during, None
            await during()
        return event_id


async def test_a_row_that_reuses_the_number_of_one_being_sent_is_not_marked_sent(bus, listen):
    """The database is replaced between the relay sending its batch and recording it."""
    await OutboxRelay(bus).flush()
    await in_db(_replace_outbox)
    first_story = await _new_story()
    [first_row] = outbox_since(0)
    replaced: list[int] = []

    async def replace_database() -> None:
        await in_db(_replace_outbox)
        replaced.append(await _new_story())

    the_bus = _BusThatRunsOnce(replace_database)
    try:
        async with listen("story:published") as events:
            relay = OutboxRelay(the_bus)
            await relay.flush()
            first = await events.next("story:published", lambda e: e["storyId"] == first_story)
            [second_story] = replaced
            # The new row is still unsent, so the relay's next round sends it.
            await relay.flush()
            second = await events.next("story:published", lambda e: e["storyId"] == second_story)
    finally:
        await the_bus.close()
    [row] = outbox_since(0)
    assert row.id == first_row.id and row.event_key != first_row.event_key
    # Marked with the id of its own event, not with the id of the event that had its number.
    assert row.event_id == second["id"] != first["id"]


class _CountingBus(EventBus):
    """The real bus; counts the sends that reach Redis."""

    def __init__(self) -> None:
        super().__init__(settings.redis_url, stream_key=settings.stream_key, maxlen=settings.stream_maxlen)
        self.sends: list[str] = []

    async def send(self, channel: str, *args, **kwargs) -> int:
        self.sends.append(channel)
        return await super().send(channel, *args, **kwargs)


async def test_a_commit_hands_its_rows_to_the_relay_which_publishes_without_reading_them_again(
    bus, listen, monkeypatch
):
    """The committing thread reads the unsent rows and hands them over with the
    wake-up; the relay sends them as they are, and an offer of rows it already
    sent (read before their mark) sends nothing twice."""
    await OutboxRelay(bus).flush()
    reads: list[int] = []
    real_unsent = outbox._unsent

    def counted_unsent(limit: int):
        reads.append(limit)
        return real_unsent(limit)

    monkeypatch.setattr(outbox, "_unsent", counted_unsent)
    counting = _CountingBus()
    relay = OutboxRelay(counting)
    task = asyncio.create_task(relay.run())
    try:
        await wait_until(lambda: len(reads) == 1, message="the relay's first sweep")
        async with listen("story:published") as events:
            story_id = await _new_story()
            event = await events.next("story:published", lambda e: e["storyId"] == story_id)
        await wait_until(lambda: all(r.sent_at is not None for r in outbox_since(0)), message="marked sent")
        assert reads == [outbox._BATCH]  # only the start-up sweep read the outbox
        assert counting.sends.count("story:published") == 1
        [row] = [r for r in outbox_since(0) if r.event_id == event["id"]]

        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        # An offer read before that row was marked: nothing is sent again.
        sends = len(counting.sends)
        stale = await in_db(lambda s: list(s.exec(
            select(*outbox._UNSENT_COLUMNS).where(OutboxEvent.id == row.id)
        )))
        relay._take_offer(stale)
        assert await relay.flush() == 0
        assert len(counting.sends) == sends
        assert reads == [outbox._BATCH]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await counting.close()


async def test_offers_arriving_out_of_order_hide_no_row(bus, monkeypatch):
    """Two committing threads read the outbox one after the other; their offers
    reach the relay the other way round. The later read's rows are still sent."""
    await OutboxRelay(bus).flush()
    mark = outbox_mark()
    await _new_story()
    await _new_story()
    first, second = await in_db(lambda s: outbox._unsent_rows(s, outbox._BATCH))
    reads: list[int] = []
    monkeypatch.setattr(outbox, "_unsent", lambda limit: reads.append(limit) or [])
    counting = _CountingBus()
    try:
        relay = OutboxRelay(counting)
        relay._take_offer([first, second])  # the later read
        relay._take_offer([first])  # the earlier read, arriving last
        assert await relay.flush() == 2
        assert counting.sends == ["story:published", "story:published"]
        assert reads == []  # both came from the offers
        assert [r.event_key for r in outbox_since(mark) if r.sent_at is not None] == [
            first.event_key, second.event_key,
        ]
    finally:
        await counting.close()


# ---------------------------------------------------------------- several relays


async def test_several_relays_send_every_row_once_and_in_row_order(bus, listen):
    """Three relays (three workers) flush one database concurrently to one Redis."""
    await OutboxRelay(bus).flush()
    mark = outbox_mark()

    def scenario(session: Session) -> None:
        author = make_user(session)
        for n in range(45):
            make_story(session, author, published=n % 3 != 1)  # every third one a draft

    await in_db(scenario)
    rows = outbox_since(mark)
    assert len(rows) == 45
    relays = [OutboxRelay(make_bus()) for _ in range(3)]
    try:
        async with listen("story:published", PRIVATE_CHANNEL) as events:
            await asyncio.gather(*(relay.flush() for relay in relays))
            last = {row.channel: row for row in rows}
            for channel, row in last.items():
                story_id = json.loads(row.payload)["storyId"]
                await events.next(channel, lambda e, sid=story_id: e["storyId"] == sid)
    finally:
        for relay in relays:
            await relay.bus.close()

    rows = outbox_since(mark)
    assert all(row.sent_at is not None for row in rows)
    for channel in ("story:published", PRIVATE_CHANNEL):
        mine = [row for row in rows if row.channel == channel]  # in row order
        ids = [row.event_id for row in mine]
        # Redis ids grow with row ids, with no gap: each row got exactly one id...
        assert ids == list(range(ids[0], ids[0] + len(mine))), (channel, ids)
        # ...and was published exactly once, under it, in that order.
        wire = [(r.id, r.data["storyId"]) for r in events.on(channel)]
        assert wire == [(row.event_id, json.loads(row.payload)["storyId"]) for row in mine]
        for row in mine:
            [stored] = await bus.read_after(
                row.event_id - 1, private=channel == PRIVATE_CHANNEL, limit=1
            )
            assert json.loads(stored.data) == {"id": row.event_id, **json.loads(row.payload)}


# ---------------------------------------------------------------- commit order


def _backend_pid(session: Session) -> int:
    return session.exec(text("SELECT pg_backend_pid()")).one()[0]


def _blocked_by(pid: int) -> list[int]:
    with db.session() as s:
        return list(s.exec(text("SELECT pg_blocking_pids(:pid)"), params={"pid": pid}).one()[0])


@pytest.mark.postgres
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



async def test_published_since_names_each_story_published_after_an_event_by_its_latest_publication(
    db_session, bus
):
    """What a tab that was away reads to mark the stories it missed (feed.published_since)."""
    relay = OutboxRelay(bus)
    author = make_user(db_session)
    mark = outbox_mark()
    before = make_story(db_session, author)
    await relay.flush()
    [floor] = [r.event_id for r in outbox_since(mark)]
    mark = outbox_mark()
    first, second = make_story(db_session, author), make_story(db_session, author)
    make_story(db_session, author, published=False)  # a draft: not public, never named
    for status in (StoryStatus.draft, StoryStatus.published):  # first: published again, later
        stories.set_visibility(session=db_session, author=author, story_id=first.id, status=status)
    await relay.flush()
    published = [(json.loads(r.payload)["storyId"], r.event_id)
                 for r in outbox_since(mark) if r.channel == "story:published"]
    assert [story_id for story_id, _ in published] == [first.id, second.id, first.id]
    latest = dict(published)

    since = feed.published_since(floor, limit=10)
    assert since == {first.id: latest[first.id], second.id: latest[second.id]}
    assert before.id not in since and since[first.id] > since[second.id]
    # The newest publications when there are more than the limit.
    assert feed.published_since(floor, limit=1) == {first.id: latest[first.id]}
    assert feed.published_since(latest[first.id], limit=10) == {}


async def test_a_reload_this_process_cannot_answer_from_memory_reads_the_missed_stories_from_the_outbox(
    db_session, bus
):
    """/community's load in one trip (pages.community._read): the stories published
    after the tab's page loaded come back as missed cards carrying their event ids,
    and the list reads that many more so none falls off its end."""
    from fictures.pages import community

    relay = OutboxRelay(bus)
    author = make_user(db_session)
    mark = outbox_mark()
    make_story(db_session, author)
    await relay.flush()
    [floor] = [r.event_id for r in outbox_since(mark)]
    mark = outbox_mark()
    after = [make_story(db_session, author) for _ in range(3)]
    await relay.flush()
    event_ids = {json.loads(r.payload)["storyId"]: r.event_id for r in outbox_since(mark)}

    read = community._read("", None, 2, 1, floor)
    assert [(c.id, c.event_id) for c in read.missed] == [(s.id, event_ids[s.id]) for s in reversed(after)]
    assert len(read.stories.cards) == 2 + 3
    assert [c.id for c in read.stories.cards[:3]] == [s.id for s in reversed(after)]
    # A first load (no since_id): nothing missed, the page as asked.
    first = community._read("", None, 2, 1, None)
    assert first.missed == [] and len(first.stories.cards) == 2
