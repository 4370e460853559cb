"""The process's event machinery: one bus, one outbox relay, one fan-out.

`lifespan` is registered on the app: it starts the relay and the subscriber
when a backend process starts and stops them cleanly when it ends, sending
every outbox row still unsent to Redis first (bounded by FLUSH_SECONDS: if
Redis cannot take them, the rows wait in the database for another relay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from functools import cache

import redis.exceptions

from fictures.events.bus import EventBus
from fictures.events.fanout import Fanout
from fictures.events.outbox import OutboxRelay
from fictures.logs import redact
from fictures.settings import redis_url, settings

logger = logging.getLogger(__name__)

# Bound on the last outbox flush when the process stops.
FLUSH_SECONDS = 3.0


@cache
def bus() -> EventBus:
    return EventBus(redis_url(), stream_key=settings.stream_key, maxlen=settings.stream_maxlen)


@cache
def fanout() -> Fanout:
    return Fanout(bus())


@cache
def relay() -> OutboxRelay:
    return OutboxRelay(bus(), seen_id=fanout().last_seen)


async def flush_outbox() -> int | None:
    """Send every unsent outbox row now (the relay's loop stopped); how many were
    sent, or None if Redis could not take them in time."""
    try:
        async with asyncio.timeout(FLUSH_SECONDS):
            sent = await relay().flush()
    except (TimeoutError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        logger.warning(
            "Outbox not flushed before exit (%s): its rows wait in the database for another relay",
            type(exc).__name__,
        )
        return None
    logger.info("Outbox flushed: %d rows sent to Redis before exit", sent)
    return sent


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    fanout_task = asyncio.create_task(fanout().run(), name="fictures-fanout")
    relay_task = asyncio.create_task(relay().run(), name="fictures-outbox-relay")
    logger.info("Event service started (Redis %s)", redact(bus().url))
    try:
        yield
    finally:
        relay_task.cancel()
        await asyncio.gather(relay_task, return_exceptions=True)
        try:
            # A row committed while the relay waited (its sweep, or a Redis backoff)
            # goes out now, not whenever another process's relay sweeps.
            await flush_outbox()
        finally:
            fanout_task.cancel()
            await asyncio.gather(fanout_task, return_exceptions=True)
            logger.info("Event service stopped")
