"""Notifications: what a user should hear about (someone posted on their story).

A notification is written by the domain function that causes it, in the same
transaction, with its event (`NotificationCreated`, private to the recipient)
in the outbox: it exists exactly when the post does, and reaches the
recipient's open tabs (fictures.bell), their event stream and, with no tab
open, their browsers by Web Push (fictures.push) through the usual relay.

Only the recipient reads or marks their notifications: every function here
takes the acting user and touches that user's rows only; someone else's
notification is a 404, exactly like one that does not exist.
"""

from __future__ import annotations

import dataclasses
import logging

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from fictures import db
from fictures.errors import NotFound
from fictures.events import outbox
from fictures.events.schema import NotificationCreated, NotificationsRead
from fictures.models import Notification, Post, Story, User, utcnow

logger = logging.getLogger(__name__)

KIND_POST = "post"
# What the bell lists (the newest first); the unread count covers them all.
PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclasses.dataclass(frozen=True)
class NotificationCard:
    """One notification as the bell shows it (plain data: never decoded as markup)."""

    id: int = 0
    kind: str = ""
    story_id: int = 0
    post_id: int = 0
    actor: str = ""
    title: str = ""
    story_title: str = ""
    # ISO 8601 in UTC ("2026-11-28T14:00:00Z"): the browser shows it relative to now.
    created_at: str = ""
    read: bool = False


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What a user's bell shows: the unread count and the newest notifications."""

    unread: int = 0
    items: tuple[NotificationCard, ...] = ()


def card(row: Notification) -> NotificationCard:
    return NotificationCard(
        id=row.id or 0,
        kind=row.kind,
        story_id=row.story_id,
        post_id=row.post_id or 0,
        actor=row.actor,
        title=row.title,
        story_title=row.story_title,
        created_at=row.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        read=row.read_at is not None,
    )


def card_from_event(event: NotificationCreated) -> NotificationCard:
    return NotificationCard(
        id=event.notification_id,
        kind=event.kind,
        story_id=event.story_id,
        post_id=event.post_id or 0,
        actor=event.actor,
        title=event.title,
        story_title=event.story_title,
        created_at=event.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


# ------------------------------------------------------------------ writes


def notify_post(*, session: Session, post: Post, story: Story, actor: User) -> Notification | None:
    """Inside the transaction that creates `post`: notify the story's author,
    unless they wrote the post themselves. The caller commits."""
    if story.author_id == actor.id:
        return None
    row = Notification(
        user_id=story.author_id,
        kind=KIND_POST,
        story_id=story.id,
        post_id=post.id,
        actor=actor.username,
        title=post.title,
        story_title=story.title,
        created_at=post.created_at,
    )
    session.add(row)
    session.flush()  # the id the event carries
    outbox.record(
        session,
        NotificationCreated(
            user_id=row.user_id,
            notification_id=row.id,
            kind=row.kind,
            story_id=row.story_id,
            post_id=row.post_id,
            actor=row.actor,
            title=row.title,
            story_title=row.story_title,
            timestamp=row.created_at,
        ),
    )
    return row


def _own(session: Session, user: User, notification_id: int) -> Notification:
    row = session.get(Notification, notification_id)
    if row is None or row.user_id != user.id:
        # Someone else's is "not found" too: ids reveal nothing about other users.
        raise NotFound(f"notification {notification_id} not found")
    return row


def mark_read(*, session: Session, user: User, notification_id: int) -> Notification:
    """Mark one of `user`'s notifications read (again: nothing changes, no event)."""
    row = _own(session, user, notification_id)
    if row.read_at is None:
        row.read_at = utcnow()
        session.add(row)
        outbox.record(session, NotificationsRead(user_id=user.id, notification_ids=[row.id]))
        outbox.commit(session, row)
    return row


def mark_all_read(*, session: Session, user: User) -> int:
    """Mark every unread notification of `user` read; returns how many there were.
    No event when there were none, so repeating it costs the stream nothing."""
    unread = list(
        session.exec(
            select(Notification.id).where(
                Notification.user_id == user.id, col(Notification.read_at).is_(None)
            )
        )
    )
    if not unread:
        return 0
    session.exec(
        update(Notification)
        .where(col(Notification.id).in_(unread), col(Notification.read_at).is_(None))
        .values(read_at=utcnow())
    )
    outbox.record(session, NotificationsRead(user_id=user.id, notification_ids=sorted(unread)))
    outbox.commit(session)
    return len(unread)


# ------------------------------------------------------------------ reads


def unread_count(*, session: Session, user_id: int) -> int:
    return session.exec(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user_id, col(Notification.read_at).is_(None))
    ).one()


def list_for(
    *, session: Session, user_id: int, limit: int = PAGE_SIZE, before: int | None = None
) -> list[Notification]:
    """`user_id`'s newest notifications, newest first (`before`: older than that one)."""
    query = select(Notification).where(Notification.user_id == user_id)
    if before is not None:
        query = query.where(col(Notification.id) < before)
    # One more than a page at most: the API reads one ahead to know if there is a next page.
    query = query.order_by(col(Notification.id).desc()).limit(min(limit, MAX_PAGE_SIZE + 1))
    return list(session.exec(query))


def snapshot(*, session: Session, user_id: int, limit: int = PAGE_SIZE) -> Snapshot:
    return Snapshot(
        unread=unread_count(session=session, user_id=user_id),
        items=tuple(card(row) for row in list_for(session=session, user_id=user_id, limit=limit)),
    )


def snapshot_for(user_id: int) -> Snapshot:
    """A snapshot in a session of its own (for a worker thread)."""
    if user_id <= 0:
        return Snapshot()
    with db.session() as s:
        return snapshot(session=s, user_id=user_id)


def story_of(*, session: Session, user: User, notification_id: int) -> int:
    """The story a notification of `user`'s is about (404 for anyone else's)."""
    return _own(session, user, notification_id).story_id
