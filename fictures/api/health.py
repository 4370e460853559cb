"""Health for load balancers and orchestrators.

- `GET /api/health/live`: the process answers (restart it if not).
- `GET /api/health/ready`: it can do its job: the database answers, this
  process's Redis subscription is healthy (its tabs and streams get events),
  and the outbox backlog is under `FICTURES_READY_MAX_BACKLOG`, and the process
  is not stopping (fictures.shutdown). Otherwise 503 with the reasons; take it
  out of rotation until it is 200 again.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, text
from sqlmodel import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from fictures import db, shutdown
from fictures.events import service
from fictures.models import OutboxEvent
from fictures.settings import settings

logger = logging.getLogger(__name__)

_DB_TIMEOUT = 2.0


async def live(request: Request) -> JSONResponse:
    return JSONResponse({"status": "live"})


def _backlog() -> int:
    with db.session() as s:
        s.exec(text("SELECT 1"))
        return s.exec(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.sent_at.is_(None))
        ).one()


async def ready(request: Request) -> JSONResponse:
    if shutdown.stopping():
        return JSONResponse({"status": "unavailable", "reasons": ["shutting down"]}, status_code=503)
    reasons: list[str] = []
    try:
        backlog = await asyncio.wait_for(run_in_threadpool(_backlog), _DB_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 (any failure means: not ready)
        logger.warning("Readiness: the database does not answer (%s)", type(exc).__name__)
        reasons.append("database unreachable")
    else:
        if backlog > settings.ready_max_backlog:
            reasons.append(f"outbox backlog {backlog} > {settings.ready_max_backlog}")
    if not service.fanout().healthy:
        reasons.append("Redis subscription down")
    if reasons:
        return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
    return JSONResponse({"status": "ready"})
