"""Community post operations: validate, write the DB and record the event.

Posts only exist on published stories, so every post event is public. A post
on someone else's story notifies the story's author (fictures.notifications),
in the same transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from fictures import notifications, stories
from fictures.errors import Forbidden, NotFound
from fictures.events import outbox
from fictures.events.schema import PostCreated, PostDeleted, PostUpdated, excerpt
from fictures.models import Post, PostCreate, PostUpdate, Story, User, utcnow

logger = logging.getLogger(__name__)


def _published_story(session: Session, story_id: int) -> Story:
    story = session.get(Story, story_id)
    if story is None or story.status != stories.PUBLISHED:
        raise NotFound(f"story {story_id} not found")
    return story


def _own_post(session: Session, author: User, post_id: int) -> Post:
    post = session.get(Post, post_id)
    story = session.get(Story, post.story_id) if post is not None else None
    # A post on an unpublished story is hidden with it: changing it would
    # announce a draft's activity on the public channels.
    if post is None or story is None or story.status != stories.PUBLISHED:
        raise NotFound(f"post {post_id} not found")
    if post.author_id != author.id:
        raise Forbidden("only the author can change this post")
    return post


def _after(query, before: tuple[datetime, int] | None):
    """Newest first, from after `before` = (created_at, id) of the last post shown."""
    if before is not None:
        at, post_id = before
        query = query.where(
            sa.or_(col(Post.created_at) < at, sa.and_(col(Post.created_at) == at, col(Post.id) < post_id))
        )
    return query.order_by(col(Post.created_at).desc(), col(Post.id).desc())


def list_for_story(
    *, session: Session, story_id: int, limit: int | None = None, before: tuple[datetime, int] | None = None
) -> list[Post]:
    """A story's posts, newest first: all of them, or `limit` after the cursor `before`."""
    query = _after(select(Post).where(Post.story_id == story_id), before)
    if limit is not None:
        query = query.limit(limit)
    return list(session.exec(query))


def page_for_story(*, session: Session, story_id: int, limit: int, before: int | None = None) -> list[Post]:
    """A page of a story's posts, newest first (by id: the order they were
    written in); `before`: only those older than that post."""
    query = select(Post).where(Post.story_id == story_id)
    if before is not None:
        query = query.where(col(Post.id) < before)
    return list(session.exec(query.order_by(col(Post.id).desc()).limit(limit)))


def list_recent(
    *, session: Session, limit: int = 20, before: tuple[datetime, int] | None = None
) -> list[Post]:
    """Posts on published stories, newest first; `before`: the page after that cursor."""
    query = select(Post).join(Story, Story.id == Post.story_id).where(Story.status == stories.PUBLISHED)
    return list(session.exec(_after(query, before).limit(limit)))


def create_post(*, session: Session, author: User, story_id: int, data: PostCreate) -> Post:
    story = _published_story(session, story_id)
    now = utcnow()
    post = Post(
        story_id=story_id,
        author_id=author.id,
        title=data.title,
        body=data.body,
        type=data.type.value,
        created_at=now,
        updated_at=now,
    )
    session.add(post)
    session.flush()
    outbox.record(
        session,
        PostCreated(
            post_id=post.id,
            story_id=story_id,
            author_id=author.id,
            title=post.title,
            type=post.type,
            author=author.username,
            excerpt=excerpt(post.body),
            story_title=story.title,
            created_at=post.created_at,
        ),
    )
    notifications.notify_post(session=session, post=post, story=story, actor=author)
    outbox.commit(session, post)
    logger.info("Post %s created on story %s by user %s", post.id, story_id, author.id)
    return post


def update_post(*, session: Session, author: User, post_id: int, data: PostUpdate) -> Post:
    post = _own_post(session, author, post_id)
    for name, value in data.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(post, name, getattr(value, "value", value))
    post.updated_at = utcnow()
    session.add(post)
    outbox.record(session, PostUpdated(post_id=post.id, story_id=post.story_id))
    outbox.commit(session, post)
    return post


def delete_post(*, session: Session, author: User, post_id: int) -> None:
    post = _own_post(session, author, post_id)
    # Deleted before the event is recorded: see outbox.record.
    session.delete(post)
    outbox.record(session, PostDeleted(post_id=post.id, story_id=post.story_id))
    outbox.commit(session)
    logger.info("Post %s deleted by user %s", post_id, author.id)
