"""Test data, made through the same domain functions and endpoints the app uses.

Every name is unique, so tests never depend on what other tests left behind.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from sqlmodel import Session

from fictures import auth, db, posts, stories
from fictures.models import Credentials, Post, PostCreate, Story, StoryCreate, User

PASSWORD = "correct horse battery"


def unique(prefix: str = "u") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------- domain


def make_user(session: Session, *, username: str | None = None) -> User:
    return auth.register(
        session=session, data=Credentials(username=username or unique(), password=PASSWORD)
    )


def make_story(
    session: Session, author: User, *, published: bool = True, **fields: Any
) -> Story:
    data = {
        "title": unique("Story"),
        "genre": "fantasy",
        "summary": "A summary.",
        "content": "Once upon a time.",
        "status": "published" if published else "draft",
        **fields,
    }
    return stories.create_story(session=session, author=author, data=StoryCreate(**data))


def make_post(session: Session, author: User, story: Story, **fields: Any) -> Post:
    data = {"title": unique("Post"), "body": "What a story.", "type": "review", **fields}
    return posts.create_post(
        session=session, author=author, story_id=story.id, data=PostCreate(**data)
    )


# ---------------------------------------------------------------- API


@dataclass
class ApiUser:
    id: int
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _issue_token(user_id: int) -> str:
    with db.session() as session:
        return auth.issue_token(session=session, user=session.get(User, user_id))


async def api_user(client: httpx.AsyncClient) -> ApiUser:
    """A registered account with a bearer token (logging in is tested on its own)."""
    username = unique()
    credentials = {"username": username, "password": PASSWORD}
    registered = await client.post("/api/auth/register", json=credentials)
    assert registered.status_code == 201, registered.text
    user_id = registered.json()["id"]
    # Issued directly: a login would spend a second argon2 hash on every test user.
    token = await asyncio.to_thread(_issue_token, user_id)
    return ApiUser(id=user_id, username=username, token=token)


def story_body(**fields: Any) -> dict[str, Any]:
    return {
        "title": unique("Story"),
        "genre": "mystery",
        "summary": "Who did it?",
        "content": "It was a dark night.",
        "status": "published",
        **fields,
    }


async def api_story(client: httpx.AsyncClient, user: ApiUser, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/stories", json=story_body(**fields), headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def api_post(
    client: httpx.AsyncClient, user: ApiUser, story_id: int, **fields: Any
) -> dict[str, Any]:
    body = {"title": unique("Post"), "body": "Loved it.", "type": "discussion", **fields}
    response = await client.post(f"/api/stories/{story_id}/posts", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()
