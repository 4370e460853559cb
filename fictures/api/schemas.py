"""What the REST API answers, as typed models: the OpenAPI schema is built from
them, and FastAPI checks every response against its model.

Requests are the input shapes of fictures.models (Credentials, StoryCreate, …);
stories and posts are answered as fictures.models' StoryPublic and PostPublic.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fictures.models import PostPublic, StoryStatus

# A page's `next`: this list's URL for the page after it (path and query, the
# same filters and limit, `before` the page's last item), or null on the last page.
NEXT = Field(
    description="The next page's URL (path and query), or null on the last page.",
    examples=["/api/stories?limit=50&before=42"],
)


class Account(BaseModel):
    """A new account (`POST /api/auth/register`)."""

    id: int
    username: str


class Me(BaseModel):
    """The bearer's own account (`GET /api/me`)."""

    id: int
    username: str
    created_at: datetime


class Token(BaseModel):
    """A login: send it as `Authorization: Bearer <token>`."""

    token: str
    token_type: Literal["bearer"] = "bearer"


class StorySummary(BaseModel):
    """A story in a list: everything but its `content` (read it with `GET /api/stories/{id}`)."""

    id: int
    title: str
    genre: str | None
    summary: str
    status: StoryStatus
    author_id: int
    author: str
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None


class StoryPage(BaseModel):
    items: list[StorySummary]
    next: str | None = NEXT


class PostPage(BaseModel):
    items: list[PostPublic]
    next: str | None = NEXT


class Reads(BaseModel):
    story_id: int
    reads: int


class ReadReceipt(Reads):
    counted: bool = Field(description="Whether this call added you as a reader.")


class Presence(BaseModel):
    """Who reads a story now: logged-in readers' names once each; anonymous ones only counted."""

    count: int
    users: list[str]


class NotificationItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    kind: str
    story_id: int = Field(alias="storyId")
    post_id: int | None = Field(alias="postId")
    actor: str
    title: str
    story_title: str = Field(alias="storyTitle")
    created_at: str = Field(alias="createdAt", description="ISO 8601, UTC.")
    read: bool


class NotificationPage(BaseModel):
    unread: int = Field(description="All your unread notifications, not only this page's.")
    items: list[NotificationItem]
    next: str | None = NEXT


class Unread(BaseModel):
    unread: int


class MarkedRead(BaseModel):
    marked: int
    unread: int


class PushKey(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    enabled: bool
    public_key: str | None = Field(alias="publicKey")


class Subscribed(BaseModel):
    id: int
