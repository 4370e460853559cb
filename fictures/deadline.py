"""A deadline that moves on every wait, kept by one timer; many deadlines, kept by one sweep.

A tab's websocket writer gives up waiting for its next packet after Engine.IO's
ping timeout (fictures.reflex_compat `lighter_socket_writer`). It waits again
after every packet it sends, so a
timer made and cancelled per wait (as `asyncio.timeout` or `call_later` does)
is a timer-heap push and a cancel per event per connection: thousands for one
broadcast. `MovingDeadline` keeps one timer instead: `start` only records the
new deadline (a new timer only when the one pending would fire too late), and
the timer, when it fires early, sleeps on to the deadline. A busy connection
makes no timer per event; an idle one about one per period.

`Sweep` goes further for deadlines that need not be exact: one timer per event
loop (and period) checks every owner's deadline, so thousands of open SSE
streams keep no timer each (a timer, the context it copies and the bound
method it calls: ~0.5 KiB per stream for their keep-alive ping and stall
check), at the price of an owner being late by up to the period.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)


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


class Swept(Protocol):
    def swept(self, now: float) -> None:
        """The sweep's look at this owner's deadline (`now` is the loop's time)."""


class Sweep:
    """Every `period` seconds, calls `swept(now)` on each owner added.

    The timer runs only while there are owners. Owners are held until
    `discard`ed (an owner discards itself when it is done or its deadline
    passed). Use `sweep(period)`: one per running loop and period."""

    # No reference to its loop (the loop it is made in runs it): `sweep` keeps a
    # loop's sweeps only for as long as the loop lives.
    __slots__ = ("_owners", "_timer", "period")

    def __init__(self, period: float):
        self.period = period
        self._owners: set[Swept] = set()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._owners)

    def add(self, owner: Swept) -> None:
        self._owners.add(owner)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.period, self._tick)

    def discard(self, owner: Swept) -> None:
        self._owners.discard(owner)

    def _tick(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for owner in list(self._owners):
            try:
                owner.swept(now)
            except Exception:
                logger.exception("Sweep: %r failed its deadline check", owner)
        if self._owners:
            self._timer = loop.call_later(self.period, self._tick)


_sweeps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Sweep]] = weakref.WeakKeyDictionary()


def sweep(period: float) -> Sweep:
    """The running loop's sweep with this period."""
    loop = asyncio.get_running_loop()
    if (by_period := _sweeps.get(loop)) is None:
        by_period = _sweeps[loop] = {}
    if (found := by_period.get(period)) is None:
        found = by_period[period] = Sweep(period)
    return found
