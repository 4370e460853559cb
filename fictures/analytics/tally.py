"""This process's tally of deliveries: per event, and in total for Prometheus.

A delivery point calls `delivered(event, kind, count)` once per event per
kind (a broadcast frame to N tabs is one call with `count=N`), or once per
stream or tab where the delivery itself is per reader (an SSE frame, a tab
handler run). That call adds to the event's *share*: readers reached per kind
and their publish->delivery latencies, counted in fixed buckets (`BOUNDS`), so
shares from every process add up to the event's exact bucket counts, from
which its p50/p99 follow. Nothing is sent anywhere from the hot path:
`take()` hands the shares collected so far to the periodic flush
(fictures.analytics.service), which sends them to Redis in one step.

Latency is measured from the event's `timestamp` (set when the change was
recorded, in the same transaction; the outbox relay publishes it at once), to
when the frame was handed to the client's connection: for a tab broadcast when
the one frame was emitted to the room, for a tab handler when the handler's
delta was sent, for SSE when the stream passed the frame to the server.
Clocks of different hosts must agree (NTP) for it to mean anything.

Prometheus (`fictures_delivery_latency_seconds{client}` and
`fictures_events_delivered_total{channel,client}`) is served by a collector
reading the same tallies at scrape time: one sample per delivery, at no extra
cost per delivery. With several workers (prometheus-client's multiprocess mode,
see fictures.metrics) a scrape reaches one worker only, and custom collectors
are not read from the shared directory: there the totals are also written as
the process's own multiprocess values (`_MultiprocessTotals`) whenever `take()`
folds shares in (every analytics tick, and at exit) and before a scrape, so
one scrape sums every worker's deliveries (the other workers' as of their last
tick).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import values
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from prometheus_client.utils import floatToGoString

from fictures.events.schema import CommunityEvent

KINDS: tuple[str, ...] = ("tab_broadcast", "tab_handler", "sse")
_KIND = {kind: i for i, kind in enumerate(KINDS)}
# fictures_events_delivered_total keeps its two client kinds (tab, sse).
_COUNTER_CLIENT = ("tab", "tab", "sse")

# Upper bounds (seconds) of the latency buckets: 0.1 ms to 700 s, each at most
# 1.5x the one before; one more bucket holds anything slower. Written as
# decimal strings so that the Prometheus subset below compares equal.
BOUNDS: tuple[float, ...] = tuple(
    float(f"{m}e{e}") for e in range(-4, 3) for m in ("1", "1.5", "2", "3", "5", "7")
)
NBUCKETS = len(BOUNDS) + 1
# Prometheus gets the 1-2-5 bounds from 1 ms (its `le` buckets must be few).
PROMETHEUS_BOUNDS: tuple[float, ...] = tuple(
    float(f"{m}e{e}") for e in range(-3, 3) for m in ("1", "2", "5")
)
assert set(PROMETHEUS_BOUNDS) <= set(BOUNDS)


def bucket(latency: float) -> int:
    """The bucket of a latency in seconds (the first bound at or above it)."""
    return bisect_left(BOUNDS, latency)


def quantile(counts: Sequence[int] | Mapping[int, int], q: float) -> float | None:
    """The `q` quantile (0..1) of latencies counted per bucket, interpolated
    linearly inside its bucket (as Prometheus' histogram_quantile); None if empty."""
    items = sorted(counts.items()) if isinstance(counts, Mapping) else list(enumerate(counts))
    total = sum(n for _, n in items)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in items:
        if n <= 0:
            continue
        if seen + n >= rank:
            if i >= len(BOUNDS):
                return BOUNDS[-1]  # slower than the last bound: all we know
            low = BOUNDS[i - 1] if i > 0 else 0.0
            return low + (BOUNDS[i] - low) * max(rank - seen, 0) / n
        seen += n
    return BOUNDS[-1]


class Share:
    """One event's deliveries by this process since the last flush."""

    __slots__ = ("buckets", "channel", "counts", "id", "sums", "ts")

    def __init__(self, event: CommunityEvent):
        assert event.id is not None
        self.id = event.id
        self.channel = event.channel
        self.ts = event.timestamp.timestamp()
        self.counts = [0] * len(KINDS)
        self.sums = [0.0] * len(KINDS)
        self.buckets = [[0] * NBUCKETS for _ in KINDS]

    def merged_buckets(self) -> dict[int, int]:
        """Bucket counts over every kind, the empty ones left out."""
        merged: dict[int, int] = {}
        for per_kind in self.buckets:
            for i, n in enumerate(per_kind):
                if n:
                    merged[i] = merged.get(i, 0) + n
        return merged


class Tally:
    """This process's tally (one per process: `tally()`)."""

    def __init__(self) -> None:
        self._pending: dict[int, Share] = {}
        # Folded in by `take()`: per kind, bucket counts and latency sums;
        # per (channel, counter client), deliveries.
        self._buckets = [[0] * NBUCKETS for _ in KINDS]
        self._sums = [0.0] * len(KINDS)
        self._delivered: defaultdict[tuple[str, str], int] = defaultdict(int)

    def delivered(
        self, event: CommunityEvent, kind: str, count: int = 1, *, now: float | None = None
    ) -> None:
        """`count` readers of `kind` got `event` just now. `count=0` still records
        the event (with no reader). Private events are nobody's statistics."""
        if not event.public or event.id is None:
            return
        share = self._pending.get(event.id)
        if share is None:
            share = self._pending[event.id] = Share(event)
        if count <= 0:
            return
        latency = (time.time() if now is None else now) - share.ts
        k = _KIND[kind]
        share.counts[k] += count
        share.sums[k] += latency * count
        share.buckets[k][bisect_left(BOUNDS, latency)] += count

    def take(self) -> list[Share]:
        """The shares collected since the last call (for Redis); folds them into
        the process's totals (for Prometheus)."""
        shares = list(self._pending.values())
        self._pending = {}
        for share in shares:
            self._fold(share, self._buckets, self._sums, self._delivered)
        if _multiprocess_totals is not None and self is _tally:
            _multiprocess_totals.write()
        return shares

    @staticmethod
    def _fold(
        share: Share,
        buckets: list[list[int]],
        sums: list[float],
        delivered: defaultdict[tuple[str, str], int],
    ) -> None:
        for k, count in enumerate(share.counts):
            if not count:
                continue
            sums[k] += share.sums[k]
            delivered[share.channel, _COUNTER_CLIENT[k]] += count
            for i, n in enumerate(share.buckets[k]):
                buckets[k][i] += n

    def totals(self) -> tuple[list[list[int]], list[float], dict[tuple[str, str], int]]:
        """Everything delivered so far (folded and pending), without changing anything."""
        buckets = [list(per_kind) for per_kind in self._buckets]
        sums = list(self._sums)
        delivered = defaultdict(int, self._delivered)
        for share in list(self._pending.values()):
            self._fold(share, buckets, sums, delivered)
        return buckets, sums, dict(delivered)

    def pending(self) -> int:
        return len(self._pending)


class _DeliveryCollector(Collector):
    """The delivery metrics, read from the tally at scrape time."""

    def __init__(self, tally: Tally):
        self.tally = tally

    def describe(self) -> Iterable:
        return [
            CounterMetricFamily(
                "fictures_events_delivered", _DELIVERED_DOC, labels=["channel", "client"]
            ),
            HistogramMetricFamily("fictures_delivery_latency_seconds", _LATENCY_DOC, labels=["client"]),
        ]

    def collect(self) -> Iterator:
        buckets, sums, delivered = self.tally.totals()
        counter = CounterMetricFamily(
            "fictures_events_delivered", _DELIVERED_DOC, labels=["channel", "client"]
        )
        for (channel, client), count in sorted(delivered.items()):
            counter.add_metric([channel, client], count)
        yield counter
        histogram = HistogramMetricFamily(
            "fictures_delivery_latency_seconds", _LATENCY_DOC, labels=["client"]
        )
        for k, kind in enumerate(KINDS):
            cumulative, running, i = [], 0, 0
            for bound in PROMETHEUS_BOUNDS:
                while i < len(BOUNDS) and BOUNDS[i] <= bound:
                    running += buckets[k][i]
                    i += 1
                cumulative.append((_le(bound), running))
            cumulative.append(("+Inf", sum(buckets[k])))
            histogram.add_metric([kind], cumulative, sum_value=sums[k])
        yield histogram


_DELIVERED_DOC = "Events delivered to clients by this process, per channel and kind of client"
_LATENCY_DOC = (
    "From an event's timestamp to its delivery to a client, per delivery and kind of "
    "client (tab_broadcast, tab_handler, sse)"
)


def _le(bound: float) -> str:
    return repr(bound)


def _prometheus_buckets(per_bucket: Sequence[int]) -> list[int]:
    """Counts per Prometheus bucket (PROMETHEUS_BOUNDS, then +Inf), not cumulative."""
    counts, i = [], 0
    for bound in PROMETHEUS_BOUNDS:
        n = 0
        while i < len(BOUNDS) and BOUNDS[i] <= bound:
            n += per_bucket[i]
            i += 1
        counts.append(n)
    counts.append(sum(per_bucket[i:]))
    return counts


class _MultiprocessTotals:
    """The tally's totals as this process's values in prometheus-client's
    multiprocess directory: the same values a Counter and a Histogram write
    (`values.ValueClass`, one mmap file per process and type), which
    MultiProcessCollector sums over every process's files. Written with `set`
    (the totals only grow), so writing again is harmless."""

    def __init__(self, tally: Tally):
        self.tally = tally
        self._values: dict[tuple[str, tuple[str, ...]], Any] = {}

    def _value(self, typ: str, metric: str, name: str, labels: dict[str, str], doc: str) -> Any:
        key = (name, tuple(labels.values()))
        if (value := self._values.get(key)) is None:
            value = self._values[key] = values.ValueClass(
                typ, metric, name, tuple(labels), tuple(labels.values()), doc
            )
        return value

    def write(self) -> None:
        buckets, sums, delivered = self.tally.totals()
        for (channel, client), count in sorted(delivered.items()):
            self._value(
                "counter", "fictures_events_delivered", "fictures_events_delivered_total",
                {"channel": channel, "client": client}, _DELIVERED_DOC,
            ).set(count)
        name = "fictures_delivery_latency_seconds"
        for k, kind in enumerate(KINDS):
            bounds = [*PROMETHEUS_BOUNDS, float("inf")]
            for bound, count in zip(bounds, _prometheus_buckets(buckets[k]), strict=True):
                labels = {"client": kind, "le": floatToGoString(bound)}
                self._value("histogram", name, f"{name}_bucket", labels, _LATENCY_DOC).set(count)
            self._value("histogram", name, f"{name}_sum", {"client": kind}, _LATENCY_DOC).set(sums[k])


_tally = Tally()
REGISTRY.register(_DeliveryCollector(_tally))
# Decided by prometheus-client when it was imported (PROMETHEUS_MULTIPROC_DIR).
_multiprocess_totals = (
    _MultiprocessTotals(_tally) if getattr(values.ValueClass, "_multiprocess", False) else None
)
if _multiprocess_totals is not None:
    _multiprocess_totals.write()  # every series exists from the start, at zero


def write_multiprocess_totals() -> None:
    """Write this process's latest totals (pending shares too) where a scrape of any
    worker reads them (multiprocess mode only; see the module doc)."""
    if _multiprocess_totals is not None:
        _multiprocess_totals.write()


def tally() -> Tally:
    """This process's tally."""
    return _tally


def delivered(event: CommunityEvent, kind: str, count: int = 1) -> None:
    """Record `count` deliveries of `event` to clients of `kind` (see the module doc)."""
    _tally.delivered(event, kind, count)
