"""Story operations: validate, write the DB and record the event, in one transaction.

The only code that changes stories; the writing page and the REST API both call it.
Drafts only ever produce private events (for their author).
"""

from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import defer
from sqlmodel import Session, col, select

from fictures.errors import Forbidden, NotFound
from fictures.events import outbox
from fictures.events.schema import (
    CommunityEvent,
    DraftChanged,
    StoryDeleted,
    StoryPublished,
    StoryUpdated,
    excerpt,
)
from fictures.models import (
    Post,
    SeenStory,
    Story,
    StoryCreate,
    StoryRead,
    StoryStatus,
    StoryUpdate,
    User,
    utcnow,
)

logger = logging.getLogger(__name__)

PUBLISHED = StoryStatus.published.value
DRAFT = StoryStatus.draft.value


def _card(story: Story, author: User) -> dict:
    """What a story card shows, for the events of a published story."""
    return {"author": author.username, "excerpt": excerpt(story.summary), "published_at": story.published_at}


def _published_event(story: Story, author: User) -> StoryPublished:
    return StoryPublished(
        story_id=story.id, title=story.title, author_id=story.author_id, genre=story.genre,
        **_card(story, author),
    )


def _updated_event(story: Story, author: User) -> StoryUpdated:
    return StoryUpdated(
        story_id=story.id, title=story.title, genre=story.genre, status=story.status,
        **(_card(story, author) if story.status == PUBLISHED else {}),
    )


def _draft_event(story: Story, action: str) -> DraftChanged:
    return DraftChanged(
        user_id=story.author_id, story_id=story.id, action=action, title=story.title
    )


def _commit(session: Session, story: Story | None = None) -> None:
    outbox.commit(session, *([story] if story is not None and story.id is not None else []))


def get_own_story(*, session: Session, author: User, story_id: int) -> Story:
    """A story its author may change: 404 if missing, 403 if someone else's."""
    story = session.get(Story, story_id)
    if story is None:
        raise NotFound(f"story {story_id} not found")
    if story.author_id != author.id:
        raise Forbidden("only the author can change this story")
    return story


def get_readable_story(*, session: Session, story_id: int, viewer: User | None) -> Story:
    """A published story, or the viewer's own draft; anything else is 404."""
    story = session.get(Story, story_id)
    if story is None or (
        story.status != PUBLISHED and (viewer is None or viewer.id != story.author_id)
    ):
        raise NotFound(f"story {story_id} not found")
    return story


def list_published(
    *,
    session: Session,
    genre: str | None = None,
    limit: int = 50,
    before: int | tuple[datetime, int] | None = None,
    without_content: bool = False,
) -> list[Story]:
    """Published stories, newest first (by when they were published).

    `without_content`: leave out the story's text (a list of cards needs its
    summary, not 50 chapters); reading `content` from such a row is an error.

    `before`: the page after that story in this order (a keyset cursor: stories
    published meanwhile shift nothing), given as (published_at, id) of the last
    story shown, or as its id (the REST API's `?before=`). A story id that was
    never published, or is gone, marks no place in the list: 404 (one unpublished
    since still marks its place).
    """
    query = select(Story).where(Story.status == PUBLISHED)
    if without_content:
        query = query.options(defer(Story.content, raiseload=True))
    if genre:
        query = query.where(Story.genre == genre)
    if before is not None:
        if isinstance(before, int):
            cursor = session.get(Story, before)
            if cursor is None or cursor.published_at is None:
                raise NotFound(f"story {before} not found (the before= cursor): list from the first page again")
            before = (cursor.published_at, cursor.id)
        at, story_id = before
        query = query.where(
            sa.or_(
                col(Story.published_at) < at,
                sa.and_(col(Story.published_at) == at, col(Story.id) < story_id),
            )
        )
    query = query.order_by(col(Story.published_at).desc(), col(Story.id).desc()).limit(limit)
    return list(session.exec(query))


