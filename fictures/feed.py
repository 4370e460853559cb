"""The read side for pages: small display records built from the DB.

Pages hold these (not table rows) in their state; live handlers build one per
event with `story_card` / `post_card`, which are cached per event so a
thousand tabs receiving the same event cost one query.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from functools import lru_cache

from sqlmodel import Session, col, select

from fictures import db, posts, stories
from fictures.events.schema import PostCreated, StoryPublished, StoryUpdated, excerpt
from fictures.models import OutboxEvent, Post, Story, User


@dataclasses.dataclass(frozen=True)
class StoryCard:
    id: int = 0
    title: str = ""
    genre: str = ""
    summary: str = ""
    author: str = ""
    # When it was published (ISO 8601, UTC): the browser shows "3 min ago".
    published_at: str = ""
    # Set on cards that arrived live: the event that brought them.
    event_id: int = 0


@dataclasses.dataclass(frozen=True)
class PostCard:
    id: int = 0
    story_id: int = 0
    story_title: str = ""
    title: str = ""
    body: str = ""
    type: str = ""
    author: str = ""
    created_at: str = ""
    event_id: int = 0


def iso(moment: datetime | None) -> str:
    """A timestamp for the browser, which shows it relative and in the reader's zone."""
    if moment is None:
        return ""
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat(timespec="seconds")


def _names(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {u.id: u.username for u in session.exec(select(User).where(User.id.in_(ids)))}


def _story_card(story: Story, author: str) -> StoryCard:
    return StoryCard(
        id=story.id,
        title=story.title,
        genre=story.genre or "",
        summary=excerpt(story.summary),
        author=author,
        published_at=iso(story.published_at),
    )


def _post_card(post: Post, author: str, story_title: str = "") -> PostCard:
    return PostCard(
        id=post.id,
        story_id=post.story_id,
        story_title=story_title,
        title=post.title,
        body=excerpt(post.body),
        type=post.type,
        author=author,
        created_at=iso(post.created_at),
    )


# Cards a list shows at first, and each "Load more" adds.
STORIES_PAGE = 50
POSTS_PAGE = 20


def cursor_after(moment: datetime | None, row_id: int) -> str:
    """Where the next page starts: after the row shown last (opaque to the browser,
    which never sees it: pages keep it in a backend var)."""
    return f"{(moment or datetime.min.replace(tzinfo=UTC)).isoformat()}|{row_id}"


def _parse_cursor(cursor: str) -> tuple[datetime, int] | None:
    if not cursor:
        return None
    moment, _, row_id = cursor.rpartition("|")
    return datetime.fromisoformat(moment), int(row_id)


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a list: its cards, and the cursor of the next page ("" if none)."""

    cards: list
    next: str = ""


def published_cards(genre: str | None = None, limit: int = STORIES_PAGE, after: str = "") -> Page:
    """Published stories, newest first: `limit` of them after the cursor `after`."""
    with db.session() as s:
        rows = stories.list_published(
            session=s, genre=genre, limit=limit + 1, before=_parse_cursor(after), without_content=True
        )
        more = len(rows) > limit
        rows = rows[:limit]
        names = _names(s, {r.author_id for r in rows})
        cards = [_story_card(r, names.get(r.author_id, "?")) for r in rows]
        return Page(cards, cursor_after(rows[-1].published_at, rows[-1].id) if more else "")


def recent_post_cards(limit: int = POSTS_PAGE, after: str = "") -> Page:
    """Posts on published stories, newest first: `limit` of them after the cursor `after`."""
    with db.session() as s:
        rows = posts.list_recent(session=s, limit=limit + 1, before=_parse_cursor(after))
        more = len(rows) > limit
        rows = rows[:limit]
        names = _names(s, {r.author_id for r in rows})
        titles = {
            st.id: st.title
            for st in s.exec(select(Story).where(Story.id.in_({r.story_id for r in rows})))
        } if rows else {}
        cards = [_post_card(r, names.get(r.author_id, "?"), titles.get(r.story_id, "")) for r in rows]
        return Page(cards, cursor_after(rows[-1].created_at, rows[-1].id) if more else "")


def story_post_cards(story_id: int, limit: int = POSTS_PAGE, after: str = "") -> Page:
    """A story's posts, newest first: `limit` of them after the cursor `after`."""
    with db.session() as s:
        rows = posts.list_for_story(session=s, story_id=story_id, limit=limit + 1, before=_parse_cursor(after))
        more = len(rows) > limit
        rows = rows[:limit]
        names = _names(s, {r.author_id for r in rows})
        cards = [_post_card(r, names.get(r.author_id, "?")) for r in rows]
        return Page(cards, cursor_after(rows[-1].created_at, rows[-1].id) if more else "")


def published_since(event_id: int, limit: int) -> dict[int, int]:
    """Stories published after the event `event_id`: story id -> the id of the
    event that published it (its latest publication), the newest `limit` of them.

    Read from the outbox, which records the id Redis gave each event: a tab that
    was away (a reconnect, another instance) learns from it which of the stories
    it reads were published while it was gone, beyond the broadcast ring's slots.
    Whether each is still published is for the list it reads to say."""
    with db.session() as s:
        rows = s.exec(
            select(OutboxEvent.event_id, OutboxEvent.payload)
            .where(OutboxEvent.channel == StoryPublished.channel, col(OutboxEvent.event_id) > event_id)
            .order_by(col(OutboxEvent.event_id).desc())
            .limit(limit)
        ).all()
    published: dict[int, int] = {}
    for row_event_id, payload in rows:
        published.setdefault(StoryPublished.model_validate_json(payload).story_id, row_event_id)
    return published


def story_card_of(event: StoryPublished | StoryUpdated) -> StoryCard | None:
    """The card a published story's event carries (None: an event stored by an
    older version, without it: read `story_card` instead)."""
    if event.author is None or event.excerpt is None or event.published_at is None:
        return None
    return StoryCard(
        id=event.story_id,
        title=event.title,
        genre=event.genre or "",
        summary=event.excerpt,
        author=event.author,
        published_at=iso(event.published_at),
    )


def post_card_of(event: PostCreated) -> PostCard | None:
    """The card a new post's event carries (None: an older event: read `post_card`)."""
    if event.author is None or event.excerpt is None or event.story_title is None or event.created_at is None:
        return None
    return PostCard(
        id=event.post_id,
        story_id=event.story_id,
        story_title=event.story_title,
        title=event.title,
        body=event.excerpt,
        type=event.type,
        author=event.author,
        created_at=iso(event.created_at),
    )


@lru_cache(maxsize=256)
def story_card(story_id: int, version: int = 0) -> StoryCard | None:
    """The card of a published story (None if gone or unpublished); `version` keys the cache."""
    with db.session() as s:
        story = s.get(Story, story_id)
        if story is None or story.status != stories.PUBLISHED:
            return None
        author = s.get(User, story.author_id)
        return _story_card(story, author.username if author else "?")


@lru_cache(maxsize=256)
def post_card(post_id: int, version: int = 0) -> PostCard | None:
    with db.session() as s:
        post = s.get(Post, post_id)
        if post is None:
            return None
        story = s.get(Story, post.story_id)
        if story is None or story.status != stories.PUBLISHED:
            return None
        author = s.get(User, post.author_id)
        return _post_card(post, author.username if author else "?", story.title)
