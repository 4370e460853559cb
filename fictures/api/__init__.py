"""HTTP API for non-browser clients: REST, the SSE event stream, metrics and health.

`build()` makes the FastAPI app Reflex mounts itself under (`api_transformer`):
the REST routers (fictures.api.rest, fictures.api.notify), the event stream,
metrics and health (plain Starlette-style endpoints in their own modules,
registered here with their parameters and answers documented), the OpenAPI
schema at /api/openapi.json and interactive docs at /api/docs.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute

TITLE = "Fictures API"
VERSION = "1.0"
OPENAPI_URL = "/api/openapi.json"
DOCS_URL = "/api/docs"

_DESCRIPTION = """\
Write fiction, publish it, and follow the community live.

- **Auth**: `POST /api/auth/token` gives a bearer token; send it as
  `Authorization: Bearer <token>`. `DELETE /api/auth/token` revokes it.
- **Errors** are `{"detail": "a sentence"}`; input that does not fit is a 422
  whose `detail` lists `{"loc": [...], "msg": "..."}` per problem. A path
  under `/api/` that is not an operation here is a JSON 404.
- **Lists** are newest first, `limit` items a page; `next` is the URL of the
  page after (`before` = the last id of this one), null on the last page.
  Story lists carry summaries; `GET /api/stories/{story_id}` has the content.
