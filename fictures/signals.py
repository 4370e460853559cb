"""The ephemeral lane: signals every process hears at once, and that nobody replays.

Durable events (a story published, a post written) go through the outbox, the
Redis stream and replay (fictures.events). Signals are the other lane: who is
reading a story, who is typing. They are worth something only now, so they
never touch the database or the stream: a signal is one Redis PUBLISH on
`<stream_key>:signals`, and each process runs one subscription (a lifespan
task) that hands it to the handlers registered for its kind.

A signal lost while Redis or a subscription was down is repaired by the state
it describes, which lives in Redis with TTLs: presence is recomputed from
Redis after every (re)subscribe (`on_resync`), a typing line expires by itself.

    signals.hub().on("typing", handle)            # async def handle(data: dict)
    await signals.hub().send("typing", room="story:7", user="ada", until=...)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from fictures.settings import redis_url, settings

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[None]]
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class Signals:
    def __init__(self, url: str, *, channel: str):
        self.channel = channel
        self.redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=2, socket_timeout=2
        )
        self._listen_client = aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=2, socket_keepalive=True,
            health_check_interval=5,
        )
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)
        self._resync: list[Callable[[], Awaitable[None]]] = []
        self.healthy = False
        self._warned = False

    def on(self, kind: str, handler: Handler) -> None:
        """Run `handler(data)` for every signal of `kind` (from any process, this one too)."""
        self._handlers[kind].append(handler)

    def off(self, kind: str, handler: Handler) -> None:
        """Stop running `handler` for `kind` (its owner is shutting down)."""
        with contextlib.suppress(ValueError):
            self._handlers[kind].remove(handler)

    def on_resync(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook()` after each (re)subscribe: signals sent meanwhile were lost."""
        self._resync.append(hook)

    def off_resync(self, hook: Callable[[], Awaitable[None]]) -> None:
        with contextlib.suppress(ValueError):
            self._resync.remove(hook)

    async def send(self, kind: str, **data: Any) -> bool:
        """Publish a signal; False (and a warning once per outage) if Redis is down:
        a signal is never worth failing a request for."""
        try:
            await self.redis.publish(self.channel, json.dumps({"kind": kind, **data}))
        except _REDIS_DOWN as exc:
            if not self._warned:
                self._warned = True
                logger.warning("Signals cannot reach Redis (%s); dropped until it is back", exc)
            return False
        self._warned = False
        return True

    async def close(self) -> None:
        await self.redis.aclose()
        await self._listen_client.aclose()

    async def _dispatch(self, raw: str) -> None:
        try:
            data = json.loads(raw)
            kind = data.pop("kind")
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("Ignored a malformed signal: %.200s", raw)
            return
        for handler in self._handlers.get(kind, ()):
            try:
                await handler(data)
            except Exception:
                logger.exception("Handling a %s signal failed", kind)

    async def run(self) -> None:
        """The process's one subscription; reconnects with capped exponential backoff."""
        backoff = settings.redis_backoff_initial
        while True:
            pubsub = self._listen_client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.healthy = True
                backoff = settings.redis_backoff_initial
                for hook in self._resync:
                    try:
                        await hook()
                    except _REDIS_DOWN:
                        raise
                    except Exception:
                        logger.exception("A signal resync hook failed")
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        await self._dispatch(message["data"])
            except _REDIS_DOWN as exc:
                self.healthy = False
                logger.warning("Signal subscription dropped (%s); reconnecting in %.2fs", exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, settings.redis_backoff_max)
            finally:
                self.healthy = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


@cache
def hub() -> Signals:
    return Signals(redis_url(), channel=f"{settings.stream_key}:signals")


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    task = asyncio.create_task(hub().run(), name="fictures-signals")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
