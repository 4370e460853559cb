"""The event stream's own lane: `GET /api/community/events` served ahead of the middleware stacks.

An event stream stays open for hours, and its request keeps alive every ASGI
layer it passed on the way in. Through the whole app that is about twenty:
Reflex's outer app (its error middleware, CORS, its context middleware, its
exception middleware, the router and the mount), then this API's FastAPI app
(the same again, plus the body-size limit, the JSON 404s, the request id and
FastAPI's six `AsyncExitStack`s around the route). Each keeps a coroutine frame
and its closures for the stream's whole life, and every frame written to the
stream passes each layer's `send` on its way out.

`ahead_of(app)` puts a lane in front of an ASGI app (the full app, see
`fictures.fictures.App`; the bare API app in tests): a GET or HEAD of the event
stream's path goes straight to the endpoint, wrapped only in what it needs:

- CORS, configured as Reflex configures it for every other route (the
  app's `cors_allowed_origins`, credentials allowed);
- the request id (`fictures.api.middleware.RequestId`);
- the API's error answers (`fictures.api.errors`): a refusal raised before the
  stream starts is the same JSON as on any route, never a stack trace.

Everything else (a preflight `OPTIONS`, another method, any other path,
websockets, the lifespan) goes on to `app` unchanged. The route is still
registered in the API app: the OpenAPI schema documents it there.
"""

from __future__ import annotations

import logging

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fictures.api import sse
from fictures.api.errors import exception_handlers
from fictures.api.middleware import RequestId

logger = logging.getLogger(__name__)

PATH = "/api/community/events"
_METHODS = frozenset({"GET", "HEAD"})


def _cors_origins() -> list[str]:
    import reflex as rx

    return list(rx.config.get_config().cors_allowed_origins)


async def _serve(scope: Scope, receive: Receive, send: Send) -> None:
    """The endpoint, with the API's error answers for what it raises before streaming."""
    request = Request(scope, receive)
    started = False

    async def watched_send(message: Message) -> None:
        nonlocal started
        started = True
        await send(message)

    try:
        response = await sse.community_events(request)
        await response(scope, receive, watched_send)
    except Exception as exc:
        if started:
            raise  # mid-stream: the server closes the connection, as on any route
        handler = next(h for cls in type(exc).__mro__ if (h := exception_handlers.get(cls)))
        answer = await handler(request, exc)
        await answer(scope, receive, send)


class StreamLane:
    def __init__(self, app: ASGIApp, cors_origins: list[str] | None = None):
        self.app = app
        origins = _cors_origins() if cors_origins is None else cors_origins
        self.lane = CORSMiddleware(
            RequestId(_serve),
            allow_origins=origins,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] in _METHODS:
            await self.lane(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def ahead_of(app: ASGIApp, cors_origins: list[str] | None = None) -> StreamLane:
    """`app`, with the event stream served ahead of it."""
    return StreamLane(app, cors_origins)
