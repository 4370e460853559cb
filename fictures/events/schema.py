"""Typed community events and their Redis channels.

Each event travels as JSON with camelCase keys, an ``id`` (assigned when it is
sent to Redis; later events of the same sequence have larger ids) and an
ISO-8601 ``timestamp``. Public events and private ones (``private:*``: a draft
changed, a notification for its recipient) are numbered in two separate
sequences, so the public ids have no gaps where someone's draft changed.

The same models validate what is published and what is received, with one
difference: an event built in code must name only known fields (a typo is an
error), while a received one may carry fields this version does not know. A
newer worker that adds a field during a rolling deploy must not make the older
ones reject, and so silently drop, every event it sends.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel


def _now() -> datetime:
    return datetime.now(UTC)


class CommunityEvent(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )
    channel: ClassVar[str]
    # Events on public channels are visible to everyone; private ones only to `user_id`.
    public: ClassVar[bool] = True

    id: int | None = Field(default=None, ge=1)
    timestamp: datetime = Field(default_factory=_now)

    @model_validator(mode="before")
    @classmethod
    def _ignore_unknown_when_received(cls, data: object, info: ValidationInfo) -> object:
        if info.context and info.context.get("received") and isinstance(data, dict):
            return {key: value for key, value in data.items() if key in _known_keys(cls)}
        return data

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=False)

    def body_without_id(self) -> str:
        """The JSON the relay completes with the id Redis assigns."""
        return self.model_dump_json(by_alias=True, exclude={"id"})

    @property
    def story_id_or_none(self) -> int | None:
        return getattr(self, "story_id", None)


# How much of a summary or post body an event carries (what a card shows).
EXCERPT_CHARS = 200


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The preview a card shows (and an event carries): the text, or its start and "…"."""
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


@functools.cache
def _known_keys(cls: type[CommunityEvent]) -> frozenset[str]:
    return frozenset(cls.model_fields) | {
        field.alias for field in cls.model_fields.values() if field.alias
    }


class StoryPublished(CommunityEvent):
    channel: ClassVar[str] = "story:published"
    story_id: int
    title: str
    author_id: int
    genre: str | None = None
    # What a story card shows, carried so that no reader's page waits on a query
    # (None in events stored by an older version: the fan-out then reads the DB).
    author: str | None = None
    excerpt: str | None = None
    published_at: datetime | None = None


class StoryUpdated(CommunityEvent):
    channel: ClassVar[str] = "story:updated"
    story_id: int
    title: str
    genre: str | None = None
    status: Literal["published", "draft"]
    # While published (never for a draft): what a story card shows, carried so that no reader's page waits on a query
    # (None in events stored by an older version: the fan-out then reads the DB).
    author: str | None = None
    excerpt: str | None = None
    published_at: datetime | None = None


class StoryDeleted(CommunityEvent):
    channel: ClassVar[str] = "story:deleted"
    story_id: int


class PostCreated(CommunityEvent):
    channel: ClassVar[str] = "post:created"
    post_id: int
    story_id: int
    author_id: int
    title: str
    type: Literal["discussion", "review", "question", "announcement"]
    # What a post card shows, carried so that no reader's page waits on a query
    # (None in events stored by an older version: the fan-out then reads the DB).
    author: str | None = None
    excerpt: str | None = None
    story_title: str | None = None
    created_at: datetime | None = None


class PostUpdated(CommunityEvent):
    channel: ClassVar[str] = "post:updated"
    post_id: int
    story_id: int


class PostDeleted(CommunityEvent):
    channel: ClassVar[str] = "post:deleted"
    post_id: int
    story_id: int


class DraftChanged(CommunityEvent):
    """An author's own draft was created, edited or deleted: private to that author."""

    channel: ClassVar[str] = "private:draft"
    public: ClassVar[bool] = False
    user_id: int
    story_id: int
    action: Literal["created", "updated", "deleted"]
    title: str


class NotificationCreated(CommunityEvent):
    """Someone posted on one of `user_id`'s stories: private to that user (the
    recipient). Carries what the bell and a push show, so no reader needs a query."""

    channel: ClassVar[str] = "private:notification"
    public: ClassVar[bool] = False
    user_id: int
    notification_id: int
    kind: str
    story_id: int
    post_id: int | None = None
    actor: str
    title: str
    story_title: str


class NotificationsRead(CommunityEvent):
    """`user_id` marked notifications read (in some tab or client): their other
    tabs update their bell. Private to that user."""

    channel: ClassVar[str] = "private:notifications-read"
    public: ClassVar[bool] = False
    user_id: int
    notification_ids: list[int] = Field(default_factory=list)


PUBLIC_EVENTS: tuple[type[CommunityEvent], ...] = (
    StoryPublished,
    StoryUpdated,
    StoryDeleted,
    PostCreated,
    PostUpdated,
    PostDeleted,
)
PUBLIC_CHANNELS: tuple[str, ...] = tuple(e.channel for e in PUBLIC_EVENTS)
PRIVATE_EVENTS: tuple[type[CommunityEvent], ...] = (
    DraftChanged,
    NotificationCreated,
    NotificationsRead,
)
# The drafts' channel (the first private one, kept by this name for its users).
PRIVATE_CHANNEL = DraftChanged.channel
PRIVATE_CHANNELS: tuple[str, ...] = tuple(e.channel for e in PRIVATE_EVENTS)
ALL_CHANNELS: tuple[str, ...] = (*PUBLIC_CHANNELS, *PRIVATE_CHANNELS)

EVENT_BY_CHANNEL: dict[str, type[CommunityEvent]] = {
    e.channel: e for e in (*PUBLIC_EVENTS, *PRIVATE_EVENTS)
}


class MalformedEvent(ValueError):
    pass


def is_private_channel(channel: str) -> bool:
    """Whether events on `channel` are numbered in the private sequence."""
    return channel in PRIVATE_CHANNELS


def parse_event(channel: str, raw: str | bytes) -> CommunityEvent:
    """Validate a message received on `channel`; it must carry an id.

    Fields this version does not know are ignored (see the module doc)."""
    cls = EVENT_BY_CHANNEL.get(channel)
    if cls is None:
        raise MalformedEvent(f"unknown channel {channel!r}")
    try:
        event = cls.model_validate_json(raw, context={"received": True})
    except ValueError as exc:
        raise MalformedEvent(str(exc)) from exc
    if event.id is None:
        raise MalformedEvent("event has no id")
    return event
