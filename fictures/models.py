"""Every table, and the validated shapes that cross the app's boundaries. No queries."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime
from enum import Enum
from fnmatch import fnmatchcase
from typing import Annotated
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from sqlmodel import Field as DBField
from sqlmodel import SQLModel

from fictures.settings import GENRES, settings


def utcnow() -> datetime:
    # Aware: SQLModel (0.0.50) maps datetime fields to UTCDateTime, which refuses
    # naive values and returns aware UTC ones.
    return datetime.now(UTC)


class StoryStatus(str, Enum):
    draft = "draft"
    published = "published"


class PostType(str, Enum):
    discussion = "discussion"
    review = "review"
    question = "question"
    announcement = "announcement"


# ---------------------------------------------------------------- tables
# Plain SQLModel tables (rx.Model is deprecated since Reflex 0.9.2); `reflex db`
# migrates SQLModel.metadata all the same.


class _Table(SQLModel):
    id: int | None = DBField(default=None, primary_key=True)


class UserRole(str, Enum):
    member = "member"
    admin = "admin"  # sees /admin (python -m fictures.admin grant USER)


class User(_Table, table=True):
    username: str = DBField(index=True, sa_column_kwargs={"unique": True}, max_length=32)
    password_hash: str
    created_at: datetime = DBField(default_factory=utcnow)
    role: str = DBField(default=UserRole.member.value, max_length=16)
    # When the reader's current visit to /community began; stories published
    # after the visit before it are "new since your last visit".
    last_visit_at: datetime | None = DBField(default=None)
    previous_visit_at: datetime | None = DBField(default=None)


# Usernames are unique whatever their case: "ADA" cannot be registered beside "ada".
sa.Index("ix_user_username_lower", sa.func.lower(User.__table__.c.username), unique=True)


class AuthToken(_Table, table=True):
    """A login: the SHA-256 of a bearer token (the token itself is never stored)."""

    token_hash: str = DBField(index=True, sa_column_kwargs={"unique": True})
    user_id: int = DBField(foreign_key="user.id", index=True)
    created_at: datetime = DBField(default_factory=utcnow)
    expires_at: datetime


class Story(_Table, table=True):
    author_id: int = DBField(foreign_key="user.id", index=True)
    title: str = DBField(max_length=200)
    genre: str | None = DBField(default=None, max_length=32)
    summary: str = DBField(default="", sa_type=sa.Text)
    content: str = DBField(default="", sa_type=sa.Text)
    status: str = DBField(default=StoryStatus.draft.value, index=True, max_length=16)
    created_at: datetime = DBField(default_factory=utcnow)
    updated_at: datetime = DBField(default_factory=utcnow)
    published_at: datetime | None = DBField(default=None, index=True)


class Post(_Table, table=True):
    story_id: int = DBField(foreign_key="story.id", index=True)
    author_id: int = DBField(foreign_key="user.id", index=True)
    title: str = DBField(max_length=200)
    body: str = DBField(sa_type=sa.Text)
    type: str = DBField(default=PostType.discussion.value, max_length=16)
    created_at: datetime = DBField(default_factory=utcnow, index=True)
    updated_at: datetime = DBField(default_factory=utcnow)


class StoryRead(_Table, table=True):
    """One reader opened one published story ("Read by N"): a user, or an
    anonymous browser (`reader` is "u:<user id>" or "b:<browser id>")."""

    __table_args__ = (sa.UniqueConstraint("story_id", "reader", name="uq_storyread_story_reader"),)

    story_id: int = DBField(foreign_key="story.id", index=True)
    reader: str = DBField(max_length=64)
    created_at: datetime = DBField(default_factory=utcnow)


class SeenStory(_Table, table=True):
    """A logged-in reader has seen a story's card (its NEW badge is cleared for good)."""

    __table_args__ = (sa.UniqueConstraint("user_id", "story_id", name="uq_seenstory_user_story"),)

    user_id: int = DBField(foreign_key="user.id", index=True)
    story_id: int = DBField(foreign_key="story.id", index=True)
    seen_at: datetime = DBField(default_factory=utcnow)


