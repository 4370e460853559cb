"""fictures.live_feed: an event becomes the changed slots of the broadcast feed."""

from __future__ import annotations

from datetime import UTC, datetime

from fictures import live_feed
from fictures.events.schema import StoryPublished
from tests.factories import make_story, make_user


async def test_a_story_event_carries_its_card_so_the_fan_out_reads_no_database():
    # No such story in the database: the card can only come from the event.
    event = StoryPublished(
        id=900_001, story_id=987_654, title="From the event", author_id=1, genre=None,
        author="ann", excerpt="Short.", published_at=datetime(2026, 11, 28, 12, tzinfo=UTC),
    )
    changed = await live_feed.apply(event)
    [card] = changed.values()
    assert (card.id, card.title, card.author, card.summary, card.event_id) == (
        987_654, "From the event", "ann", "Short.", 900_001,
    )
    assert card.published_at.startswith("2026-11-28T12:00:00")


async def test_an_event_stored_by_an_older_version_has_its_card_read_from_the_database(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author, title="In the database")
    old = StoryPublished(id=900_002, story_id=story.id, title=story.title, author_id=author.id)
    [card] = (await live_feed.apply(old)).values()
    assert (card.title, card.author, card.summary) == ("In the database", author.username, "A summary.")
    gone = StoryPublished(id=900_003, story_id=987_655, title="Gone", author_id=author.id)
    assert await live_feed.apply(gone) == {}
