"""Prometheus metrics, exported at /api/metrics."""

from prometheus_client import Counter, Gauge

SSE_CLIENTS = Gauge("fictures_sse_clients", "Connected SSE streams in this process")
LIVE_TABS = Gauge("fictures_live_tabs", "Browser tabs receiving live updates in this process")
EVENTS_PUBLISHED = Counter(
    "fictures_events_published_total", "Events sent to Redis by the outbox relay", ["channel"]
)
REPLAYS = Counter("fictures_replays_total", "Resumed streams served from history")
RESETS = Counter("fictures_resets_total", "Reset events sent to clients", ["reason"])
OUTBOX_BACKLOG = Gauge("fictures_outbox_backlog", "Outbox rows not yet sent to Redis")
REDIS_RECONNECTS = Counter("fictures_redis_reconnects_total", "Subscriber reconnects to Redis")
MALFORMED = Counter("fictures_malformed_events_total", "Messages skipped as malformed")
ASYNCIO_TASKS = Gauge("fictures_asyncio_tasks", "Asyncio tasks alive in this process")
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
TYPING_SIGNALS = Counter(
    "fictures_typing_signals_total",
    "Typing reports from this process's tabs: sent as a signal, or dropped (over the rate)",
    ["outcome"],
)

# Deliveries (fictures_events_delivered_total{channel,client}) and their latency
# (fictures_delivery_latency_seconds{client}) are collected at scrape time from
# the process's delivery tally: see fictures.analytics.tally.
from fictures.analytics import tally as _delivery_tally  # noqa: E402,F401  (registers them)
