"""Prometheus metrics, exported at /api/metrics.

One process (tests, a bare `reflex run`): the process's own registry.

Several workers: `scripts/dev.py serve` gives each instance a fresh directory in
PROMETHEUS_MULTIPROC_DIR, and prometheus-client's multiprocess mode (chosen when
it is imported, from that variable) has every process write its values to files
of its own there; a scrape reaches one worker, which reads every file
(`render`). Counters and histograms are summed over every process the instance
ran (a stopped worker's counts stay); gauges by their `multiprocess_mode`:
streams and tabs summed over the live workers (`livesum`), the outbox backlog
the largest a live worker saw (`livemax`: every relay counts the same table),
asyncio tasks per worker (`liveall`: a `pid` label). A worker that exits
removes its live gauges (`forget_this_process`); so does a scrape, for workers
that died without doing so. The delivery collector writes its totals there
too (fictures.analytics.tally).
"""

from __future__ import annotations

import asyncio
import glob
import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

SSE_CLIENTS = Gauge(
    "fictures_sse_clients", "Connected SSE streams in this process (with several workers: in all of them)",
    multiprocess_mode="livesum",
)
LIVE_TABS = Gauge(
    "fictures_live_tabs",
    "Browser tabs receiving live updates in this process (with several workers: in all of them)",
    multiprocess_mode="livesum",
)
EVENTS_PUBLISHED = Counter(
    "fictures_events_published_total", "Events sent to Redis by the outbox relay", ["channel"]
)
OUTBOX_RELAY_SECONDS = Histogram(
    "fictures_outbox_relay_seconds",
    "From a commit waking this process's outbox relay to its first event's PUBLISH "
    "(wake-up, reading the unsent rows, the publish script)",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
REPLAYS = Counter("fictures_replays_total", "Resumed streams served from history")
RESETS = Counter("fictures_resets_total", "Reset events sent to clients", ["reason"])
OUTBOX_BACKLOG = Gauge(
    "fictures_outbox_backlog", "Outbox rows not yet sent to Redis", multiprocess_mode="livemax"
)
REDIS_RECONNECTS = Counter("fictures_redis_reconnects_total", "Subscriber reconnects to Redis")
MALFORMED = Counter("fictures_malformed_events_total", "Messages skipped as malformed")
ASYNCIO_TASKS = Gauge(
    "fictures_asyncio_tasks",
    "Asyncio tasks alive in this process (with several workers: per worker, as of its last analytics tick or scrape)",
    multiprocess_mode="liveall",
)
RATE_LIMITED = Counter(
    "fictures_rate_limited_total", "Requests refused by a rate limit, per rule", ["rule"]
)
PUSHES = Counter(
    "fictures_pushes_total",
    "Web Pushes by outcome (delivered, expired, failed, skipped: the user had a tab open)",
    ["outcome"],
)
PRESENCE_UPDATES = Counter(
    "fictures_presence_updates_total", "Presence changes (a room's count or names) applied by this process"
)
PRESENCE_FRAMES = Counter(
    "fictures_presence_frames_total", "Presence frames sent to SSE streams by this process"
)
ROOM_FRAMES = Counter(
    "fictures_room_frames_total",
    "Room frames sent to this process's tabs: handed to the server at once (direct) "
    "or through the socket's send queue (queued: something was ahead of it)",
    ["path"],
)
TYPING_SIGNALS = Counter(
    "fictures_typing_signals_total",
    "Typing reports from this process's tabs: sent as a signal, or dropped (over the rate)",
    ["outcome"],
)

# Deliveries (fictures_events_delivered_total{channel,client}) and their latency
# (fictures_delivery_latency_seconds{client}) are collected at scrape time from
# the process's delivery tally: see fictures.analytics.tally.
from fictures.analytics import tally as _delivery_tally  # noqa: E402  (registers them)


def multiprocess_dir() -> str | None:
    """The instance's metrics directory, if prometheus-client writes values there."""
    if not getattr(values.ValueClass, "_multiprocess", False):
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def count_tasks() -> None:
    ASYNCIO_TASKS.set(len(asyncio.all_tasks()))


def render() -> bytes:
    """The Prometheus text of this process, or of every worker of the instance."""
    count_tasks()
    path = multiprocess_dir()
    if path is None:
        return generate_latest()
    _delivery_tally.write_multiprocess_totals()  # this worker's deliveries up to now
    _forget_dead_processes(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return generate_latest(registry)


def forget_this_process() -> None:
    """A worker exiting: its live gauges stop counting (its counters stay)."""
    if (path := multiprocess_dir()) is not None:
        multiprocess.mark_process_dead(os.getpid(), path)


def _forget_dead_processes(path: str) -> None:
    """Live gauges of processes that died without `forget_this_process` (killed)."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        try:
            pid = int(os.path.basename(name)[: -len(".db")].rpartition("_")[2])
        except ValueError:
            continue
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
