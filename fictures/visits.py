"""Visits to /community, and the stories a reader has seen: "N new stories since your last visit".

A logged-in reader's visit begins when they open /community and

- they never visited before (then nothing is "new" yet), or
- their current visit began `FICTURES_VISIT_MINUTES` (60) or more ago, or
- they logged in (this tab's token was issued) after it began: logging in again
  is coming back.

Beginning a visit moves `User.last_visit_at` to `previous_visit_at` and sets it
to now, in one conditional UPDATE (compare-and-set on the old value), so two
tabs opening at once begin one visit, not two (the second would otherwise move
"now" into `previous_visit_at` and hide everything).

A story is new since the last visit if someone else published it after the
previous visit began and the reader has not seen it (`SeenStory`): its card was
in view for a second, or they opened it. Seen is per account, so it holds in
every tab and browser, and after a reload.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from fictures import db
from fictures.errors import NotFound
from fictures.models import SeenStory, Story, StoryStatus, User, utcnow
from fictures.settings import settings

logger = logging.getLogger(__name__)

PUBLISHED = StoryStatus.published.value
# Cards a page shows, and so the most ids one "new since" query takes.
MAX_IDS = 500


def _visit_of(session: Session, user_id: int) -> tuple[datetime | None, datetime | None]:
    row = session.exec(
        select(User.last_visit_at, User.previous_visit_at).where(User.id == user_id)
    ).first()
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return row[0], row[1]


def _due(last: datetime | None, login_at: datetime | None, now: datetime) -> bool:
    if last is None:
        return True
    if now - last >= timedelta(minutes=settings.visit_minutes):
        return True
    return login_at is not None and login_at > last


def enter_community(
    *, session: Session, user_id: int, login_at: datetime | None, now: datetime | None = None
) -> datetime | None:
    """The reader opens /community: begin a new visit if one is due.

    Returns when their previous visit began (None: no previous visit, so
    nothing is new since it)."""
    now = now or utcnow()
    for _ in range(3):
        last, previous = _visit_of(session, user_id)
        if not _due(last, login_at, now):
            return previous
        same_visit = col(User.last_visit_at).is_(None) if last is None else User.last_visit_at == last
        result = session.exec(
            sa.update(User)
            .where(col(User.id) == user_id, same_visit)
            .values(previous_visit_at=last, last_visit_at=now)
        )
        session.commit()
        if result.rowcount == 1:
            logger.info("User %s began a visit (previous one began %s)", user_id, last)
            return last
        # Another tab began one meanwhile: read it again (it is not due any more).
    return _visit_of(session, user_id)[1]


def previous_visit(*, session: Session, user_id: int) -> datetime | None:
    """When the reader's previous visit began (what `enter_community` returned
    for the current one), without beginning a new one."""
    return _visit_of(session, user_id)[1]


def new_since(
    *, session: Session, user_id: int, since: datetime | None, story_ids: list[int]
) -> list[int]:
    """Of `story_ids`, those others published after `since` that the reader has not seen."""
    if since is None or not story_ids:
        return []
    seen = select(SeenStory.story_id).where(SeenStory.user_id == user_id)
    rows = session.exec(
        select(Story.id).where(
            col(Story.id).in_(story_ids[:MAX_IDS]),
            Story.status == PUBLISHED,
            col(Story.published_at) > since,
            Story.author_id != user_id,
            col(Story.id).not_in(seen),
        )
    )
    found = set(rows)
    return [story_id for story_id in story_ids if story_id in found]


def mark_seen(*, session: Session, user_id: int, story_id: int) -> bool:
    """The reader has seen a published story; True if that is news (first time).

    Anything but a published story is NotFound: a draft is never "seen", nor
    revealed to exist."""
    story = session.get(Story, story_id)
    if story is None or story.status != PUBLISHED:
        raise NotFound(f"story {story_id} not found")
    inserted = db.insert_ignore(
        session, SeenStory, ["user_id", "story_id"], user_id=user_id, story_id=story_id, seen_at=utcnow()
    )
    session.commit()
    return inserted


def seen_ids(*, session: Session, user_id: int) -> set[int]:
    return set(session.exec(select(SeenStory.story_id).where(SeenStory.user_id == user_id)))
