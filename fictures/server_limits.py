"""Process tuning for many long-lived connections: Granian's limits, the GC, and
how long a stopping worker may take.

Connection limits of the HTTP server Reflex starts (Granian).

Reflex 0.10 constructs Granian without a `backpressure` argument, so each
worker serves at most `backlog // workers` = 1024 concurrent requests, and
every open SSE stream is one: the 1,024th stream froze the server (measured in
benchmarks/RESULTS.md). This raises the default to `FICTURES_MAX_CONNECTIONS`
and the open-file limit, for servers constructed after it runs (rxconfig.py calls it in the `reflex`
command's process, before the server starts).
"""

from __future__ import annotations

import gc
import logging

from fictures.reflex_compat import bound_granian_worker_stop, raise_granian_limits, serve_http1_only

logger = logging.getLogger(__name__)


def raise_connection_limits(limit: int) -> None:
    """Let the server hold `limit` connections: Granian's backpressure, and the
    process's open-file limit (up to the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limit + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        logger.debug("Open-file limit raised from %s to %s", soft, new_soft)
    raise_granian_limits(limit)


def http1_only() -> None:
    """Serve HTTP/1.1 only: an idle HTTP connection (an SSE stream) then costs
    11 KiB less; a websocket costs the same (see reflex_compat.serve_http1_only)."""
    serve_http1_only()


def bound_worker_stop(seconds: int) -> None:
    """A worker still running `seconds` after it was told to stop is killed by
    Granian's main process (fictures.shutdown makes a worker stop in a second or
    two; this bounds a stuck one), and the main process acts on its own SIGTERM
    at once, without reporting workers that stopped on the same signal as
    crashed (see reflex_compat.bound_granian_worker_stop)."""
    bound_granian_worker_stop(seconds)


def tune_gc(young_threshold: int = 50_000) -> None:
    """Keep the garbage collector's full scans off the fan-out path.

    A worker holding a thousand tabs keeps hundreds of megabytes of long-lived
    objects; CPython's full (generation 2) collections then pause the loop for
    150+ ms, which was the whole p99 of a broadcast to 1,000 tabs (measured with
    gc.callbacks during benchmarks/fanout.py). Objects alive at start-up (the
    compiled app) are frozen out of collection, and a larger young generation
    makes full scans rare; cyclic garbage is still collected.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, max(middle, 20), max(old, 100))
    logger.debug("GC tuned: %d start-up objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold())
