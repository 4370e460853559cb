"""The process's event machinery: one bus, one outbox relay, one fan-out.

`lifespan` is registered on the app: it starts the relay and the subscriber
when a backend process starts and stops them cleanly when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from functools import cache

from fictures.events.bus import EventBus
from fictures.events.fanout import Fanout
from fictures.events.outbox import OutboxRelay
from fictures.logs import redact
from fictures.settings import redis_url, settings

logger = logging.getLogger(__name__)


@cache
def bus() -> EventBus:
    return EventBus(redis_url(), stream_key=settings.stream_key, maxlen=settings.stream_maxlen)


@cache
def fanout() -> Fanout:
    return Fanout(bus())


@cache
def relay() -> OutboxRelay:
    return OutboxRelay(bus(), seen_id=fanout().last_seen)


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    tasks = [
        asyncio.create_task(fanout().run(), name="fictures-fanout"),
        asyncio.create_task(relay().run(), name="fictures-outbox-relay"),
    ]
    logger.info("Event service started (Redis %s)", redact(bus().url))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        logger.info("Event service stopped")
