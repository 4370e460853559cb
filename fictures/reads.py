"""Read receipts: who opened which published story ("Read by N").

A reader is an account (`"u:<user id>"`) or, for someone who is not logged in,
a browser (`"b:<browser id>"`: a random id the browser keeps in localStorage,
see `fictures.state.BrowserState`). Each reader counts once per story (a
unique row, inserted with `ON CONFLICT DO NOTHING`, so concurrent opens on any
worker neither fail nor count twice). The author never counts. Drafts are never
counted, and someone else's draft is "not found", as everywhere else.

The callers (the story page, the REST API) bound what one client can write:
an account adds at most one row per published story; a browser that is not
logged in is counted only within `FICTURES_READ_LIMIT_PER_ADDRESS`
(fictures.live_receipts), since a client can make up browser ids without end.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass

from sqlmodel import Session, col, func, select

from fictures import db
from fictures.errors import NotFound
from fictures.models import Story, StoryRead, StoryStatus, User, utcnow

logger = logging.getLogger(__name__)

PUBLISHED = StoryStatus.published.value
_BROWSER_ID = re.compile(r"[0-9a-f]{32}")


def new_browser_id() -> str:
    return uuid.uuid4().hex


def is_browser_id(value: object) -> bool:
    """Whether `value` is a browser id this app hands out (32 lowercase hex digits)."""
    return isinstance(value, str) and _BROWSER_ID.fullmatch(value) is not None


def reader_key(*, viewer: User | None, browser_id: str | None) -> str:
    """The reader a visit is counted as: the account if logged in, else the browser."""
    if viewer is not None:
        return f"u:{viewer.id}"
    if not is_browser_id(browser_id):
        raise ValueError("a reader who is not logged in needs a valid browser id")
    return f"b:{browser_id}"


@dataclass(frozen=True)
class ReadResult:
    story_id: int
    author_id: int
    published: bool
    counted: bool  # this call added a reader
    reads: int  # the story's readers after it


def _readable(session: Session, story_id: int, viewer: User | None) -> Story:
    story = session.get(Story, story_id)
    if story is None or (
        story.status != PUBLISHED and (viewer is None or viewer.id != story.author_id)
    ):
        raise NotFound(f"story {story_id} not found")
    return story


def count_reads(session: Session, story_id: int) -> int:
    return session.exec(
        select(func.count()).select_from(StoryRead).where(StoryRead.story_id == story_id)
    ).one()


def counts(session: Session, story_ids: list[int]) -> dict[int, int]:
    """Readers of each of `story_ids` that is published (others, and stories
    nobody read, are left out: an unpublished story's readers are its author's
    business)."""
    if not story_ids:
        return {}
    rows = session.exec(
        select(StoryRead.story_id, func.count())
        .join(Story, col(Story.id) == StoryRead.story_id)
        .where(col(StoryRead.story_id).in_(story_ids), Story.status == PUBLISHED)
        .group_by(StoryRead.story_id)
    )
    return {story_id: n for story_id, n in rows}


def counts_for_author(session: Session, author_id: int) -> dict[int, int]:
    """Readers of each of an author's stories that someone read."""
    rows = session.exec(
        select(StoryRead.story_id, func.count())
        .join(Story, col(Story.id) == StoryRead.story_id)
        .where(Story.author_id == author_id)
        .group_by(StoryRead.story_id)
    )
    return {story_id: n for story_id, n in rows}


def has_read(*, session: Session, story_id: int, viewer: User | None, browser_id: str | None) -> bool:
    reader = reader_key(viewer=viewer, browser_id=browser_id)
    found = session.exec(
        select(StoryRead.id).where(StoryRead.story_id == story_id, StoryRead.reader == reader)
    ).first()
    return found is not None


def get_reads(*, session: Session, story_id: int, viewer: User | None) -> ReadResult:
    """A story's readers: published stories for anyone, a draft for its author only."""
    story = _readable(session, story_id, viewer)
    return ReadResult(
        story.id, story.author_id, story.status == PUBLISHED, False, count_reads(session, story.id)
    )


def record_read(
    *, session: Session, story_id: int, viewer: User | None, browser_id: str | None = None
) -> ReadResult:
    """`viewer` (or, not logged in, the browser `browser_id`) opened the story.

    Counted once per reader, only for a published story and not for its author.
    A missing story, or someone else's draft, is NotFound.
    """
    story = _readable(session, story_id, viewer)
    published = story.status == PUBLISHED
    counted = False
    if published and (viewer is None or viewer.id != story.author_id):
        counted = db.insert_ignore(
            session,
            StoryRead,
            ["story_id", "reader"],
            story_id=story.id,
            reader=reader_key(viewer=viewer, browser_id=browser_id),
            created_at=utcnow(),
        )
        session.commit()
    return ReadResult(story.id, story.author_id, published, counted, count_reads(session, story.id))
