"""REST endpoints for non-browser clients: accounts, stories and their community posts.

Every endpoint parses its input with the models in fictures.models and calls the
same domain functions as the pages (fictures.auth / .stories / .posts), which
validate, authorize, write and record events. The database is synchronous, so
each request's database work runs in one worker thread (`_in_db`), never on
the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fictures import (
    auth,
    client_address,
    db,
    live_receipts,
    posts,
    presence,
    ratelimit,
    reads,
    stories,
)
from fictures.api.deps import bearer_token, optional_user, parse, path_id, require_user
from fictures.errors import NotFound
from fictures.models import (
    Credentials,
    Login,
    Post,
    PostCreate,
    PostPublic,
    PostUpdate,
    Story,
    StoryCreate,
    StoryPublic,
    StoryUpdate,
    User,
    Visibility,
)
from fictures.settings import GENRES

logger = logging.getLogger(__name__)

T = TypeVar("T")


class StoryListQuery(BaseModel):
    """`GET /api/stories` query string."""

    model_config = ConfigDict(extra="ignore")

    genre: Literal[GENRES] | None = None  # type: ignore[valid-type]
    limit: int = Field(50, ge=1, le=100)

    @field_validator("genre", mode="before")
    @classmethod
    def _blank_is_any(cls, v: object) -> object:
        return None if v == "" else v


# ------------------------------------------------------------------ helpers


async def _in_db(work: Callable[[Session], T]) -> T:
    """Run `work` with a fresh session in a worker thread."""

    def run() -> T:
        with db.session() as session:
            return work(session)

    return await run_in_threadpool(run)


def _usernames(session: Session, user_ids: Iterable[int]) -> dict[int, str]:
    ids = set(user_ids)
    if not ids:
        return {}
    rows = session.exec(select(User.id, User.username).where(col(User.id).in_(ids)))
    return {user_id: username for user_id, username in rows}


def _story_public(story: Story, author: str) -> StoryPublic:
    return StoryPublic.model_validate({**story.model_dump(), "author": author})


def _post_public(post: Post, author: str) -> PostPublic:
    return PostPublic.model_validate({**post.model_dump(), "author": author})


def _stories_public(session: Session, rows: list[Story]) -> list[StoryPublic]:
    names = _usernames(session, (s.author_id for s in rows))
    return [_story_public(s, names[s.author_id]) for s in rows]


def _posts_public(session: Session, rows: list[Post]) -> list[PostPublic]:
    names = _usernames(session, (p.author_id for p in rows))
    return [_post_public(p, names[p.author_id]) for p in rows]


def _json(data: BaseModel | dict[str, Any], status_code: int = 200) -> JSONResponse:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return JSONResponse(data, status_code=status_code)


def _items(models: list[StoryPublic] | list[PostPublic]) -> JSONResponse:
    return JSONResponse({"items": [m.model_dump(mode="json") for m in models]})


# ------------------------------------------------------------------ accounts


async def register(request: Request) -> Response:
    data = parse(Credentials, await request.body())
    await ratelimit.check_registration(client_address.from_connection(request))

    def work(session: Session) -> dict[str, Any]:
        user = auth.register(session=session, data=data)
        return {"id": user.id, "username": user.username}

    return _json(await _in_db(work), 201)


async def token(request: Request) -> Response:
    data = parse(Login, await request.body())
    await ratelimit.check_login(client_address.from_connection(request), data.username)

    def work(session: Session) -> str:
        user = auth.authenticate(session=session, data=data)
        return auth.issue_token(session=session, user=user)

    return _json({"token": await _in_db(work), "token_type": "bearer"})


# ------------------------------------------------------------------ stories


async def list_stories(request: Request) -> Response:
    query = StoryListQuery.model_validate(dict(request.query_params))

    def work(session: Session) -> list[StoryPublic]:
        rows = stories.list_published(session=session, genre=query.genre, limit=query.limit)
        return _stories_public(session, rows)

    return _items(await _in_db(work))


async def create_story(request: Request) -> Response:
    bearer, body = bearer_token(request), await request.body()

    def work(session: Session) -> StoryPublic:
        author = require_user(session, bearer)
        story = stories.create_story(session=session, author=author, data=parse(StoryCreate, body))
        return _story_public(story, author.username)

    return _json(await _in_db(work), 201)


async def get_story(request: Request) -> Response:
    story_id, bearer = path_id(request, "story_id", "story"), bearer_token(request)

    def work(session: Session) -> StoryPublic:
        viewer = optional_user(session, bearer)
        story = stories.get_readable_story(session=session, story_id=story_id, viewer=viewer)
        return _stories_public(session, [story])[0]

    return _json(await _in_db(work))


async def update_story(request: Request) -> Response:
    story_id = path_id(request, "story_id", "story")
    bearer, body = bearer_token(request), await request.body()

    def work(session: Session) -> StoryPublic:
        author = require_user(session, bearer)
        story = stories.update_story(
            session=session, author=author, story_id=story_id, data=parse(StoryUpdate, body)
        )
        return _story_public(story, author.username)

    return _json(await _in_db(work))


async def set_visibility(request: Request) -> Response:
    story_id = path_id(request, "story_id", "story")
    bearer, body = bearer_token(request), await request.body()

    def work(session: Session) -> StoryPublic:
        author = require_user(session, bearer)
        story = stories.set_visibility(
            session=session,
            author=author,
            story_id=story_id,
            status=parse(Visibility, body).status,
        )
        return _story_public(story, author.username)

    return _json(await _in_db(work))


async def delete_story(request: Request) -> Response:
    story_id, bearer = path_id(request, "story_id", "story"), bearer_token(request)

    def work(session: Session) -> None:
        author = require_user(session, bearer)
        stories.delete_story(session=session, author=author, story_id=story_id)

    await _in_db(work)
    return Response(status_code=204)


# ------------------------------------------------------------------ read receipts


async def story_reads(request: Request) -> Response:
    """How many readers opened a story: a published one, or your own draft."""
    story_id, bearer = path_id(request, "story_id", "story"), bearer_token(request)

    def work(session: Session) -> dict[str, Any]:
        viewer = optional_user(session, bearer)
        result = reads.get_reads(session=session, story_id=story_id, viewer=viewer)
        return {"story_id": result.story_id, "reads": result.reads}

    return _json(await _in_db(work))


async def read_story(request: Request) -> Response:
    """You opened a story: counted once per account, never for its author or a draft
    (the story pages count browsers too; the API counts accounts only)."""
    story_id, bearer = path_id(request, "story_id", "story"), bearer_token(request)

    def reader(session: Session) -> User:
        user = require_user(session, bearer)
        session.expunge(user)
        return user

    viewer = await _in_db(reader)
    result = await live_receipts.story_opened(
        story_id=story_id, viewer=viewer, browser_id="", address=client_address.from_connection(request)
    )
    if result is None:
        raise NotFound(f"story {story_id} not found")
    return _json({"story_id": result.story_id, "reads": result.reads, "counted": result.counted})


# ------------------------------------------------------------------ presence


async def story_presence(request: Request) -> Response:
    """Who is reading a published story now: `{"count": N, "users": [names]}`
    (every logged-in reader's name, sorted; anonymous readers are only counted)."""
    story_id = path_id(request, "story_id", "story")

    def work(session: Session) -> None:
        # Drafts have no presence, not even for their author: 404 like a missing story.
        stories.get_readable_story(session=session, story_id=story_id, viewer=None)

    await _in_db(work)
    readers = await presence.read(presence.story_room(story_id))
    if readers is None:
        return JSONResponse(
            {"detail": "presence is unavailable right now; try again shortly"},
            status_code=503, headers={"Retry-After": "5"},
        )
    return _json(readers.public())


# ------------------------------------------------------------------ posts


async def list_posts(request: Request) -> Response:
    story_id, bearer = path_id(request, "story_id", "story"), bearer_token(request)

    def work(session: Session) -> list[PostPublic]:
        viewer = optional_user(session, bearer)
        stories.get_readable_story(session=session, story_id=story_id, viewer=viewer)
        return _posts_public(session, posts.list_for_story(session=session, story_id=story_id))

    return _items(await _in_db(work))


async def create_post(request: Request) -> Response:
    story_id = path_id(request, "story_id", "story")
    bearer, body = bearer_token(request), await request.body()

    def author_and_post(session: Session) -> tuple[User, PostCreate]:
        author = require_user(session, bearer)
        session.expunge(author)
        return author, parse(PostCreate, body)

    author, data = await _in_db(author_and_post)
    await ratelimit.check_post(author.id)

    def work(session: Session) -> PostPublic:
        post = posts.create_post(session=session, author=author, story_id=story_id, data=data)
        return _post_public(post, author.username)

    return _json(await _in_db(work), 201)


async def update_post(request: Request) -> Response:
    post_id = path_id(request, "post_id", "post")
    bearer, body = bearer_token(request), await request.body()

    def work(session: Session) -> PostPublic:
        author = require_user(session, bearer)
        post = posts.update_post(
            session=session, author=author, post_id=post_id, data=parse(PostUpdate, body)
        )
        return _post_public(post, author.username)

    return _json(await _in_db(work))


async def delete_post(request: Request) -> Response:
    post_id, bearer = path_id(request, "post_id", "post"), bearer_token(request)

    def work(session: Session) -> None:
        author = require_user(session, bearer)
        posts.delete_post(session=session, author=author, post_id=post_id)

    await _in_db(work)
    return Response(status_code=204)


def route(path: str, **endpoints: Callable[[Request], Awaitable[Response]]) -> Route:
    """One route per path, so a 405 lists every method the path allows."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await endpoints[method](request)

    return Route(path, dispatch, methods=list(endpoints), name=path)


routes = [
    route("/api/auth/register", POST=register),
    route("/api/auth/token", POST=token),
    route("/api/stories", GET=list_stories, POST=create_story),
    route("/api/stories/{story_id}", GET=get_story, PATCH=update_story, DELETE=delete_story),
    route("/api/stories/{story_id}/visibility", PUT=set_visibility),
    route("/api/stories/{story_id}/read", PUT=read_story),
    route("/api/stories/{story_id}/reads", GET=story_reads),
    route("/api/stories/{story_id}/presence", GET=story_presence),
    route("/api/stories/{story_id}/posts", GET=list_posts, POST=create_post),
    route("/api/posts/{post_id}", PATCH=update_post, DELETE=delete_post),
]
