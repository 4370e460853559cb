"""fictures.stories: only authors change their stories; each change records its event."""

import json
from datetime import datetime

import pytest
from sqlmodel import select

from fictures import db, stories
from fictures.errors import Forbidden, NotFound
from fictures.models import OutboxEvent, Post, Story, StoryStatus, StoryUpdate
from tests.conftest import outbox_mark, outbox_since, recorded_since
from tests.factories import make_post, make_story, make_user


def test_creating_a_published_story_records_story_published_unsent(db_session):
    author = make_user(db_session)
    mark = outbox_mark()
    story = make_story(db_session, author, genre="horror")
    rows = outbox_since(mark)
    assert len(rows) == 1
    assert (rows[0].sent_at, rows[0].event_id) == (None, None)  # until the relay sends it
    [(channel, payload)] = recorded_since(mark)
    assert channel == "story:published"
    assert payload == {
        "timestamp": payload["timestamp"],
        "storyId": story.id,
        "title": story.title,
        "authorId": author.id,
        "genre": "horror",
        # What a card shows, so no reader's page queries the DB for it.
        "author": author.username,
        "excerpt": story.summary,
        "publishedAt": payload["publishedAt"],
    }
    assert story.published_at is not None
    assert datetime.fromisoformat(payload["publishedAt"]) == story.published_at


def test_published_events_carry_the_card_readers_show_and_a_draft_event_never_does(db_session):
    from fictures import feed
    from fictures.events.schema import StoryPublished, StoryUpdated

    author = make_user(db_session)
    mark = outbox_mark()
    story = make_story(db_session, author, summary="S" * 450)
    from_db = feed.story_card(story.id, -story.id)  # what the fan-out read before
    stories.update_story(session=db_session, author=author, story_id=story.id,
                         data=StoryUpdate(title="Edited"))
    stories.update_story(session=db_session, author=author, story_id=story.id,
                         data=StoryUpdate(summary="A secret plan for the sequel"), status=StoryStatus.draft)
    [published, updated, unpublished, _] = recorded_since(mark)
    card = feed.story_card_of(StoryPublished.model_validate(published[1]))
    # The same card as the DB gives (the fan-out's fallback for older events).
    assert card == from_db
    assert len(card.summary) == 201 and card.summary.endswith("…")
    assert feed.story_card_of(StoryUpdated.model_validate(updated[1])).title == "Edited"
    # Unpublished: the event names the story and nothing a card would show.
    assert unpublished[0] == "story:updated" and unpublished[1]["status"] == "draft"
    assert [unpublished[1][key] for key in ("author", "excerpt", "publishedAt")] == [None, None, None]
    assert "secret" not in json.dumps(unpublished[1])
    assert feed.story_card_of(StoryUpdated.model_validate(unpublished[1])) is None


def test_creating_a_draft_records_only_a_private_event(db_session):
    author = make_user(db_session)
    mark = outbox_mark()
    story = make_story(db_session, author, published=False)
    [(channel, payload)] = recorded_since(mark)
    assert channel == "private:draft"
    assert (payload["userId"], payload["storyId"], payload["action"]) == (
        author.id, story.id, "created",
    )
    assert story.published_at is None


def test_author_updates_a_published_story(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author)
    mark = outbox_mark()
    updated = stories.update_story(
        session=db_session, author=author, story_id=story.id,
        data=StoryUpdate(title="New title", genre="romance"),
    )
    assert (updated.title, updated.genre, updated.summary) == ("New title", "romance", "A summary.")
    [(channel, payload)] = recorded_since(mark)
    assert channel == "story:updated"
    assert (payload["storyId"], payload["title"], payload["genre"], payload["status"]) == (
        story.id, "New title", "romance", "published",
    )


def test_updating_a_draft_stays_private(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author, published=False)
    mark = outbox_mark()
    stories.update_story(
        session=db_session, author=author, story_id=story.id, data=StoryUpdate(title="Draft 2")
    )
    assert [(c, p["action"]) for c, p in recorded_since(mark)] == [("private:draft", "updated")]


