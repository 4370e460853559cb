"""HTTP API for non-browser clients: REST, the SSE event stream, metrics and health."""

from starlette.applications import Starlette
from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    from starlette.routing import Route

    from fictures.api import health, notify, rest, sse
    from fictures.api.metrics import metrics_endpoint

    return [
        *rest.routes,
        *notify.routes,
        Route("/api/community/events", sse.community_events, methods=["GET"]),
        Route("/api/metrics", metrics_endpoint, methods=["GET"]),
        Route("/api/health/live", health.live, methods=["GET"]),
        Route("/api/health/ready", health.ready, methods=["GET"]),
    ]


def build() -> Starlette:
    """The Starlette app Reflex mounts itself under (see `api_transformer`).

    Its middleware sees every HTTP request, the pages' included: bodies over
    the size limit are refused (413) before they are read, and unknown paths
    under /api/ answer a JSON 404 instead of Reflex's HTML page.
    """
    from starlette.middleware import Middleware

    from fictures.api.errors import exception_handlers
    from fictures.api.middleware import ApiNotFound, BodySizeLimit, RequestId

    api_routes = routes()
    return Starlette(
        routes=api_routes,
        exception_handlers=exception_handlers,
        middleware=[
            Middleware(RequestId),
            Middleware(BodySizeLimit),
            Middleware(ApiNotFound, routes=api_routes),
        ],
    )
