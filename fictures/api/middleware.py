"""ASGI middleware of the app's outer Starlette app (every HTTP request passes it).

- `BodySizeLimit`: a body larger than `settings.max_body_bytes` is refused with
  413 before it is read: from ``Content-Length`` at once, and for a chunked body
  (or one longer than it said) as soon as the bytes received pass the limit.
- `ApiNotFound`: a path under ``/api/`` that no API route serves answers a JSON
  404; without it the request falls through to Reflex, which serves its HTML page.
- `RequestId`: each HTTP request gets an id (the client's or proxy's
  ``X-Request-ID`` if it looks like one, else a new one), echoed in the response
  and carried by every log line written while serving it (fictures.logs).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fictures.errors import PayloadTooLarge
from fictures.logs import request_id
from fictures.settings import settings

logger = logging.getLogger(__name__)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body larger than {limit} bytes")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int | None = None):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes or settings.max_body_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _answer(_too_large(limit), scope, receive, send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised where the endpoint reads the body: the API's error
                    # handler answers it like any domain error.
                    raise _too_large(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except PayloadTooLarge as exc:
            # Read by something without the API's handlers (Reflex's own routes).
            if started:
                raise
            await _answer(exc, scope, receive, send)


class ApiNotFound:
    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] == "http"
            and (path == "/api" or path.startswith("/api/"))
            # PARTIAL (a known path, another method) goes on to the router's 405.
            and all(route.matches(scope)[0] is Match.NONE for route in self.routes)
        ):
            response = JSONResponse({"detail": f"no API endpoint at {path[:200]}"}, 404)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _answer(exc: PayloadTooLarge, scope: Scope, receive: Receive, send: Send) -> None:
    logger.info("Refused a request body over the limit on %s %s", scope["method"], scope["path"])
    # The client may still be sending: the server closes the connection after this.
    response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers={"Connection": "close"})
    await response(scope, receive, send)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def request_id_for(scope: Scope) -> str:
    """The request's id: the client's or proxy's `X-Request-ID` if it looks like one, else a new one."""
    given = Headers(scope=scope).get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class RequestId:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_for(scope)
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