class Notification(_Table, table=True):
    """Something happened that a user should hear about (a post on their story).
    A record: it keeps its texts even if the story or post goes away."""

    user_id: int = DBField(foreign_key="user.id", index=True)
    kind: str = DBField(max_length=32)
    story_id: int
    post_id: int | None = None
    actor: str = DBField(max_length=32)
    title: str = DBField(max_length=200)
    story_title: str = DBField(max_length=200)
    created_at: datetime = DBField(default_factory=utcnow, index=True)
    read_at: datetime | None = DBField(default=None, index=True)


class PushSubscription(_Table, table=True):
    """A browser's Web Push subscription for a user (endpoint and its keys)."""

    user_id: int = DBField(foreign_key="user.id", index=True)
    endpoint: str = DBField(sa_type=sa.Text, sa_column_kwargs={"unique": True})
    p256dh: str = DBField(max_length=256)
    auth: str = DBField(max_length=64)
    created_at: datetime = DBField(default_factory=utcnow)


def new_event_key() -> str:
    """A new outbox row's `event_key`."""
    return uuid.uuid4().hex


class OutboxEvent(_Table, table=True):
    """An event written in the same transaction as the change it describes.

    The relay (fictures.events.outbox) sends unsent rows to Redis in order and
    records the event id Redis assigned; so a change and its event never diverge,
    even when Redis is down at the moment of the change.
    """

    # The event's identity, unique across databases: Redis remembers which keys
    # it has sent, and a row number would repeat after a DB reset or restore.
    event_key: str = DBField(
        default_factory=new_event_key,
        index=True,
        sa_column_kwargs={"unique": True},
        max_length=32,
    )
    channel: str = DBField(max_length=64)
    payload: str = DBField(sa_type=sa.Text)
    created_at: datetime = DBField(default_factory=utcnow)
    event_id: int | None = DBField(default=None, index=True)
    sent_at: datetime | None = DBField(default=None, index=True)


# ---------------------------------------------------------------- boundary shapes

MAX_ROW_ID = 2**31 - 1
# A row id as it arrives from outside (a path, an event argument): the id
# columns are 32-bit integers, so anything larger is a miss, not a DB error.
RowId = Annotated[int, Field(ge=1, le=MAX_ROW_ID)]

_USERNAME = re.compile(r"^[A-Za-z0-9_]{3,32}$")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text (PostgreSQL refuses NUL; UTF-8 has
    no lone surrogates, which JSON's \\ud800 escapes can still deliver), or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "must be valid Unicode text (it holds a lone surrogate)"
    return None


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, v: object) -> object:
        if isinstance(v, str) and (problem := text_problem(v)):
            raise ValueError(problem)
        return v


# A password is taken exactly as typed: "abcdefgh  " is not "abcdefgh".
Password = Annotated[str, StringConstraints(strip_whitespace=False)]


class Login(_Input):
    """What logging in takes: any non-empty password (a wrong one is a 401,
    whatever its length), up to a bound on what is hashed."""

    # The pattern is for the API's schema; the validator below says what is wrong.
    username: str = Field(json_schema_extra={"pattern": _USERNAME.pattern})
    password: Password = Field(min_length=1, max_length=256)

    @field_validator("username")
    @classmethod
    def _username(cls, v: str) -> str:
        if not _USERNAME.match(v):
            raise ValueError("3–32 letters, digits or underscores")
        return v


class Credentials(Login):
    """A new account: the same username rules, and a password of at least 8 characters."""

    password: Password = Field(min_length=8, max_length=256)

    @field_validator("password")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be only spaces")
        return v


def _check_genre(v: str | None) -> str | None:
    if v in (None, ""):
        return None
    if v not in GENRES:
        raise ValueError(f"must be one of: {', '.join(GENRES)}")
    return v


