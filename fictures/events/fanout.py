"""One Redis subscription per process, copied into a bounded queue per local subscriber.

Local subscribers are SSE streams and the live-tab dispatcher. A subscriber
that falls too far behind is marked overflowed and closed (its consumer sends
the client a `reset`) instead of slowing anyone else down.

On every (re)connect the subscriber first subscribes, then reads the streams
for anything after the last ids it delivered, so a Redis outage or a dropped
connection loses nothing; ids already delivered are skipped, so nothing shows twice.
Public and private events are numbered in separate sequences, so "already
delivered" is tracked per sequence (`last_id`, `last_private_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import Protocol

import redis.exceptions

from fictures import metrics
from fictures.deadline import Sweep, sweep
from fictures.events.bus import EventBus
from fictures.events.schema import ALL_CHANNELS, CommunityEvent, MalformedEvent, parse_event
from fictures.settings import settings

logger = logging.getLogger(__name__)

_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class Idle:
    """What `Subscription.get` returns when nothing arrived within its `idle` seconds."""


IDLE = Idle()


# At most this many messages read at once from the subscription (a burst).
_BURST = 256


class DirectConsumer(Protocol):
    def take(self, event: CommunityEvent) -> bool:
        """Deal with `event` now (True), or leave it to the queue (False). Never raises."""


class Subscription:
    """A local subscriber's bounded queue of events.

    A deque and one waiter future, not an `asyncio.Queue`: `dispatch` offers each
    event to every subscriber (thousands of SSE streams), so an offer is an
    append and, for a subscriber waiting, one `set_result`; and `get` can give
    up after an idle time (an SSE stream's keep-alive ping) without a timer or a
    task of its own: the loop's sweep for that idle time (fictures.deadline)
    looks at every waiting subscription's start every quarter of it, so an
    idle wait ends between `idle` and `1.25 * idle` seconds. A consumer that can
    take an event at once while it waits sets `direct`, and `offer` hands it the
    event (when nothing is queued ahead of it) instead of waking it. The deque
    exists only while events wait: an idle subscription (most of thousands of
    open streams, most of the time) does not keep its 64-slot block."""

    __slots__ = ("_idle", "_items", "_since", "_sweep", "_waiter", "closed", "direct", "maxsize", "overflowed")

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.overflowed = False
        self.closed = False
        self._items: deque[CommunityEvent] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._since: float | None = None  # loop time a `get(idle)` began waiting
        self._idle = 0.0  # that wait's idle seconds
        self._sweep: Sweep | None = None  # the sweep that looks at it
        # Set by a consumer that can take an event at once while it waits (an SSE
        # stream writing the shared frame straight to its connection): `offer`
        # hands it the event instead of queueing it and waking the consumer.
        self.direct: DirectConsumer | None = None

    def offer(self, event: CommunityEvent, *, direct: bool = True) -> bool:
        """Queue `event` (False if closed or too far behind); with `direct`, a
        waiting direct consumer takes it instead."""
        if self.closed:
            return False
        items = self._items
        if items is None:
            waiter = self._waiter
            if direct and self.direct is not None and waiter is not None and not waiter.done() and self._taken(event):
                return True  # taken while it waits: nothing queued, no one woken
            items = self._items = deque()
        elif len(items) >= self.maxsize:
            self.overflowed = True
            self.close()
            return False
        items.append(event)
        self._wake()
        return True

    def close(self) -> None:
        """No more events; `get` returns what is queued, then None."""
        if not self.closed:
            self.closed = True
            self.direct = None
            self._wake()
            if self._sweep is not None:
                self._sweep.discard(self)
                self._sweep = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _taken(self, event: CommunityEvent) -> bool:
        try:
            return self.direct is not None and self.direct.take(event)
        except Exception:
            # A broken consumer must not stop the fan-out for every other one.
            logger.exception("A direct consumer failed to take event #%s; queued instead", event.id)
            return False

    def written(self) -> None:
        """A direct consumer wrote something while the subscription waits: the
        wait's idle time starts again (its next keep-alive ping can wait)."""
        if self._since is not None and self._waiter is not None:
            self._since = self._waiter.get_loop().time()

    def nudge(self) -> None:
        """Wake a waiting `get` or `wait` without an event (it gives IDLE)."""
        self._wake()

    def swept(self, now: float) -> None:
        """The sweep's look: a wait that lasted its idle time ends (`get` gives IDLE)."""
        if self._since is not None and now - self._since >= self._idle:
            self._wake()

    def pending(self) -> int:
        return len(self._items) if self._items is not None else 0

    async def get(self, idle: float | None = None) -> CommunityEvent | Idle | None:
        """The next event; None once closed and drained (check `overflowed`);
        `IDLE` if `idle` seconds (up to a quarter more) passed with nothing."""
        if (waiting := self.wait(idle)) is not None:
            try:
                await waiting
            finally:
                self._waiter = self._since = None
        return self.next()

    def wait(self, idle: float | None = None) -> asyncio.Future[None] | None:
        """What to await before `next` (None: nothing, it has an answer now).

        `get` in two steps, for a caller that waits for as long as a stream stays
        open: awaiting the future itself keeps no coroutine of `get`'s."""
        if self._items is not None or self.closed:
            return None
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        if idle is not None:
            if (looking := self._sweep) is None or looking.period != idle / 4:
                if looking is not None:
                    looking.discard(self)
                self._sweep = looking = sweep(idle / 4)
                looking.add(self)
            self._since, self._idle = loop.time(), idle
        return waiter

    def next(self) -> CommunityEvent | Idle | None:
        """After `wait`: the next event, `IDLE`, or None once closed and drained."""
        self._waiter = self._since = None
        items = self._items
        if items:
            event = items.popleft()
            if not items:
                self._items = None
            return event
        return None if self.closed else IDLE

    def take(self, limit: int) -> list[CommunityEvent]:
        """Up to `limit` more events already queued, without waiting."""
        items = self._items
        if not items:
            return []
        taken = [items.popleft() for _ in range(min(limit, len(items)))]
        if not items:
            self._items = None
        return taken


class _Subscribing:
    """`Fanout.subscribe`'s context: a plain object, not a generator-based context
    manager, because an SSE stream keeps it for as long as it stays open."""

    __slots__ = ("sub", "subscriptions")

    def __init__(self, subscriptions: set[Subscription], sub: Subscription):
        self.subscriptions, self.sub = subscriptions, sub

    async def __aenter__(self) -> Subscription:
        self.subscriptions.add(self.sub)
        return self.sub

    async def __aexit__(self, *exc_info: object) -> None:
        self.subscriptions.discard(self.sub)
        self.sub.close()


class Fanout:
    def __init__(self, bus: EventBus):
        self.bus = bus
        # The newest id delivered, per sequence: public (what tabs and public
        # streams resume from) and private (drafts, for their authors' streams).
        self.last_id = 0
        self.last_private_id = 0
        self.healthy = False
        self._subscriptions: set[Subscription] = set()
        self._health_listeners: list[Callable[[bool], None]] = []
        self._started = asyncio.Event()

    # ------------------------------------------------------------ local side

    def subscribe(self, maxsize: int | None = None) -> _Subscribing:
        """`async with fanout.subscribe() as sub:` every event from now on, until the block ends."""
        return _Subscribing(self._subscriptions, Subscription(maxsize or settings.sse_queue_size))

    def on_health_change(self, listener: Callable[[bool], None]) -> None:
        self._health_listeners.append(listener)

    def off_health_change(self, listener: Callable[[bool], None]) -> None:
        with contextlib.suppress(ValueError):
            self._health_listeners.remove(listener)

    def last_seen(self, private: bool) -> int:
        """The newest id delivered in the public or the private sequence."""
        return self.last_private_id if private else self.last_id

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def _set_health(self, healthy: bool) -> None:
        if healthy == self.healthy:
            return
        self.healthy = healthy
        logger.info("Redis subscription %s", "healthy" if healthy else "lost")
        for listener in list(self._health_listeners):
            try:
                listener(healthy)
            except Exception:
                logger.exception("Health listener failed")

    def dispatch(self, event: CommunityEvent, *, direct: bool = True) -> int:
        """Hand an event to every local subscriber, once, in id order (per sequence);
        `direct=False` (one of a burst) queues it even for a direct consumer."""
        assert event.id is not None
        if event.public:
            if event.id <= self.last_id:
                return 0
            self.last_id = event.id
        else:
            if event.id <= self.last_private_id:
                return 0
            self.last_private_id = event.id
        delivered = 0
        for sub in list(self._subscriptions):
            if sub.offer(event, direct=direct):
                delivered += 1
        return delivered

    # ------------------------------------------------------------ Redis side

    async def wait_started(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._started.wait(), timeout)

    async def run(self) -> None:
        """The process's one Redis subscription; reconnects with capped exponential backoff."""
        backoff = settings.redis_backoff_initial
        first = True
        while True:
            try:
                if first:
                    # Start from now (read before subscribing, so nothing slips
                    # between the two): history before this process is not replayed.
                    self.last_id = max(self.last_id, await self.bus.head())
                    self.last_private_id = max(
                        self.last_private_id, await self.bus.head(private=True)
                    )
                    first = False
                pubsub = self.bus.pubsub()
                try:
                    await pubsub.subscribe(*ALL_CHANNELS)
                    await self._catch_up()
                    self._set_health(True)
                    self._started.set()
                    backoff = settings.redis_backoff_initial
                    while True:
                        # A timeout, not a blocking listen, so health-check PINGs go out.
                        message = await pubsub.get_message(timeout=1.0)
                        if message is None:
                            continue
                        # What else has arrived already: a burst goes through the
                        # subscribers' queues (an SSE stream writes what it finds
                        # there in one chunk) rather than to direct consumers one
                        # event at a time.
                        burst = [message]
                        while len(burst) < _BURST and (more := await pubsub.get_message(timeout=0)):
                            burst.append(more)
                        for received in burst:
                            if received["type"] == "message":
                                self._receive(received["channel"], received["data"], direct=len(burst) == 1)
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            except asyncio.CancelledError:
                self._set_health(False)
                raise
            except _REDIS_DOWN as exc:
                self._set_health(False)
                self._started.set()
                metrics.REDIS_RECONNECTS.inc()
                logger.warning("Redis subscription dropped (%s); reconnecting in %.2fs", exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, settings.redis_backoff_max)

    async def _catch_up(self) -> None:
        """Deliver what was sent while unsubscribed (pub/sub drops it; the streams keep it)."""
        for private, last in ((False, self.last_id), (True, self.last_private_id)):
            if not await self.bus.covers(last, private=private):
                logger.warning(
                    "History no longer covers %s event #%s: some events were missed",
                    "private" if private else "public", last,
                )
        missed = 0
        async for stored in self.bus.replay(self.last_id, self.last_private_id):
            self._receive(stored.channel, stored.data, direct=False)
            missed += 1
        if missed:
            logger.info("Caught up %d events missed while disconnected", missed)

    def _receive(self, channel: str, data: str, *, direct: bool = True) -> None:
        try:
            event = parse_event(channel, data)
        except MalformedEvent as exc:
            metrics.MALFORMED.inc()
            logger.warning("Skipped a malformed message on %s: %s", channel, exc)
            return
        self.dispatch(event, direct=direct)
