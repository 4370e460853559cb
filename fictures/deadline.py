"""A deadline that moves on every wait, kept by one timer.

An SSE stream gives up waiting for its next event after its keep-alive time
(fictures.events.fanout `Subscription.get(idle=...)`), and a tab's websocket
writer after Engine.IO's ping timeout (fictures.reflex_compat
`lighter_socket_writer`). Both wait again after every event they send, so a
timer made and cancelled per wait (as `asyncio.timeout` or `call_later` does)
is a timer-heap push and a cancel per event per connection: thousands for one
broadcast. `MovingDeadline` keeps one timer instead: `start` only records the
new deadline (a new timer only when the one pending would fire too late), and
the timer, when it fires early, sleeps on to the deadline. A busy connection
makes no timer per event; an idle one about one per period.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class MovingDeadline:
    """Calls a wait's `on_expiry` when the wait started with `start` lasts until its deadline.

    `stop` ends the wait (its deadline no longer applies; the pending timer, when
    it fires, goes away); `cancel` also drops the timer (the owner is done). The
    callback is held only while a wait lasts, so an owner's callback (a bound
    method) makes no lasting reference cycle."""

    __slots__ = ("_on_expiry", "_timer", "_until")

    def __init__(self) -> None:
        self._on_expiry: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._until = 0.0  # loop time the current wait gives up (while `_on_expiry` is set)

    @property
    def timer(self) -> asyncio.TimerHandle | None:
        """The pending timer (one per deadline, however often it moves)."""
        return self._timer

    def start(self, loop: asyncio.AbstractEventLoop, seconds: float, on_expiry: Callable[[], None]) -> None:
        until = self._until = loop.time() + seconds
        self._on_expiry = on_expiry
        timer = self._timer
        if timer is None or timer.when() > until:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(until, self._fire, loop)

    def stop(self) -> None:
        self._on_expiry = None

    def cancel(self) -> None:
        self._on_expiry = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if (on_expiry := self._on_expiry) is None:
            return  # not waiting: the next `start` makes a timer again
        if loop.time() >= self._until:
            self._on_expiry = None
            on_expiry()
        else:
            self._timer = loop.call_at(self._until, self._fire, loop)
