"""SIGTERM to an instance (`scripts/dev.py serve`, two workers): it closes every SSE
stream with a retry hint and every tab's websocket, flushes its outbox and exits
within 10 s with code 0.

Both ways a service manager stops it: systemd's default (KillMode=control-group:
every process of the instance gets SIGTERM at once) and a signal to the main
process alone (KillMode=mixed or process, `kill PID`).
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest
import redis

from tests.e2e.conftest import ROOT, AppServer, http
from tests.e2e.instances import (
    Stream,
    process_tree,
    serving_instance,
    unsent_outbox_rows,
    worker_pids,
)
from tests.e2e.raw_socket import RawTab

STREAMS = 4
TABS = 2
EXIT_WITHIN = 10.0


@pytest.fixture
def app_server() -> Iterator[AppServer]:
    """An instance of its own per test (each test stops it). Its relays sweep the
    outbox for rows other processes committed every 60 s (2 s by default), so a
    row written by another process stays unsent until the flush at shutdown."""
    with serving_instance(workers=2, FICTURES_OUTBOX_SWEEP_SECONDS="60") as server:
        yield server


def _publish_from_another_process(server: AppServer, username: str, title: str) -> None:
    """A story published through the domain by a process that is not one of the
    instance's workers (an admin command, another instance whose relay died): its
    event waits in the outbox for a relay's sweep."""
    script = f"""
from sqlmodel import select
from fictures import db, stories
from fictures.models import StoryCreate, User
with db.session() as s:
    author = s.exec(select(User).where(User.username == {username!r})).one()
    stories.create_story(session=s, author=author,
                         data=StoryCreate(title={title!r}, status="published"))
"""
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=server.env, check=True,
                   capture_output=True, timeout=60)


def _event_titles(server: AppServer) -> list[str]:
    client = redis.Redis.from_url(server.redis.url, decode_responses=True)
    try:
        return [fields.get("data", "") for _, fields in client.xrange(server.stream_key)]
    finally:
        client.close()


def _poll_ready(server: AppServer, stop: threading.Event, seen: list[tuple[float, str]]) -> None:
    """What /api/health/ready answers (or how it fails) while the instance stops,
    with the wall-clock time each request was sent."""
    while not stop.is_set():
        sent = time.time()
        try:
            seen.append((sent, str(http.get(f"{server.url}/api/health/ready", timeout=1).status_code)))
        except httpx.HTTPError as exc:
            seen.append((sent, type(exc).__name__))
        time.sleep(0.05)


def _answers_after_every_worker_stopped(log: str, polled: list[tuple[float, str]]) -> list[str]:
    """The readiness answers to requests sent after the last worker logged that it
    is stopping. (It turns readiness off before it logs; the log's time is cut to
    the millisecond.) A request sent earlier may be answered yes: with the signal
    sent to the main process alone, the workers hear of it a moment later."""
    stamps = re.findall(r"^(\S+ \S+) \[\d+\] INFO fictures\.shutdown: Stopping", log, re.M)
    assert stamps, log
    last = max(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in stamps) + 0.001
    return [answer for sent, answer in polled if sent > last]


def _sigterm(server: AppServer, kill_mode: str) -> tuple[int, float, list[tuple[float, str]]]:
    """SIGTERM as a service manager sends it; (exit code, seconds to exit, what
    /api/health/ready answered meanwhile)."""
    polled: list[tuple[float, str]] = []
    stop_polling = threading.Event()
    poller = threading.Thread(target=_poll_ready, args=(server, stop_polling, polled), daemon=True)
    signalled = time.monotonic()
    if kill_mode == "control-group":
        for proc in process_tree(server.process.pid):
            os.kill(proc.pid, signal.SIGTERM)
    else:
        server.process.send_signal(signal.SIGTERM)
    poller.start()
    code = server.process.wait(timeout=30)
    took = time.monotonic() - signalled
    stop_polling.set()
    poller.join()
    return code, took, polled


GRANIAN_TEARDOWN_PANIC = "Cannot drop pointer into Python heap without the thread being attached"


def _logged_by(pattern: str, log: str) -> set[int]:
    return {int(pid) for pid in re.findall(rf"\[(\d+)\] {pattern}", log)}


