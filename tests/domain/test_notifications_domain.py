"""fictures.notifications: written with the post, for the story's author only, read by them only."""

import pytest
from sqlmodel import select

from fictures import notifications, posts, stories
from fictures.errors import NotFound
from fictures.models import Notification, PostCreate, StoryStatus, StoryUpdate
from tests.conftest import outbox_mark, recorded_since
from tests.factories import make_post, make_story, make_user


def _rows(session, user_id: int) -> list[Notification]:
    session.expire_all()
    return list(session.exec(select(Notification).where(Notification.user_id == user_id)))


def test_a_post_on_your_story_notifies_you_in_the_same_transaction(db_session):
    author, reader = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author, title="The Long Road")
    mark = outbox_mark()
    post = make_post(db_session, reader, story, title="Loved it")
    [row] = _rows(db_session, author.id)
    assert (row.kind, row.story_id, row.post_id, row.actor, row.title, row.story_title) == (
        "post", story.id, post.id, reader.username, "Loved it", "The Long Road",
    )
    assert row.read_at is None and row.created_at == post.created_at
    # The post's event and the notification's, recorded in the post's transaction.
    [(_, created), (channel, event)] = recorded_since(mark)
    assert created["postId"] == post.id
    assert channel == "private:notification"
    assert {k: event[k] for k in ("userId", "notificationId", "storyId", "postId", "actor", "title",
                                  "storyTitle")} == {
        "userId": author.id, "notificationId": row.id, "storyId": story.id, "postId": post.id,
        "actor": reader.username, "title": "Loved it", "storyTitle": "The Long Road",
    }
    assert _rows(db_session, reader.id) == []


def test_no_notification_for_your_own_post(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author)
    mark = outbox_mark()
    make_post(db_session, author, story)
    assert _rows(db_session, author.id) == []
    assert [channel for channel, _ in recorded_since(mark)] == ["post:created"]


def test_drafts_never_produce_notifications(db_session):
    author, reader = make_user(db_session), make_user(db_session)
    mark = outbox_mark()
    draft = make_story(db_session, author, published=False)
    stories.update_story(session=db_session, author=author, story_id=draft.id,
                         data=StoryUpdate(title="Still a draft"))
    with pytest.raises(NotFound):
        posts.create_post(session=db_session, author=reader, story_id=draft.id,
                          data=PostCreate(title="t", body="b"))
    # Published, posted on, then unpublished: the post it had stays its author's
    # notification, and the draft gets no new ones.
    stories.set_visibility(session=db_session, author=author, story_id=draft.id,
                           status=StoryStatus.published)
    make_post(db_session, reader, draft)
    stories.set_visibility(session=db_session, author=author, story_id=draft.id,
                           status=StoryStatus.draft)
    with pytest.raises(NotFound):
        make_post(db_session, reader, draft)
    assert len(_rows(db_session, author.id)) == 1
    channels = [channel for channel, _ in recorded_since(mark)]
    assert channels.count("private:notification") == 1


def test_only_the_recipient_marks_a_notification_read(db_session):
    author, reader, stranger = make_user(db_session), make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    make_post(db_session, reader, story)
    [row] = _rows(db_session, author.id)
    for someone in (reader, stranger):
        with pytest.raises(NotFound):
            notifications.mark_read(session=db_session, user=someone, notification_id=row.id)
    with pytest.raises(NotFound):
        notifications.mark_read(session=db_session, user=author, notification_id=2**31 - 1)
    assert notifications.mark_all_read(session=db_session, user=stranger) == 0
    [row] = _rows(db_session, author.id)
    assert row.read_at is None

    mark = outbox_mark()
    notifications.mark_read(session=db_session, user=author, notification_id=row.id)
    notifications.mark_read(session=db_session, user=author, notification_id=row.id)  # again: nothing
    [row] = _rows(db_session, author.id)
    assert row.read_at is not None
    [(channel, event)] = recorded_since(mark)  # one event: the second call changed nothing
    assert channel == "private:notifications-read"
    assert (event["userId"], event["notificationIds"]) == (author.id, [row.id])


def test_mark_all_read_marks_the_users_own_and_records_one_event(db_session):
    author, other_author, reader = make_user(db_session), make_user(db_session), make_user(db_session)
    mine, theirs = make_story(db_session, author), make_story(db_session, other_author)
    for _ in range(3):
        make_post(db_session, reader, mine)
    make_post(db_session, reader, theirs)
    assert notifications.unread_count(session=db_session, user_id=author.id) == 3

    mark = outbox_mark()
    assert notifications.mark_all_read(session=db_session, user=author) == 3
    assert notifications.mark_all_read(session=db_session, user=author) == 0
    assert notifications.unread_count(session=db_session, user_id=author.id) == 0
    assert notifications.unread_count(session=db_session, user_id=other_author.id) == 1
    [(channel, event)] = recorded_since(mark)
    assert channel == "private:notifications-read" and event["userId"] == author.id
    assert len(event["notificationIds"]) == 3


def test_snapshot_lists_the_newest_first_and_counts_all_unread(db_session):
    author, reader = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    titles = [f"Post {i}" for i in range(notifications.PAGE_SIZE + 2)]
    for title in titles:
        make_post(db_session, reader, story, title=title)
    snap = notifications.snapshot(session=db_session, user_id=author.id)
    assert snap.unread == len(titles)
    assert [c.title for c in snap.items] == titles[::-1][: notifications.PAGE_SIZE]
    assert snap.items[0].created_at.endswith("Z") and not snap.items[0].read
    assert notifications.snapshot_for(0) == notifications.Snapshot()


def test_a_notification_outlives_its_story(db_session):
    author, reader = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author, title="Gone Tomorrow")
    make_post(db_session, reader, story)
    stories.delete_story(session=db_session, author=author, story_id=story.id)
    [row] = _rows(db_session, author.id)
    assert row.story_title == "Gone Tomorrow"
    assert notifications.story_of(session=db_session, user=author, notification_id=row.id) == story.id