class StoryCreate(_Input):
    title: str = Field(min_length=1, max_length=200)
    genre: str | None = None
    summary: str = Field("", max_length=1_000)
    content: str = Field("", max_length=200_000)
    status: StoryStatus = StoryStatus.draft

    _genre = field_validator("genre")(classmethod(lambda cls, v: _check_genre(v)))


class StoryUpdate(_Input):
    title: str | None = Field(None, min_length=1, max_length=200)
    genre: str | None = None
    summary: str | None = Field(None, max_length=1_000)
    content: str | None = Field(None, max_length=200_000)

    _genre = field_validator("genre")(classmethod(lambda cls, v: _check_genre(v)))

    @field_validator("title", "summary", "content", mode="before")
    @classmethod
    def _not_null(cls, v: object) -> object:
        if v is None:
            raise ValueError("may be omitted but not null")
        return v


class Visibility(_Input):
    status: StoryStatus


class PostCreate(_Input):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=20_000)
    type: PostType = PostType.discussion


class PostUpdate(_Input):
    title: str | None = Field(None, min_length=1, max_length=200)
    body: str | None = Field(None, min_length=1, max_length=20_000)
    type: PostType | None = None

    @field_validator("title", "body", "type", mode="before")
    @classmethod
    def _not_null(cls, v: object) -> object:
        if v is None:
            raise ValueError("may be omitted but not null")
        return v


def _b64url(value: str, size: int, what: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", value):
        raise ValueError(f"{what} must be base64url")
    raw = base64.urlsafe_b64decode(value.rstrip("=") + "=" * (-len(value.rstrip("=")) % 4))
    if len(raw) != size:
        raise ValueError(f"{what} must encode {size} bytes")
    return raw


class PushKeys(_Input):
    """A browser's keys for encrypting pushes to it (from `PushSubscription.toJSON()`)."""

    p256dh: str = Field(max_length=256)
    auth: str = Field(max_length=64)

    @field_validator("p256dh")
    @classmethod
    def _point(cls, v: str) -> str:
        from cryptography.hazmat.primitives.asymmetric import ec

        raw = _b64url(v, 65, "p256dh")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise ValueError("p256dh is not a P-256 public key") from None
        return v

    @field_validator("auth")
    @classmethod
    def _secret(cls, v: str) -> str:
        _b64url(v, 16, "auth")
        return v


def push_endpoint_problem(endpoint: str) -> str | None:
    """Why the server must not POST to `endpoint`, or None. Only the push
    services in FICTURES_PUSH_SERVICES are allowed: the server sends requests to
    this URL, and it must never be an address inside our network."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "endpoint must be an http(s) URL"
    if parts.username is not None or parts.password is not None or parts.fragment:
        return "endpoint must not carry credentials or a fragment"
    try:
        port = parts.port
    except ValueError:
        return "endpoint has an invalid port"
    origin = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")
    if not any(fnmatchcase(origin.lower(), p) for p in settings.push_service_patterns):
        return "endpoint is not on a known push service"
    return None


class PushSubscriptionIn(_Input):
    """What `PushSubscription.toJSON()` gives in a browser."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    endpoint: str = Field(min_length=1, max_length=2048)
    keys: PushKeys
    expiration_time: float | None = Field(None, alias="expirationTime")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if problem := push_endpoint_problem(v):
            raise ValueError(problem)
        return v


class PushEndpoint(_Input):
    endpoint: str = Field(min_length=1, max_length=2048)


class StoryPublic(BaseModel):
    id: int
    title: str
    genre: str | None
    summary: str
    content: str
    status: StoryStatus
    author_id: int
    author: str
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None


class PostPublic(BaseModel):
    id: int
    story_id: int
    author_id: int
    author: str
    title: str
    body: str
    type: PostType
    created_at: datetime
    updated_at: datetime