def _assert_one_line_per_phase(log: str, workers: set[int]) -> None:
    # (dev.py passes a SIGTERM it alone got on as SIGINT.)
    for pattern in (
        r"INFO fictures\.shutdown: Stopping \((?:SIGTERM|SIGINT)\): accepting no new connections",
        r"INFO fictures\.shutdown: Closed \d+ event streams \(told to retry in 1000 ms\) in [\d.]+s\n",
    ):
        pids = _logged_by(pattern, log)
        assert pids == workers, f"{pattern!r} logged by {pids}, workers {workers}"
    flushed = _logged_by(r"INFO fictures\.events\.service: Outbox flushed: \d+ rows sent to Redis before exit", log)
    exited = _logged_by(r"INFO fictures\.shutdown: Exiting, [\d.]+s after the stop signal", log)
    if GRANIAN_TEARDOWN_PANIC in log:
        # Granian's runtime panicked in one worker as it stopped (a Rust thread
        # dropping a Python object without the GIL: emmett-framework/granian#799,
        # #884; about one run in ten here), after that worker had closed its
        # streams and before it logged its flush and exit. Only that one worker may
        # lack those two lines; README "Operating" says what it costs.
        assert flushed == exited and len(workers - flushed) <= 1, (flushed, exited, workers)
    else:
        assert flushed == workers, f"outbox flushed by {flushed}, workers {workers}"
        assert exited == workers, f"exit logged by {exited}, workers {workers}"
    assert sum(int(n) for n in re.findall(r"Closed (\d+) event streams", log)) == STREAMS
    assert sum(int(n) for n in re.findall(r"(\d+) tabs' websockets close", log)) == TABS
    assert sum(int(n) for n in re.findall(r"Outbox flushed: (\d+) rows", log)) >= 1


@pytest.mark.parametrize("kill_mode", ["control-group", "main-process"])
def test_sigterm_closes_streams_with_a_retry_hint_flushes_the_outbox_and_exits_fast(
    app_server: AppServer, kill_mode: str
):
    server = app_server
    username, _ = server.register()
    streams = [Stream(f"{server.url}/api/community/events").open() for _ in range(STREAMS)]
    tabs = [RawTab(server.url) for _ in range(TABS)]
    for tab in tabs:
        tab.hydrated()

    title = f"Waiting In The Outbox {uuid.uuid4().hex[:6]}"
    _publish_from_another_process(server, username, title)
    assert unsent_outbox_rows(server) == 1
    assert not any(title in data for data in _event_titles(server))

    workers = worker_pids(server)
    assert len(workers) == 2, workers
    port = server.url.rsplit(":", 1)[1]
    metrics_dirs = glob.glob(os.path.join(tempfile.gettempdir(), f"fictures-metrics-{port}-*"))
    assert len(metrics_dirs) == 1, metrics_dirs  # the instance's own (dev.py serve)
    assert http.get(f"{server.url}/api/health/ready", timeout=5).status_code == 200

    server.mark_log()
    signalled = time.monotonic()
    code, took, polled = _sigterm(server, kill_mode)
    log = server.log_since_mark()
    print(f"exit code {code} after {took:.2f}s; readiness while stopping: {polled}\n{log}")

    assert code == 0
    assert took <= EXIT_WITHIN, f"the instance took {took:.1f}s to exit"
    assert not [p for p in process_tree(server.process.pid) if p.is_running()]
    assert not os.path.exists(metrics_dirs[0])

    for stream in streams:
        stream.join(timeout=5)
        # A retry hint, then the end of the response (no cut connection).
        assert stream.count("retry: 1000") == 1, stream.lines[-5:]
        assert stream.error is None, repr(stream.error)
        assert stream.ended_at is not None and stream.ended_at > signalled
    for tab in tabs:
        # Closed with the process: Reflex's client reconnects on a closed transport.
        assert tab.closed

    # The event another process wrote reached Redis before the instance exited.
    assert sum(title in data for data in _event_titles(server)) == 1
    assert unsent_outbox_rows(server) == 0
    # Readiness never said yes once the workers had the signal.
    assert "200" not in _answers_after_every_worker_stopped(log, polled)
    _assert_one_line_per_phase(log, workers)