def test_only_the_author_changes_a_story(db_session):
    author, other = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    mark = outbox_mark()
    with pytest.raises(Forbidden):
        stories.update_story(
            session=db_session, author=other, story_id=story.id, data=StoryUpdate(title="Mine")
        )
    db_session.rollback()
    with pytest.raises(Forbidden):
        stories.set_visibility(
            session=db_session, author=other, story_id=story.id, status=StoryStatus.draft
        )
    with pytest.raises(Forbidden):
        stories.delete_story(session=db_session, author=other, story_id=story.id)
    db_session.expire_all()
    assert db_session.get(Story, story.id).title == story.title
    assert db_session.get(Story, story.id).status == "published"
    assert recorded_since(mark) == []


@pytest.mark.parametrize("operation", ["update", "visibility", "delete", "own"])
def test_missing_story_is_not_found(db_session, operation):
    author = make_user(db_session)
    missing = 2**31 - 1
    calls = {
        "update": lambda: stories.update_story(
            session=db_session, author=author, story_id=missing, data=StoryUpdate(title="x")
        ),
        "visibility": lambda: stories.set_visibility(
            session=db_session, author=author, story_id=missing, status=StoryStatus.draft
        ),
        "delete": lambda: stories.delete_story(
            session=db_session, author=author, story_id=missing
        ),
        "own": lambda: stories.get_own_story(session=db_session, author=author, story_id=missing),
    }
    with pytest.raises(NotFound):
        calls[operation]()


def test_unpublishing_announces_the_status_and_tells_the_author(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author)
    mark = outbox_mark()
    stories.set_visibility(
        session=db_session, author=author, story_id=story.id, status=StoryStatus.draft
    )
    recorded = recorded_since(mark)
    assert [c for c, _ in recorded] == ["story:updated", "private:draft"]
    assert recorded[0][1]["status"] == "draft"
    assert recorded[1][1]["userId"] == author.id


def test_publishing_a_draft_announces_it(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author, published=False)
    mark = outbox_mark()
    published = stories.set_visibility(
        session=db_session, author=author, story_id=story.id, status=StoryStatus.published
    )
    assert published.status == "published" and published.published_at is not None
    assert [c for c, _ in recorded_since(mark)] == ["story:published"]


def test_setting_the_same_visibility_changes_nothing(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author)
    mark = outbox_mark()
    stories.set_visibility(
        session=db_session, author=author, story_id=story.id, status=StoryStatus.published
    )
    assert recorded_since(mark) == []


def test_deleting_a_story_deletes_its_posts(db_session):
    author, reader = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    make_post(db_session, reader, story)
    make_post(db_session, author, story)
    story_id = story.id
    mark = outbox_mark()
    stories.delete_story(session=db_session, author=author, story_id=story_id)
    assert db_session.get(Story, story_id) is None
    assert db_session.exec(select(Post).where(Post.story_id == story_id)).all() == []
    [(channel, payload)] = recorded_since(mark)
    assert (channel, payload["storyId"]) == ("story:deleted", story_id)


def test_deleting_a_draft_stays_private(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author, published=False)
    mark = outbox_mark()
    stories.delete_story(session=db_session, author=author, story_id=story.id)
    assert [(c, p["action"]) for c, p in recorded_since(mark)] == [("private:draft", "deleted")]


def test_who_can_read_what(db_session):
    author, other = make_user(db_session), make_user(db_session)
    published = make_story(db_session, author)
    draft = make_story(db_session, author, published=False)
    for viewer in (None, other, author):
        found = stories.get_readable_story(
            session=db_session, story_id=published.id, viewer=viewer
        )
        assert found.id == published.id
    for viewer in (None, other):
        with pytest.raises(NotFound):
            stories.get_readable_story(session=db_session, story_id=draft.id, viewer=viewer)
    assert stories.get_readable_story(
        session=db_session, story_id=draft.id, viewer=author
    ).id == draft.id