- **Live events**: `GET /api/community/events` (Server-Sent Events).
"""

_STREAM_EVENT = {
    "type": "object",
    "description": "One Server-Sent Event: `connected` first, then each event "
    "(`story:published`, `post:created`, …) with its id and JSON data; `reset` "
    "when the stream cannot resume; `presence` on request.",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        **extra,
    }


def _status(*values: str, reasons: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {"status": {"type": "string", "enum": list(values)}}
    if reasons:
        properties["reasons"] = {"type": "array", "items": {"type": "string"}}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
    }


def _other_routes() -> list[BaseRoute]:
    """The event stream, metrics and health: endpoints that read their request
    themselves; only their documentation is declared here."""
    from fastapi import APIRouter
    from starlette.responses import PlainTextResponse

    from fictures.api import health, sse
    from fictures.api.metrics import metrics_endpoint
    from fictures.api.rest import ApiRoute
    from fictures.api.sse_response import EventStreamResponse

    bearer_optional = [{}, {"bearer": []}]
    router = APIRouter(route_class=ApiRoute)
    router.add_api_route(
        "/api/community/events", sse.community_events, methods=["GET"], tags=["live"],
        response_class=EventStreamResponse,
        summary="Every community event, live, in order, resumable (Server-Sent Events)",
        # The module's docstring, without its title line: the protocol, resuming, filters.
        description=(sse.__doc__ or "").partition("\n\n")[2] or sse.__doc__,
        responses={
            200: {
                "description": "The stream: `event: connected` first, then the events.",
                "content": {"text/event-stream": {"schema": _STREAM_EVENT}},
            },
            400: _error("A malformed `Last-Event-ID` / `last_event_id`."),
            401: _error("A bearer token that is not valid, or a private channel without one."),
            422: _error("An unknown channel, or a `story_id` that is not a positive integer."),
            429: _error("Too many open streams from this address (`FICTURES_SSE_MAX_PER_IP`)."),
        },
        openapi_extra={
            "security": bearer_optional,
            "parameters": [
                {"name": "channels", "in": "query", "required": False,
                 "description": "Comma-separated channels (default: every public one, and your "
                 "private ones with a bearer); `presence` adds who-is-reading frames.",
                 "schema": {"type": "string"}},
                {"name": "story_id", "in": "query", "required": False,
                 "description": "Only events about this story.",
                 "schema": {"type": "integer", "minimum": 1}},
                {"name": "last_event_id", "in": "query", "required": False,
                 "description": "Resume after this id (as the `Last-Event-ID` header).",
                 "schema": {"type": "string", "pattern": r"^[0-9]{1,18}(\.[0-9]{1,18})?$"}},
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "description": "Resume after this id (EventSource sends it on reconnecting).",
                 "schema": {"type": "string", "pattern": r"^[0-9]{1,18}(\.[0-9]{1,18})?$"}},
            ],
        },
    )
    router.add_api_route(
        "/api/metrics", metrics_endpoint, methods=["GET"], tags=["operations"],
        response_class=PlainTextResponse,
        summary="Prometheus metrics of this process",
        description="With `FICTURES_METRICS_TOKEN` set, send it as the bearer; "
        "without it, only clients on this host may read them.",
        responses={
            200: {"description": "Prometheus text format.",
                  "content": {"text/plain": {"schema": {"type": "string"}}}},
            401: _error("Not the metrics token."),
            403: _error("Not a client on this host (no metrics token is set)."),
        },
        openapi_extra={"security": bearer_optional},
    )
    router.add_api_route(
        "/api/health/live", health.live, methods=["GET"], tags=["operations"],
        summary="The process answers",
        responses={200: {"description": "Live.",
                         "content": {"application/json": {"schema": _status("live")}}}},
    )
    router.add_api_route(
        "/api/health/ready", health.ready, methods=["GET"], tags=["operations"],
        summary="The process can do its job (for load balancers)",
        description="The database answers, this process's Redis subscription is healthy "
        "and the outbox backlog is under `FICTURES_READY_MAX_BACKLOG`.",
        responses={
            200: {"description": "Ready.",
                  "content": {"application/json": {"schema": _status("ready")}}},
            503: {"description": "Not ready, and why: take it out of rotation.",
                  "content": {"application/json": {"schema": _status("unavailable", reasons=True)}}},
        },
    )
    return list(router.routes)


def routes() -> list[BaseRoute]:
    """Every API operation's route (the docs and schema routes apart)."""
    from fictures.api import notify, rest

    return [*rest.router.routes, *notify.router.routes, *_other_routes()]


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, with the body models the endpoints parse themselves."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi
        from pydantic.json_schema import models_json_schema

        from fictures.api.deps import BODY_MODELS

        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes,
            tags=app.openapi_tags,
        )
        _, defs = models_json_schema(
            [(model, "validation") for model in BODY_MODELS.values()],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        # FastAPI adds its own 422 to every operation with parameters. Where
        # input can fail validation the route documents ours (ValidationErrors);
        # elsewhere (string path ids: anything else is a 404) no 422 is answered.
        fastapi_422 = {"$ref": "#/components/schemas/HTTPValidationError"}
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                answer = operation.get("responses", {}).get("422", {})
                if answer.get("content", {}).get("application/json", {}).get("schema") == fastapi_422:
                    del operation["responses"]["422"]
        if "HTTPValidationError" not in json.dumps(schema["paths"]):
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
        app.openapi_schema = schema
    return app.openapi_schema


def build() -> FastAPI:
    """The FastAPI app Reflex mounts itself under (see `api_transformer`).

    Its middleware sees every HTTP request, the pages' included: bodies over
    the size limit are refused (413) before they are read, and unknown paths
    under /api/ answer a JSON 404 instead of Reflex's HTML page.
    """
    from fictures.api.errors import exception_handlers
    from fictures.api.middleware import ApiNotFound, BodySizeLimit, RequestId

    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=_DESCRIPTION,
        routes=routes(),
        openapi_url=OPENAPI_URL,
        docs_url=DOCS_URL,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        exception_handlers=exception_handlers,
        openapi_tags=[
            {"name": "accounts"}, {"name": "stories"}, {"name": "posts"},
            {"name": "notifications"}, {"name": "push"},
            {"name": "live", "description": "The event stream."},
            {"name": "operations", "description": "Metrics and health."},
        ],
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    # Reflex mounts its own app under this one later: the API's routes are the
    # ones known now (the operations, the schema and the docs).
    api_routes = list(app.routes)
    # Added innermost first: requests pass RequestId, BodySizeLimit, ApiNotFound.
    app.add_middleware(ApiNotFound, routes=api_routes)
    app.add_middleware(BodySizeLimit)
    app.add_middleware(RequestId)
    return app