def list_by_author(*, session: Session, author: User) -> list[Story]:
    query = (
        select(Story)
        .where(Story.author_id == author.id)
        .order_by(col(Story.updated_at).desc(), col(Story.id).desc())
    )
    return list(session.exec(query))


# A new story's row is inserted with a Core statement, not through the ORM's unit
# of work: publishing is the path an author waits on, and its way to the PUBLISH
# runs this (benchmarks/publish_floor.py; README "Performance").
_INSERT_STORY = Story.__table__.insert()


def create_story(*, session: Session, author: User, data: StoryCreate) -> Story:
    now = utcnow()
    values = {
        "author_id": author.id,
        "title": data.title,
        "genre": data.genre,
        "summary": data.summary,
        "content": data.content,
        "status": data.status.value,
        "created_at": now,
        "updated_at": now,
        "published_at": now if data.status == StoryStatus.published else None,
    }
    # The id the event needs, inside the transaction.
    [story_id] = session.connection().execute(_INSERT_STORY, values).inserted_primary_key
    story = Story(id=story_id, **values)  # what the event describes
    if story.status == PUBLISHED:
        outbox.record(session, _published_event(story, author))
    else:
        outbox.record(session, _draft_event(story, "created"))
    _commit(session)
    logger.info("Story %s created by user %s (%s)", story_id, values["author_id"], story.status)
    # As stored, loaded once the relay has the event.
    return session.get_one(Story, story_id)


def update_story(
    *,
    session: Session,
    author: User,
    story_id: int,
    data: StoryUpdate,
    status: StoryStatus | None = None,
) -> Story:
    """Edit a story; with `status`, also publish or unpublish it, in the same
    transaction (one commit, one set of events: a draft published with its edits
    is one `story:published` carrying them)."""
    story = get_own_story(session=session, author=author, story_id=story_id)
    target = status.value if status is not None else story.status
    now = utcnow()
    if story.status == PUBLISHED and target != PUBLISHED:
        # Unpublished before the edits apply: the public event names the story
        # as readers knew it, never the draft's new title.
        story.status = target
        session.add(story)
        outbox.record(session, _updated_event(story, author))
    changes = data.model_dump(exclude_unset=True)
    for name, value in changes.items():
        setattr(story, name, value)
    story.updated_at = now
    if target == PUBLISHED and story.status != PUBLISHED:
        story.status = PUBLISHED
        story.published_at = now
        event: CommunityEvent = _published_event(story, author)
    elif target == PUBLISHED:
        event = _updated_event(story, author)
    else:
        event = _draft_event(story, "updated")
    session.add(story)
    outbox.record(session, event)
    _commit(session, story)
    if status is not None:
        logger.info("Story %s edited, now %s", story.id, story.status)
    return story


def set_visibility(
    *, session: Session, author: User, story_id: int, status: StoryStatus
) -> Story:
    story = get_own_story(session=session, author=author, story_id=story_id)
    if story.status == status.value:
        return story
    story.status = status.value
    story.updated_at = utcnow()
    if status == StoryStatus.published:
        story.published_at = story.updated_at
        outbox.record(session, _published_event(story, author))
    else:
        # Readers' pages drop it; nothing about the draft beyond this is ever public.
        outbox.record(session, _updated_event(story, author))
        outbox.record(session, _draft_event(story, "updated"))
    session.add(story)
    _commit(session, story)
    logger.info("Story %s is now %s", story.id, story.status)
    return story


def delete_story(*, session: Session, author: User, story_id: int) -> None:
    story = get_own_story(session=session, author=author, story_id=story_id)
    if story.status == PUBLISHED:
        event: StoryDeleted | DraftChanged = StoryDeleted(story_id=story.id)
    else:
        event = _draft_event(story, "deleted")
    for model in (Post, StoryRead, SeenStory):
        for row in session.exec(select(model).where(model.story_id == story.id)):
            session.delete(row)
    # Deleted before the event is recorded: see outbox.record.
    session.delete(story)
    outbox.record(session, event)
    _commit(session)
    logger.info("Story %s deleted by user %s", story_id, author.id)