def test_public_list_has_no_drafts_and_filters_by_genre(db_session):
    author = make_user(db_session)
    old = make_story(db_session, author, genre="historical")
    new = make_story(db_session, author, genre="historical")
    draft = make_story(db_session, author, published=False, genre="historical")
    other_genre = make_story(db_session, author, genre="literary")
    listed = stories.list_published(session=db_session, genre="historical", limit=100)
    ids = [s.id for s in listed]
    assert new.id in ids and old.id in ids
    assert ids.index(new.id) < ids.index(old.id)  # newest first
    assert draft.id not in ids and other_genre.id not in ids
    assert {s.status for s in listed} == {"published"}
    assert len(stories.list_published(session=db_session, limit=1)) == 1


def test_authors_list_includes_their_drafts_only_theirs(db_session):
    author, other = make_user(db_session), make_user(db_session)
    published = make_story(db_session, author)
    draft = make_story(db_session, author, published=False)
    make_story(db_session, other)
    mine = stories.list_by_author(session=db_session, author=author)
    assert {s.id for s in mine} == {published.id, draft.id}


def test_outbox_rows_commit_with_the_change(db_session):
    """The story and its event row are one transaction: both are there, or neither."""
    author = make_user(db_session)
    mark = outbox_mark()
    story = make_story(db_session, author)
    # A different connection sees both at once.
    with db.session() as other:
        assert other.get(Story, story.id) is not None
        rows = other.exec(select(OutboxEvent).where(OutboxEvent.id > mark)).all()
        assert [r.channel for r in rows] == ["story:published"]


def _commits(session) -> list[int]:
    """Counts the session's commits from now on."""
    import sqlalchemy as sa

    commits: list[int] = []
    sa.event.listen(session, "after_commit", lambda s: commits.append(1))
    return commits


def test_saving_and_publishing_a_draft_is_one_commit_and_one_published_event(db_session):
    author = make_user(db_session)
    draft = make_story(db_session, author, published=False, title="Working title")
    mark = outbox_mark()
    commits = _commits(db_session)
    story = stories.update_story(
        session=db_session, author=author, story_id=draft.id,
        data=StoryUpdate(title="Final title", summary="Now with a summary."),
        status=StoryStatus.published,
    )
    assert len(commits) == 1
    assert (story.status, story.title, story.summary) == ("published", "Final title", "Now with a summary.")
    assert story.published_at is not None and story.published_at == story.updated_at
    # One event: readers get the story as published, edits included; no draft event.
    [(channel, payload)] = recorded_since(mark)
    assert channel == "story:published"
    assert (payload["storyId"], payload["title"]) == (story.id, "Final title")


def test_saving_a_published_story_as_a_draft_unpublishes_it_in_one_commit_without_leaking_the_edit(db_session):
    author = make_user(db_session)
    published = make_story(db_session, author, title="Public title")
    mark = outbox_mark()
    commits = _commits(db_session)
    story = stories.update_story(
        session=db_session, author=author, story_id=published.id,
        data=StoryUpdate(title="Secret new title"), status=StoryStatus.draft,
    )
    assert len(commits) == 1
    assert (story.status, story.title) == ("draft", "Secret new title")
    recorded = recorded_since(mark)
    assert [channel for channel, _ in recorded] == ["story:updated", "private:draft"]
    public, private = recorded[0][1], recorded[1][1]
    # Readers' pages drop it, under the title they knew.
    assert (public["storyId"], public["status"], public["title"]) == (story.id, "draft", "Public title")
    assert "Secret new title" not in str(public)
    assert (private["userId"], private["action"], private["title"]) == (author.id, "updated", "Secret new title")


def test_saving_with_the_status_it_has_is_a_plain_update(db_session):
    author = make_user(db_session)
    published = make_story(db_session, author)
    mark = outbox_mark()
    stories.update_story(
        session=db_session, author=author, story_id=published.id,
        data=StoryUpdate(title="Retitled"), status=StoryStatus.published,
    )
    [(channel, payload)] = recorded_since(mark)
    assert (channel, payload["title"], payload["status"]) == ("story:updated", "Retitled", "published")
