"""GET /api/metrics: Prometheus text format, for this process."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from fictures import metrics


async def metrics_endpoint(request: Request) -> Response:
    metrics.ASYNCIO_TASKS.set(len(asyncio.all_tasks()))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
