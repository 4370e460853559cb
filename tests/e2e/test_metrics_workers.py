"""One scrape of /api/metrics covers every worker of an instance: `scripts/dev.py
serve` with two workers runs prometheus-client in multiprocess mode."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import AppServer, http
from tests.e2e.instances import Stream, serving_instance, worker_pids

STORIES = 3
MAX_STREAMS = 40


@pytest.fixture(scope="module")
def app_server() -> Iterator[AppServer]:
    # Each worker folds its deliveries in every second (the analytics tick); a
    # stream gets a ping every second (a test client leaves at its next line).
    with serving_instance(workers=2, FICTURES_ANALYTICS_SECONDS="1", FICTURES_SSE_PING_SECONDS="1") as server:
        yield server


def _scrape(server: AppServer) -> list:
    r = http.get(f"{server.url}/api/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return [sample for family in text_string_to_metric_families(r.text) for sample in family.samples]


def _value(samples: list, name: str, **labels: str) -> float | None:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else None


def test_one_scrape_sums_the_streams_and_deliveries_of_both_workers(app_server: AppServer):
    server = app_server
    workers = worker_pids(server)
    assert len(workers) == 2, workers
    _, token = server.register()

    # Open streams until both workers serve some (the kernel picks the worker).
    streams: list[Stream] = []
    while len(streams) < MAX_STREAMS:
        streams.append(Stream(f"{server.url}/api/community/events").open())
        if len(streams) >= 4 and {s.served_by(server) for s in streams} == workers:
            break
    served = [s.served_by(server) for s in streams]
    per_worker = {pid: served.count(pid) for pid in workers}
    print(f"{len(streams)} streams per worker: {per_worker}")
    assert all(per_worker.values()), per_worker

    for n in range(STORIES):
        server.create_story(token, f"Counted Everywhere {n} {uuid.uuid4().hex[:6]}")
    deadline = time.monotonic() + 15
    while any(s.count("event: story:published") < STORIES for s in streams):
        assert time.monotonic() < deadline, "the streams did not get every story"
        time.sleep(0.1)
    deliveries = STORIES * len(streams)

    # Any single scrape (whichever worker answers it) counts both workers.
    deadline = time.monotonic() + 15
    while True:
        samples = _scrape(server)
        seen = {
            "streams": _value(samples, "fictures_sse_clients"),
            "delivered": _value(samples, "fictures_events_delivered_total", channel="story:published", client="sse"),
            "latencies": _value(samples, "fictures_delivery_latency_seconds_count", client="sse"),
        }
        if seen == {"streams": len(streams), "delivered": deliveries, "latencies": deliveries}:
            break
        assert time.monotonic() < deadline, (
            f"one scrape shows {seen}; the workers have {len(streams)} streams and "
            f"made {deliveries} deliveries ({per_worker} streams per worker)"
        )
        time.sleep(0.5)
    # A gauge kept per worker carries the pid of each.
    pids = {int(s.labels["pid"]) for s in samples if s.name == "fictures_asyncio_tasks"}
    assert workers <= pids, pids

    # Closed streams stop counting, on whichever worker they were.
    for stream in streams:
        stream.close()
    deadline = time.monotonic() + 15
    while _value(_scrape(server), "fictures_sse_clients") != 0:
        assert time.monotonic() < deadline, "closed streams still counted"
        time.sleep(0.5)
