"""Stopping a backend process gracefully, and fast: SIGTERM (systemd, `kill`) or Ctrl+C.

An instance is `scripts/dev.py serve` -> `reflex run` (Granian's main process)
-> FICTURES_WORKERS Granian worker processes. systemd signals all of them at
once (KillMode=control-group); a SIGTERM that reaches `dev.py` alone is passed
on to the whole tree as SIGINT; Granian's main process forwards a stop to each
worker and kills one still running FICTURES_STOP_SECONDS later. Each worker:

1. At the signal (`_on_signal`, hooked in by fictures.reflex_compat): Granian
   stops accepting connections; /api/health/ready answers 503 to a request
   still arriving on an open connection; every SSE stream gets a `retry:` hint
   and ends (fictures.api.sse: its subscription closes, the stream says goodbye).
2. Granian waits for the HTTP responses in progress to end (which step 1 makes
   quick: an SSE stream never ends by itself); then it runs the lifespan
   shutdown: the lifespan tasks stop in reverse order (presence takes this
   process's readers out of their rooms), the event service sends every outbox
   row still unsent to Redis (fictures.events.service), and last this module's
   lifespan removes the process's live gauges from the metrics directory and
   logs the exit.

Tabs need nothing: Granian closes the websockets of a stopping worker itself
(the tab hub sees them leave at once), and Reflex's client reconnects on a
closed transport, through the load balancer to another instance, where its
state (in Redis) and the events it missed are waiting. (Closing them first
through Engine.IO gained nothing: its close packet never reached the browser.)

One INFO line per phase: "Stopping…", "Closed N event streams…", "Outbox
flushed…", "Exiting…".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import reflex as rx

from fictures import metrics, reflex_compat
from fictures.api import sse

logger = logging.getLogger(__name__)

# Bound on waiting for the drain at exit.
DRAIN_WAIT_SECONDS = 2.0


@dataclass
class _Process:
    app: rx.App | None = None
    since: float | None = None  # when the stop signal came (monotonic)
    drain: asyncio.Task | None = None


_process = _Process()


def stopping() -> bool:
    """Whether this process got its stop signal."""
    return _process.since is not None


def install() -> None:
    """Drain this process when its Granian worker gets SIGTERM or SIGINT."""
    reflex_compat.on_worker_stop_signal(_on_signal)


def _on_signal(signum: int) -> None:
    if _process.since is not None:
        return  # the same stop again (Granian's main process forwards one)
    _process.since = time.monotonic()
    logger.info(
        "Stopping (%s): accepting no new connections; closing %d event streams; "
        "%d tabs' websockets close (they reconnect)",
        signal.Signals(signum).name,
        sse.open_streams(),
        reflex_compat.open_sockets(_process.app) if _process.app is not None else 0,
    )
    _process.drain = asyncio.get_running_loop().create_task(drain(), name="fictures-drain")


async def drain() -> int:
    """Close every event stream of this process (retry hint); returns how many closed."""
    started = time.monotonic()
    streams = sse.close_all_streams()
    # Each stream says goodbye and ends at once; any left after the grace period is cancelled.
    left = await sse.wait_streams_closed(sse.STOP_GRACE_SECONDS + 1.0)
    logger.info(
        "Closed %d event streams (told to retry in %d ms) in %.1fs%s",
        streams - left, sse.RETRY_MS, time.monotonic() - started,
        f"; {left} cancelled" if left else "",
    )
    return streams - left


@contextlib.asynccontextmanager
async def lifespan(app: rx.App) -> AsyncIterator[None]:
    """Registered first, so it stops last: the process's final words."""
    _process.app = app
    try:
        yield
    finally:
        if _process.drain is not None:
            await asyncio.wait({_process.drain}, timeout=DRAIN_WAIT_SECONDS)
        metrics.forget_this_process()
        _process.app = None
        if _process.since is None:
            logger.info("Exiting")
        else:
            logger.info("Exiting, %.1fs after the stop signal", time.monotonic() - _process.since)
