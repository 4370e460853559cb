"""REST endpoints for non-browser clients: accounts, stories and their community posts.

Every endpoint parses its input with the models in fictures.models and calls the
same domain functions as the pages (fictures.auth / .stories / .posts), which
validate, authorize, write and record events. The database is synchronous, so
each request's database work runs in one worker thread (`in_db`), never on
the event loop.

The routes are FastAPI path operations (typed parameters and responses, the
OpenAPI schema at /api/openapi.json); bodies are parsed by the endpoints
after the bearer is checked (see fictures.api.deps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

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
from fictures.api.deps import (
    Bearer,
    PostId,
    StoryId,
    body,
    optional_user,
    parse,
    require_user,
)
from fictures.api.errors import Error, ValidationErrors
from fictures.api.schemas import (
    Account,
    Me,
    PostPage,
    Presence,
    ReadReceipt,
    Reads,
    StoryPage,
    StorySummary,
    Token,
)
from fictures.errors import NotFound
from fictures.models import (
    MAX_ROW_ID,
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


class ApiRoute(APIRoute):
    """A path operation that answers HEAD like GET (as Starlette's routes do),
    without a HEAD operation of its own in the schema."""

    def _head_as_get(self, scope: Scope) -> bool:
        return scope.get("method") == "HEAD" and "GET" in (self.methods or ())

    def matches(self, scope: Scope):
        if self._head_as_get(scope):
            return super().matches({**scope, "method": "GET"})
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._head_as_get(scope):
            await self.app(scope, receive, send)
            return
        await super().handle(scope, receive, send)


# ------------------------------------------------------------------ documented refusals

_REFUSALS: dict[int, tuple[type[BaseModel], str]] = {
    400: (Error, "The body is not a JSON object, or is nested too deeply."),
    401: (Error, "No valid bearer token (`WWW-Authenticate: Bearer`)."),
    403: (Error, "Only the author may do this."),
    404: (Error, "No such thing, or not yours to see (someone else's draft): the same answer."),
    409: (Error, "The username is taken (in any case)."),
    413: (Error, "The body is larger than `FICTURES_MAX_BODY_BYTES`."),
    422: (ValidationErrors, "Fields or parameters that do not fit: one entry per problem."),
    429: (Error, "A rate limit: `Retry-After` says in how many seconds to try again."),
    503: (Error, "Redis is unavailable right now: `Retry-After` says when to try again."),
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}},
    429: {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
    503: {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
}


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route that may refuse with these statuses."""
    documented: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model, description = _REFUSALS[code]
        documented[code] = {"model": model, "description": description}
        if code in _HEADERS:
            documented[code]["headers"] = _HEADERS[code]
    return documented


# Every body may be too large, malformed, or not fit; a bearer may be missing.
_BODY = (400, 413, 422)
_AUTH = (401,)


router = APIRouter(route_class=ApiRoute)


# ------------------------------------------------------------------ helpers


async def in_db(work: Callable[[Session], T]) -> T:
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


def next_link(request: Request, items: list[Any], limit: int, more: bool, **filters: Any) -> str | None:
    """The URL of the page after `items` (the last one's id is the cursor), if there is one."""
    if not more or not items:
        return None
    query = {name: value for name, value in filters.items() if value is not None}
    query.update(limit=limit, before=items[-1].id)
    return f"{request.url.path}?{urlencode(query)}"


# Paging, the same on every list: newest first, `limit` per page, `before` the
# last id of the page before. Each list reads one row more than a page, to know
# whether a next page exists.
Limit = Annotated[int, Field(ge=1, le=100, description="Items per page.")]
Before = Annotated[
    int | None,
    Field(ge=1, le=MAX_ROW_ID, description="The last id of the previous page: the items after it."),
]


class StoryListQuery(BaseModel):
    """`GET /api/stories` query string."""

    model_config = ConfigDict(extra="ignore")

    genre: Literal[GENRES] | None = Field(None, description="Only this genre (empty: any).")  # type: ignore[valid-type]
    limit: Limit = 50
    before: Before = None

    @field_validator("genre", mode="before")
    @classmethod
    def _blank_is_any(cls, v: object) -> object:
        return None if v == "" else v


class PostListQuery(BaseModel):
    """`GET /api/stories/{id}/posts` query string."""

    model_config = ConfigDict(extra="ignore")

    limit: Limit = 50
    before: Before = None


# ------------------------------------------------------------------ accounts


@router.post(
    "/api/auth/register", status_code=201, response_model=Account, tags=["accounts"],
    summary="Create an account",
    responses=refusals(*_BODY, 409, 429), openapi_extra=body(Credentials),
)
async def register(request: Request) -> Account:
    """Usernames are 3 to 32 letters, digits or `_`, unique whatever their case;
    a password is 8 to 256 characters, taken exactly as typed."""
    data = parse(Credentials, await request.body())
    await ratelimit.check_registration(client_address.from_connection(request))

    def work(session: Session) -> Account:
        user = auth.register(session=session, data=data)
        return Account(id=user.id, username=user.username)

    return await in_db(work)


@router.post(
    "/api/auth/token", response_model=Token, tags=["accounts"], summary="Log in: get a bearer token",
    responses=refusals(*_BODY, 401, 429), openapi_extra=body(Login),
)
async def token(request: Request) -> Token:
    """The username matches in any case; every attempt counts against the login limits."""
    data = parse(Login, await request.body())
    await ratelimit.check_login(client_address.from_connection(request), data.username)

    def work(session: Session) -> str:
        user = auth.authenticate(session=session, data=data)
        return auth.issue_token(session=session, user=user)

    return Token(token=await in_db(work))


@router.delete(
    "/api/auth/token", status_code=204, response_class=Response, tags=["accounts"],
    summary="Log out: revoke this bearer token", responses=refusals(*_AUTH),
)
async def revoke_token(token: Bearer) -> Response:
    """Only the token sent is revoked; the account's other logins go on working."""

    def work(session: Session) -> None:
        user = require_user(session, token)
        assert token is not None
        auth.revoke_token(session=session, token=token)
        logger.info("User %s logged out a token", user.id)

    await in_db(work)
    return Response(status_code=204)


@router.get(
    "/api/me", response_model=Me, tags=["accounts"], summary="Your account",
    responses=refusals(*_AUTH),
)
async def me(token: Bearer) -> Me:
    def work(session: Session) -> Me:
        user = require_user(session, token)
        return Me(id=user.id, username=user.username, created_at=user.created_at)

    return await in_db(work)


# ------------------------------------------------------------------ stories


@router.get(
    "/api/stories", response_model=StoryPage, tags=["stories"], summary="Published stories, newest first",
    responses=refusals(404, 422),
)
async def list_stories(request: Request, query: Annotated[StoryListQuery, Query()]) -> StoryPage:
    """Summaries only (no `content`). Follow `next` for older ones; a `before`
    story that was deleted meanwhile is a 404 (start again from the first page)."""

    def work(session: Session) -> StoryPage:
        rows = stories.list_published(
            session=session, genre=query.genre, limit=query.limit + 1, before=query.before
        )
        page, more = rows[: query.limit], len(rows) > query.limit
        names = _usernames(session, (s.author_id for s in page))
        return StoryPage(
            items=[StorySummary.model_validate({**s.model_dump(), "author": names[s.author_id]}) for s in page],
            next=next_link(request, page, query.limit, more, genre=query.genre),
        )

    return await in_db(work)


@router.post(
    "/api/stories", status_code=201, response_model=StoryPublic, tags=["stories"],
    summary="Write a story (a draft unless `status` is `published`)",
    responses=refusals(*_AUTH, *_BODY), openapi_extra=body(StoryCreate),
)
async def create_story(request: Request, token: Bearer) -> StoryPublic:
    raw = await request.body()

    def work(session: Session) -> StoryPublic:
        author = require_user(session, token)
        story = stories.create_story(session=session, author=author, data=parse(StoryCreate, raw))
        return _story_public(story, author.username)

    return await in_db(work)


@router.get(
    "/api/stories/{story_id}", response_model=StoryPublic, tags=["stories"],
    summary="A published story, or your own draft, with its content", responses=refusals(404),
)
async def get_story(story_id: StoryId, token: Bearer) -> StoryPublic:
    def work(session: Session) -> StoryPublic:
        viewer = optional_user(session, token)
        story = stories.get_readable_story(session=session, story_id=story_id, viewer=viewer)
        return _story_public(story, _usernames(session, [story.author_id])[story.author_id])

    return await in_db(work)


@router.patch(
    "/api/stories/{story_id}", response_model=StoryPublic, tags=["stories"],
    summary="Edit your story (omitted fields are kept)",
    responses=refusals(*_AUTH, 403, 404, *_BODY), openapi_extra=body(StoryUpdate),
)
async def update_story(request: Request, story_id: StoryId, token: Bearer) -> StoryPublic:
    raw = await request.body()

    def work(session: Session) -> StoryPublic:
        author = require_user(session, token)
        story = stories.update_story(
            session=session, author=author, story_id=story_id, data=parse(StoryUpdate, raw)
        )
        return _story_public(story, author.username)

    return await in_db(work)


@router.put(
    "/api/stories/{story_id}/visibility", response_model=StoryPublic, tags=["stories"],
    summary="Publish or unpublish your story",
    responses=refusals(*_AUTH, 403, 404, *_BODY), openapi_extra=body(Visibility),
)
async def set_visibility(request: Request, story_id: StoryId, token: Bearer) -> StoryPublic:
    raw = await request.body()

    def work(session: Session) -> StoryPublic:
        author = require_user(session, token)
        story = stories.set_visibility(
            session=session, author=author, story_id=story_id, status=parse(Visibility, raw).status
        )
        return _story_public(story, author.username)

    return await in_db(work)


@router.delete(
    "/api/stories/{story_id}", status_code=204, response_class=Response, tags=["stories"],
    summary="Delete your story and its posts", responses=refusals(*_AUTH, 403, 404),
)
async def delete_story(story_id: StoryId, token: Bearer) -> Response:
    def work(session: Session) -> None:
        author = require_user(session, token)
        stories.delete_story(session=session, author=author, story_id=story_id)

    await in_db(work)
    return Response(status_code=204)


# ------------------------------------------------------------------ read receipts


@router.get(
    "/api/stories/{story_id}/reads", response_model=Reads, tags=["stories"],
    summary="How many readers opened a story", responses=refusals(404),
)
async def story_reads(story_id: StoryId, token: Bearer) -> Reads:
    """A published story, or your own draft."""

    def work(session: Session) -> Reads:
        viewer = optional_user(session, token)
        result = reads.get_reads(session=session, story_id=story_id, viewer=viewer)
        return Reads(story_id=result.story_id, reads=result.reads)

    return await in_db(work)


@router.put(
    "/api/stories/{story_id}/read", response_model=ReadReceipt, tags=["stories"],
    summary="You opened a story", responses=refusals(*_AUTH, 404),
)
async def read_story(request: Request, story_id: StoryId, token: Bearer) -> ReadReceipt:
    """Counted once per account, never for its author or a draft (the story
    pages count browsers too; the API counts accounts only)."""

    def reader(session: Session) -> User:
        return require_user(session, token)

    viewer = await in_db(reader)
    result = await live_receipts.story_opened(
        story_id=story_id, viewer=viewer, browser_id="", address=client_address.from_connection(request)
    )
    if result is None:
        raise NotFound(f"story {story_id} not found")
    return ReadReceipt(story_id=result.story_id, reads=result.reads, counted=result.counted)


# ------------------------------------------------------------------ presence


@router.get(
    "/api/stories/{story_id}/presence", response_model=Presence, tags=["stories"],
    summary="Who is reading a published story now", responses=refusals(404, 503),
)
async def story_presence(story_id: StoryId) -> Presence | Response:
    """Every logged-in reader's name, sorted, once; anonymous readers are only counted.
    A draft has no presence, not even for its author (404)."""

    def work(session: Session) -> None:
        stories.get_readable_story(session=session, story_id=story_id, viewer=None)

    await in_db(work)
    readers = await presence.read(presence.story_room(story_id))
    if readers is None:
        return JSONResponse(
            {"detail": "presence is unavailable right now; try again shortly"},
            status_code=503, headers={"Retry-After": "5"},
        )
    return Presence.model_validate(readers.public())


# ------------------------------------------------------------------ posts


@router.get(
    "/api/stories/{story_id}/posts", response_model=PostPage, tags=["posts"],
    summary="Posts on a published story, newest first", responses=refusals(404, 422),
)
async def list_posts(
    request: Request, story_id: StoryId, token: Bearer, query: Annotated[PostListQuery, Query()]
) -> PostPage:
    def work(session: Session) -> PostPage:
        viewer = optional_user(session, token)
        stories.get_readable_story(session=session, story_id=story_id, viewer=viewer)
        rows = posts.page_for_story(
            session=session, story_id=story_id, limit=query.limit + 1, before=query.before
        )
        page, more = rows[: query.limit], len(rows) > query.limit
        names = _usernames(session, (p.author_id for p in page))
        return PostPage(
            items=[_post_public(p, names[p.author_id]) for p in page],
            next=next_link(request, page, query.limit, more),
        )

    return await in_db(work)


@router.post(
    "/api/stories/{story_id}/posts", status_code=201, response_model=PostPublic, tags=["posts"],
    summary="Post on a published story",
    responses=refusals(*_AUTH, 404, *_BODY, 429), openapi_extra=body(PostCreate),
)
async def create_post(request: Request, story_id: StoryId, token: Bearer) -> PostPublic:
    raw = await request.body()

    def author_and_post(session: Session) -> tuple[User, PostCreate]:
        return require_user(session, token), parse(PostCreate, raw)

    author, data = await in_db(author_and_post)
    await ratelimit.check_post(author.id)

    def work(session: Session) -> PostPublic:
        post = posts.create_post(session=session, author=author, story_id=story_id, data=data)
        return _post_public(post, author.username)

    return await in_db(work)


@router.patch(
    "/api/posts/{post_id}", response_model=PostPublic, tags=["posts"], summary="Edit your post",
    responses=refusals(*_AUTH, 403, 404, *_BODY), openapi_extra=body(PostUpdate),
)
async def update_post(request: Request, post_id: PostId, token: Bearer) -> PostPublic:
    raw = await request.body()

    def work(session: Session) -> PostPublic:
        author = require_user(session, token)
        post = posts.update_post(session=session, author=author, post_id=post_id, data=parse(PostUpdate, raw))
        return _post_public(post, author.username)

    return await in_db(work)


@router.delete(
    "/api/posts/{post_id}", status_code=204, response_class=Response, tags=["posts"],
    summary="Delete your post", responses=refusals(*_AUTH, 403, 404),
)
async def delete_post(post_id: PostId, token: Bearer) -> Response:
    def work(session: Session) -> None:
        author = require_user(session, token)
        posts.delete_post(session=session, author=author, post_id=post_id)

    await in_db(work)
    return Response(status_code=204)
