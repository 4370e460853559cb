"""HTTP API for non-browser clients: REST, the SSE event stream, and metrics."""

from starlette.applications import Starlette
from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    from starlette.routing import Route

    from fictures.api import rest, sse
    from fictures.api.metrics import metrics_endpoint

    return [
        *rest.routes,
        Route("/api/community/events", sse.community_events, methods=["GET"]),
        Route("/api/metrics", metrics_endpoint, methods=["GET"]),
    ]


def build() -> Starlette:
    """The Starlette app Reflex mounts itself under (see `api_transformer`)."""
    from fictures.api.errors import exception_handlers

    return Starlette(routes=routes(), exception_handlers=exception_handlers)
