"""Which backend processes are alive, so that the tabs of a dead one keep their state.

Reflex links each tab's token to its socket with a record in Redis (kept for
an hour), and a tab that connects with a token that already has a record is
taken for a duplicated browser tab: it is handed a NEW token, that is a fresh,
empty state. A process that stops cleanly deletes its tabs' records as their
sockets close; one that dies (SIGKILL, the OOM killer, a crash) leaves them,
so each of its tabs, reconnecting through the load balancer to another
instance, would lose its state there: an author's unsaved text, a reader's NEW
badges (tests/e2e/test_failover.py).

So each process holds, for as long as it lives, a subscription to a channel of
its own, `<stream_key>:process:<its Reflex instance id>`: Redis drops a
subscription the moment its connection closes, which the kernel does for a
process that died, so `PUBSUB NUMSUB` tells at once whether the owner of a
record is still there. A record whose owner has no subscriber is deleted (if
unchanged) before Reflex links the tab, which then keeps its token and state.
A process that is stopping (SIGTERM) closes its tabs' sockets a moment before
it exits: a tab reconnecting meanwhile waits up to 2 s for its old process to
be gone or to have deleted the record itself. A record whose process is still
alive after that is left alone, so a duplicated browser tab still gets a token
of its own (fictures.reflex_compat.keep_tokens_of_dead_processes).

A live process whose subscription is down for a moment (a Redis blip) looks
dead meanwhile: a duplicated tab opened in that second would share its
original's token. Redis down altogether: nothing is deleted, Reflex decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import redis.exceptions

from fictures import reflex_compat
from fictures.settings import redis_url, settings

logger = logging.getLogger(__name__)

_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
# How long start-up waits for the first subscription (Redis may be down: go on).
_FIRST_SUBSCRIBE_SECONDS = 2.0


def channel(instance_id: str) -> str:
    return f"{settings.stream_key}:process:{instance_id}"


class Liveness:
    def __init__(self, url: str):
        self.redis = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._listen_client = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_keepalive=True, health_check_interval=5
        )
        self.subscribed = asyncio.Event()

    async def alive(self, instance_id: str) -> bool:
        """Whether the process with this Reflex instance id holds its subscription."""
        [(_, count)] = await self.redis.pubsub_numsub(channel(instance_id))
        return count > 0

    async def run(self, instance_id: str) -> None:
        """Hold this process's subscription; resubscribe with capped backoff."""
        backoff = settings.redis_backoff_initial
        while True:
            pubsub = self._listen_client.pubsub()
            try:
                await pubsub.subscribe(channel(instance_id))
                self.subscribed.set()
                backoff = settings.redis_backoff_initial
                while True:  # nothing is published there: this only notices a dead connection
                    await pubsub.get_message(timeout=5.0)
            except _REDIS_DOWN as exc:
                logger.info("Liveness subscription dropped (%s); resubscribing in %.2fs", exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, settings.redis_backoff_max)
            finally:
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        await self.redis.aclose()
        await self._listen_client.aclose()


@contextlib.asynccontextmanager
async def lifespan(app: object) -> AsyncIterator[None]:
    """Announce this process while it lives; let tabs of dead ones keep their state.
    Registered after Reflex's own start-up (which gives the process its instance id)."""
    instance_id = reflex_compat.token_manager_instance_id(app)  # type: ignore[arg-type]
    if instance_id is None:
        yield  # tab state in this process's memory: no records in Redis to go stale
        return
    liveness = Liveness(redis_url())
    reflex_compat.keep_tokens_of_dead_processes(app, liveness.alive)  # type: ignore[arg-type]
    task = asyncio.create_task(liveness.run(instance_id), name="fictures-liveness")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(liveness.subscribed.wait(), _FIRST_SUBSCRIBE_SECONDS)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await liveness.close()
