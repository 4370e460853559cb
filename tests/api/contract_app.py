"""The API app as the contract test serves it: `fictures.api.build()` with the
process's event service (outbox relay and Redis subscription) running, as in
the real app (the event stream in its lane ahead of the API's middleware,
fictures.fast_paths), so the event stream streams and /api/health/ready is ready.

Run in a process of its own (tests/api/test_contract_api.py starts it with
uvicorn): its Redis clients and event loop are its own, not the test session's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp


def app() -> ASGIApp:
    from fictures import fast_paths, logs
    from fictures.api import build
    from fictures.events import service

    logs.configure()
    api = build()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with service.lifespan():
            yield

    api.router.lifespan_context = lifespan
    # As the app serves it: the event stream ahead of the API's middleware.
    return fast_paths.ahead_of(api)
