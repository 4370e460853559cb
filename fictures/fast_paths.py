"""The fast path ahead of the middleware: the event stream, which stays open for hours, skips the stacks.

An event stream (`GET /api/community/events`) stays open for hours, and its
request keeps alive every ASGI layer it passed on the way in. Through the whole
app that is about twenty: Reflex's outer app (its error middleware, CORS, its
context middleware, its exception middleware, the router and a mount), then
this API's FastAPI app (the same again, plus the body-size limit, the JSON 404s,
the request id and FastAPI's six `AsyncExitStack`s around the route). Each keeps
a coroutine frame and its closures for the stream's whole life, and every frame
written passed each layer's `send` wrapper on its way out.

`ahead_of(app)` puts the fast path in front of an ASGI app (the full app in
`fictures.fictures.App`; the bare API app in tests): a GET or HEAD of the
stream's path goes straight to the endpoint (`fictures.api.sse.community_events`),
with what it needs of the stack: the request id
(`fictures.api.middleware.request_id_for`, echoed and in every log line written
while serving it), CORS as Reflex configures it for every route (its
`cors_allowed_origins`, credentials allowed; Starlette's own `CORSMiddleware`
logic), and the API's error answers (`fictures.api.errors`: a refusal before the
stream starts is the same JSON as on any route). The headers depend on the
request alone, so they are added to the response's own before it starts:
nothing wraps `send`.

Everything else (a preflight `OPTIONS`, another method, any other path,
websockets, the lifespan) goes on to `app` unchanged. The stream's route is
still registered in the API app: the OpenAPI schema documents it there.

A websocket's scope gets the server's own `send` (`reflex_compat.RAW_SEND`):
room frames go to it at once when nothing is ahead of them in the tab's queue
(`reflex_compat.emit_to_room`), past the middleware's `send` wrappers.

The tabs' websocket itself stays on Reflex's path. Served ahead (straight to
Reflex's socket app) it measured a little leaner (a tab 220 → 207 KiB), and a
catch-up test failed with it about once in seven runs; the cause was a gap in
the feed's toaster (a tab cut off before its first load finished) that the
faster path hit more often, since fixed (fictures.live_feed.FeedToaster). The
direct room writes above take most of that path's saving per frame.
"""

from __future__ import annotations

import logging

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fictures import reflex_compat
from fictures.api import sse
from fictures.api.errors import exception_handlers
from fictures.api.middleware import request_id_for
from fictures.logs import request_id

logger = logging.getLogger(__name__)

STREAM_PATH = "/api/community/events"
_STREAM_METHODS = frozenset({"GET", "HEAD"})
# What the stream's response is given of the scope: its method (see `release_scope`).
_METHOD_ONLY: dict[str, Scope] = {m: {"type": "http", "method": m} for m in _STREAM_METHODS}


def _cors_origins() -> list[str]:
    import reflex as rx

    return list(rx.config.get_config().cors_allowed_origins)


async def _nowhere(message: Message) -> None:
    pass


class FastPaths:
    def __init__(self, app: ASGIApp, *, cors_origins: list[str] | None = None):
        self.app = app
        origins = _cors_origins() if cors_origins is None else cors_origins
        # Only its header logic is used (`send` on the start message), never as a layer.
        self.cors = CORSMiddleware(
            _nowhere, allow_origins=origins, allow_credentials=True, allow_methods=["*"], allow_headers=["*"],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != STREAM_PATH or scope["method"] not in _STREAM_METHODS:
            if scope["type"] == "websocket":
                # The server's own send, for room frames written past the middleware
                # (reflex_compat.emit_to_room): the socket's own frames still pass it.
                scope[reflex_compat.RAW_SEND] = send
            await self.app(scope, receive, send)
            return
        # The stream, served in this frame: it lives as long as the stream, so no
        # further coroutine of our own is kept (an idle stream's memory).
        rid = request_id_for(scope)
        token = request_id.set(rid)
        try:
            request = Request(scope, receive)
            try:
                response = await sse.community_events(request)
            except Exception as exc:  # noqa: BLE001  (answered below, as the API answers any error)
                handler = next(h for cls in type(exc).__mro__ if (h := exception_handlers.get(cls)))
                response = await handler(request, exc)
            del request  # and its parsed headers and query: not needed while the stream is open
            await self._add_headers(response, scope, rid)
            # Nothing reads the request's scope from here on (the response reads
            # its method only): its contents are let go while the stream is open.
            method_only = _METHOD_ONLY[scope["method"]]
            reflex_compat.release_scope(scope, send)
            await response(method_only, receive, send)
        finally:
            request_id.reset(token)

    async def _add_headers(self, response: Response, scope: Scope, rid: str) -> None:
        """The request id's and CORS's headers, as their middleware would add them."""
        start: Message = {"type": "http.response.start", "status": response.status_code,
                          "headers": [*response.raw_headers, (b"x-request-id", rid.encode())]}
        await self.cors.send(start, _nowhere, Headers(scope=scope))
        response.raw_headers = start["headers"]


def ahead_of(app: ASGIApp, *, cors_origins: list[str] | None = None) -> FastPaths:
    """`app`, with the event stream served ahead of it."""
    return FastPaths(app, cors_origins=cors_origins)
