"""GET /api/metrics: Prometheus text format, for this process (or, with several
workers, the whole instance: see fictures.metrics); not for the public.

With `FICTURES_METRICS_TOKEN` set, a scraper sends `Authorization: Bearer
<token>`. Without it, only a client on this host (a loopback peer, with no
X-Forwarded-For: a request relayed by a proxy on this host is not local) may read it.
"""

from __future__ import annotations

import hmac
from ipaddress import ip_address

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fictures import metrics
from fictures.api.deps import bearer_token
from fictures.settings import settings


def _is_local(request: Request) -> bool:
    if request.client is None or "x-forwarded-for" in request.headers:
        return False
    try:
        return ip_address(request.client.host).is_loopback
    except ValueError:
        return False


def _refusal(request: Request) -> Response | None:
    if settings.metrics_token:
        given = bearer_token(request) or ""
        if hmac.compare_digest(given.encode(), settings.metrics_token.encode()):
            return None
        return JSONResponse(
            {"detail": "metrics need the bearer token set in FICTURES_METRICS_TOKEN"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if _is_local(request):
        return None
    return JSONResponse(
        {"detail": "metrics are served to this host only (or set FICTURES_METRICS_TOKEN)"},
        status_code=403,
    )


async def metrics_endpoint(request: Request) -> Response:
    if (refusal := _refusal(request)) is not None:
        return refusal
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
