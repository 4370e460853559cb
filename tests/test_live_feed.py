"""fictures.live_feed: an event becomes the changed slots of the broadcast feed."""

from __future__ import annotations

from datetime import UTC, datetime

from fictures import live_feed
from fictures.events.schema import StoryDeleted, StoryPublished
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


async def test_the_process_remembers_publications_for_reconnecting_tabs_while_it_knows_them_all():
    """live_feed.Published: what a reconnecting /community tab missed beyond the slots."""
    index = live_feed.Published(size=3)

    def card(story_id: int, title: str = "t") -> live_feed.StoryCard:
        return live_feed.StoryCard(id=story_id, title=title)

    assert index.since(0, 10) is None  # not warmed: it knows nothing for sure
    index.complete_after = 100
    for event_id, story_id in ((101, 1), (102, 2), (103, 3)):
        index.put(card(story_id), event_id)
    assert [c.id for c in index.since(100, 10)] == [3, 2, 1]
    assert [c.id for c in index.since(101, 10)] == [3, 2]
    assert [c.id for c in index.since(100, 2)] == [3, 2]  # the newest, at most the limit
    assert index.since(99, 10) is None  # before what it knows

    index.put(card(1, "again"), 104)  # published again: it moves, with its new event
    assert [(c.id, c.event_id) for c in index.since(100, 10)] == [(1, 104), (3, 103), (2, 102)]
    index.update(3, card(3, "edited"))
    assert [c.title for c in index.since(102, 10)] == ["again", "edited"]
    assert index.since(102, 10)[1].event_id == 103
    index.remove(2)  # unpublished or deleted
    assert [c.id for c in index.since(100, 10)] == [1, 3]

    index.put(card(4), 105)
    index.put(card(5), 106)  # over its size: the oldest goes, and with it what it knows
    assert [c.id for c in index.since(103, 10)] == [5, 4, 1]
    assert index.since(102, 10) is None


async def test_applying_events_keeps_the_index_of_publications_current(monkeypatch):
    monkeypatch.setattr(live_feed, "published", live_feed.Published(size=10))
    live_feed.published.complete_after = 0
    published = StoryPublished(
        id=910_001, story_id=910_001, title="Indexed", author_id=1, genre="horror",
        author="ann", excerpt="x", published_at=datetime(2026, 11, 28, 12, tzinfo=UTC),
    )
    await live_feed.apply(published)
    assert [c.title for c in live_feed.published.since(910_000, 5)] == ["Indexed"]
    await live_feed.apply(StoryDeleted(id=910_002, story_id=910_001))
    assert live_feed.published.since(910_000, 5) == []
