"""fictures.posts: posts live on published stories; only their author changes them."""

import pytest

from fictures import posts, stories
from fictures.errors import Forbidden, NotFound
from fictures.models import Post, PostCreate, PostType, PostUpdate, StoryStatus
from tests.conftest import outbox_mark, outbox_since, recorded_since
from tests.factories import make_post, make_story, make_user


def test_creating_a_post_records_post_created(db_session):
    author, reader = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    mark = outbox_mark()
    post = make_post(db_session, reader, story, title="Wow", type="question")
    assert (post.story_id, post.author_id, post.type) == (story.id, reader.id, "question")
    rows = outbox_since(mark)
    assert all(row.sent_at is None for row in rows)
    # The post's event, then the story author's notification (tests/domain/test_notifications_domain.py).
    [(channel, payload), (notification, _)] = recorded_since(mark)
    assert (channel, notification) == ("post:created", "private:notification")
    assert {k: payload[k] for k in ("postId", "storyId", "authorId", "title", "type")} == {
        "postId": post.id, "storyId": story.id, "authorId": reader.id, "title": "Wow",
        "type": "question",
    }
    # It carries the card readers' pages show, the same as the DB gives.
    from fictures import feed
    from fictures.events.schema import PostCreated

    assert (payload["author"], payload["storyTitle"]) == (reader.username, story.title)
    assert feed.post_card_of(PostCreated.model_validate(payload)) == feed.post_card(post.id, -post.id)


def test_no_posts_on_drafts_or_missing_stories(db_session):
    author = make_user(db_session)
    draft = make_story(db_session, author, published=False)
    mark = outbox_mark()
    data = PostCreate(title="t", body="b")
    with pytest.raises(NotFound):
        posts.create_post(session=db_session, author=author, story_id=draft.id, data=data)
    with pytest.raises(NotFound):
        posts.create_post(session=db_session, author=author, story_id=2**31 - 1, data=data)
    assert recorded_since(mark) == []
    assert posts.list_for_story(session=db_session, story_id=draft.id) == []


def test_author_updates_own_post(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author)
    post = make_post(db_session, author, story)
    mark = outbox_mark()
    updated = posts.update_post(
        session=db_session, author=author, post_id=post.id,
        data=PostUpdate(body="Second thoughts", type=PostType.announcement),
    )
    assert (updated.body, updated.type, updated.title) == (
        "Second thoughts", "announcement", post.title,
    )
    [(channel, payload)] = recorded_since(mark)
    assert (channel, payload["postId"], payload["storyId"]) == ("post:updated", post.id, story.id)


def test_only_the_author_changes_a_post(db_session):
    author, reader = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    post = make_post(db_session, reader, story)
    mark = outbox_mark()
    with pytest.raises(Forbidden):
        posts.update_post(
            session=db_session, author=author, post_id=post.id, data=PostUpdate(body="mine")
        )
    with pytest.raises(Forbidden):
        posts.delete_post(session=db_session, author=author, post_id=post.id)
    db_session.expire_all()
    assert db_session.get(Post, post.id).body == post.body
    assert recorded_since(mark) == []


def test_author_deletes_own_post(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author)
    post = make_post(db_session, author, story)
    post_id = post.id
    mark = outbox_mark()
    posts.delete_post(session=db_session, author=author, post_id=post_id)
    assert db_session.get(Post, post_id) is None
    [(channel, payload)] = recorded_since(mark)
    assert (channel, payload["postId"], payload["storyId"]) == ("post:deleted", post_id, story.id)


def test_missing_post_is_not_found(db_session):
    author = make_user(db_session)
    with pytest.raises(NotFound):
        posts.update_post(session=db_session, author=author, post_id=2**31 - 1, data=PostUpdate())
    with pytest.raises(NotFound):
        posts.delete_post(session=db_session, author=author, post_id=2**31 - 1)


def test_posts_of_an_unpublished_story_are_frozen_and_silent(db_session):
    author, reader = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    post = make_post(db_session, reader, story)
    stories.set_visibility(
        session=db_session, author=author, story_id=story.id, status=StoryStatus.draft
    )
    mark = outbox_mark()
    with pytest.raises(NotFound):
        posts.update_post(
            session=db_session, author=reader, post_id=post.id, data=PostUpdate(body="x")
        )
    with pytest.raises(NotFound):
        posts.delete_post(session=db_session, author=reader, post_id=post.id)
    assert recorded_since(mark) == []


def test_recent_posts_only_from_published_stories(db_session):
    author = make_user(db_session)
    visible = make_story(db_session, author)
    hidden = make_story(db_session, author)
    shown = make_post(db_session, author, visible)
    unshown = make_post(db_session, author, hidden)
    stories.set_visibility(
        session=db_session, author=author, story_id=hidden.id, status=StoryStatus.draft
    )
    recent = [p.id for p in posts.list_recent(session=db_session, limit=50)]
    assert shown.id in recent
    assert unshown.id not in recent
    assert [p.id for p in posts.list_for_story(session=db_session, story_id=visible.id)] == [
        shown.id
    ]
