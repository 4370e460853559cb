"""Fan-out benchmark: how fast, and at what cost, a published story reaches readers.

One command (from the repository root)::

    .venv/bin/python benchmarks/fanout.py --label before|after [--tabs 1,200,1000,5000]
        [--streams 1000,5000] [--events 20] [--workers 1] [--redis-url URL]
        [--database-url URL] [--replay 10000] [--no-profile] [--app-dir DIR]
        [--runs 3] [--publish-path 30]

The whole default run takes 4-5 minutes on 2 cores. --app-dir runs the app
from another checkout, to measure older code with today's harness:
`git worktree add --detach /tmp/fictures-before <commit>` (copy `.web` over to
skip the npm install), then `--app-dir /tmp/fictures-before --label before`.

It starts the app itself in production mode (`reflex run --env prod --single-port`,
GRANIAN_WORKERS=--workers) against a real Redis (an embedded Valkey unless
--redis-url) and a temp SQLite DB (unless --database-url), then, with the
simulated readers in a separate process (benchmarks/_clients.py):

- tabs: real Reflex websocket clients on /community (hydrate + on_load like a
  browser); streams: SSE clients on /api/community/events;
- for each size it publishes --events stories through the real API
  (POST /api/stories, status published), one at a time (the next once every
  ready reader has the previous one and the server is idle again; a large
  size stops after --size-seconds once --min-events went out), and reports latency
  from the API call (its request's first byte written) and from the Redis
  PUBLISH (seen by an outside subscriber) to the first frame carrying the story,
  per delivery and for the last reader (the PUBLISH's and the frame's times are
  the kernel's receive times at the subscriber's and the reader's sockets; the
  earlier clocks, from calling the HTTP client to the processes' later reads,
  the reader's own queue of sockets included, are reported too, as "as read"), deliveries/s, bytes per event per reader, server CPU per 1,000 deliveries,
  and server memory per idle connection;
- for streams, a throughput burst: events sent to the bus as fast as possible;
- publish path: with no readers, --publish-path stories one at a time, and
  where the API call's time goes before the PUBLISH (HTTP, token check, the
  write and commit, the relay's own histogram);
- replay: an SSE client resuming from the oldest retained id of a --replay
  events stream; and a polling baseline (GET /api/stories every 5 minutes).

--runs N measures N times, the app restarted each time; each row shows the
run with its median p99 and lists the others' figures. It prints a table and writes benchmarks/RESULTS.md, keeping the sections of
other labels (so a "before" and an "after" sit side by side). It reports
figures; it never passes or fails. Everything it started is stopped at the end,
Ctrl+C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import _clients  # noqa: E402
import _server  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402

RESULTS = HERE / "RESULTS.md"
EVENT_RATE_PER_HOUR = 60
POLL_SECONDS = 300


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))]


# -- the outside subscriber ---------------------------------------------------------


class PublishWatch(_clients.Client):
    """A raw Redis subscriber to `story:published` that notes, per marker, the
    kernel's receive time of the data carrying its PUBLISH (`bench.t_pub`) and when
    this process read it (`bench.t_pub_read`): the readers' clock, so that
    "PUBLISH -> frame" and "API call -> PUBLISH" compare like with like."""

    def __init__(self, bench: Bench) -> None:
        super().__init__()
        self.ready.set_result(True)  # nothing waits for it: no "closed before ready" at the end
        self.bench = bench
        self.tail = b""  # the end of the last read: a marker split across two reads

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        log(f"the outside Redis subscriber's connection closed ({exc})")

    def data_received(self, data: bytes, now: int) -> None:
        if data.startswith(b"-"):  # an error reply (AUTH, SUBSCRIBE): nothing will be noted
            log(f"the outside Redis subscriber got an error: {data[:200]!r}")
        seen = self.tail + data
        self.tail = seen[-64:]
        for m in self.bench.whole_marker_re.finditer(seen.decode(errors="replace")):
            k = int(m.group(1))
            if k not in self.bench.t_pub:
                self.bench.t_pub[k] = self.kernel_ns(now)
                self.bench.t_pub_read[k] = now


# -- the client process -----------------------------------------------------------


class Clients:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, port: int, marker_prefix: str, stderr_path: Path) -> Clients:
        stderr = stderr_path.open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "_clients.py"), "127.0.0.1", str(port), marker_prefix,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            limit=1 << 28,
        )
        return cls(proc)

    async def call(self, cmd: str, **kw: Any) -> Any:
        async with self._lock:
            assert self.proc.stdin and self.proc.stdout
            self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}).encode() + b"\n")
            await self.proc.stdin.drain()
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the client process died (see its stderr log)")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"client command {cmd} failed: {answer['error']}")
        return answer["result"]

    def cpu_seconds(self) -> float:
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return t.user + t.system

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call("quit"), 20)
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
            await self.proc.wait()


# -- results ----------------------------------------------------------------------


@dataclass
class Phase:
    kind: str  # "tabs" | "streams"
    asked: int
    ready: int = 0
    connect_seconds: float = 0.0
    connect_errors: dict[str, int] = field(default_factory=dict)
    log_connected: int | None = None
    events: int = 0
    deliveries: int = 0
    missing: int = 0
    lat_api: list[float] = field(default_factory=list)  # ms, every (event, client)
    lat_pub: list[float] = field(default_factory=list)
    last_api: list[float] = field(default_factory=list)  # ms, per event: last client
    last_pub: list[float] = field(default_factory=list)
    # The same from when the reader process read each frame (its own queue included).
    read_pub: list[float] = field(default_factory=list)
    read_last_pub: list[float] = field(default_factory=list)
    read_last_api: list[float] = field(default_factory=list)
    burst_rate: float | None = None  # deliveries/s from first API call to last arrival
    bytes_per_event: float | None = None
    bytes_first_last: tuple[float, float] | None = None
    bytes_series: list[float] = field(default_factory=list)  # mean bytes per event, in order
    cpu_per_1000: float | None = None
    rss_per_conn: float | None = None
    max_rate: float | None = None  # SSE throughput burst, deliveries/s
    max_rate_detail: str = ""
    load: str = ""
    note: str = ""


def _ms(ns: float) -> float:
    return ns / 1e6


def analyse(phase: Phase, data: dict, t_api: dict[int, int], t_pub: dict[int, int],
            markers: list[int], *, api: bool = True, called: dict[int, int] | None = None,
            pub_read: dict[int, int] | None = None) -> None:
    """`t_api`: when each event was sent (the API call's first byte, or the bus send
    when not `api`); `t_pub`: when the outside subscriber received its PUBLISH. The
    "as read" figures use the earlier clocks where given: `called` (the HTTP
    client called) and `pub_read` (the subscriber read the PUBLISH)."""
    called = called or t_api
    pub_read = pub_read or t_pub
    arrivals: dict[str, list[int | None]] = data["arrivals"]
    reads: dict[str, list[int | None]] = data.get("reads", {})
    sizes: dict[str, list[int]] = data["bytes"]
    n = data["clients"]
    first_api = min(t_api[k] for k in markers)
    latest = 0
    per_event_bytes = []
    for k in markers:
        got = [t for t in arrivals.get(str(k), []) if t is not None]
        phase.missing += n - len(got)
        phase.deliveries += len(got)
        if not got:
            continue
        latest = max(latest, *got)
        if api:
            phase.lat_api += [_ms(t - t_api[k]) for t in got]
        if k in t_pub:
            phase.lat_pub += [_ms(t - t_pub[k]) for t in got]
        if len(got) == n:
            if api:
                phase.last_api.append(_ms(max(got) - t_api[k]))
            if k in t_pub:
                phase.last_pub.append(_ms(max(got) - t_pub[k]))
        _analyse_reads(phase, [t for t in reads.get(str(k), []) if t is not None], n,
                       called.get(k, t_api[k]) if api else None, pub_read.get(k))
        b = [x for x, t in zip(sizes.get(str(k), []), arrivals.get(str(k), []), strict=False)
             if t is not None]
        if b:
            per_event_bytes.append(statistics.fmean(b))
    phase.events = len(markers)
    if phase.deliveries and latest > first_api:
        phase.burst_rate = phase.deliveries / ((latest - first_api) / 1e9)
    if per_event_bytes:
        phase.bytes_per_event = statistics.fmean(per_event_bytes)
        phase.bytes_first_last = (per_event_bytes[0], per_event_bytes[-1])
        phase.bytes_series = per_event_bytes


def _analyse_reads(phase: Phase, read: list[int], n: int, t_api: int | None,
                   t_pub: int | None) -> None:
    """One event's deliveries as the reader process read them."""
    if read and t_pub is not None:
        phase.read_pub += [_ms(t - t_pub) for t in read]
        if len(read) == n:
            phase.read_last_pub.append(_ms(max(read) - t_pub))
    if read and t_api is not None and len(read) == n:
        phase.read_last_api.append(_ms(max(read) - t_api))


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def table(phases: list[Phase], replay: dict | None = None) -> str:
    head = (
        "| readers | ready | events | API→frame p50 / p99 ms | PUBLISH→frame p50 / p99 ms "
        "| last reader (PUBLISH→) p50 / p99 ms | deliveries/s (spaced burst) "
        "| max deliveries/s | bytes / event / reader | server CPU s / 1,000 deliveries "
        "| server RSS / idle conn |"
    )
    rows = [head, "|" + "---|" * 11]
    for p in phases:
        ready = f"{p.ready:,}" + ("" if p.ready == p.asked else f" of {p.asked:,}")
        rss = ("–" if p.rss_per_conn is None or p.ready < 100
               else f"{p.rss_per_conn / 1024:.1f} KiB")
        bytes_ = _f(p.bytes_per_event, "{:,.0f}")
        if p.bytes_first_last and abs(p.bytes_first_last[1] - p.bytes_first_last[0]) > 8:
            bytes_ += f" ({p.bytes_first_last[0]:,.0f}→{p.bytes_first_last[1]:,.0f})"
        rows.append(
            f"| {p.asked:,} {p.kind} | {ready} | {p.events} "
            f"| {_f(pct(p.lat_api, 50))} / {_f(pct(p.lat_api, 99))} "
            f"| {_f(pct(p.lat_pub, 50))} / {_f(pct(p.lat_pub, 99))} "
            f"| {_f(pct(p.last_pub, 50))} / {_f(pct(p.last_pub, 99))} "
            f"| {_f(p.burst_rate, '{:,.0f}')} | {_f(p.max_rate, '{:,.0f}')} "
            f"| {bytes_} | {_f(p.cpu_per_1000, '{:.3f}')} | {rss} |"
        )
    if replay and "events_per_s" in replay:
        rows.append(
            f"| replay: 1 stream resuming from Last-Event-ID {replay['last_event_id']} "
            f"| 1 | {replay['received']:,} stored | – | – | all in {replay['seconds'] * 1000:,.0f} ms "
            f"| – | **{replay['events_per_s']:,.0f} events/s** "
            f"| {replay['bytes'] / replay['received']:,.0f} | – | – |"
        )
    return "\n".join(rows)


# -- the run ----------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, app: _server.App):
        self.args = args
        self.app = app
        self.run_id = uuid.uuid4().hex[:8]
        self.prefix = f"bench-{self.run_id}-"
        self.marker_re = re.compile(re.escape(self.prefix) + r"(\d+)")
        # Only a marker whose digits have all arrived (a read may end mid-number).
        self.whole_marker_re = re.compile(self.marker_re.pattern + r"(?=\D)")
        self.next_marker = 1
        # When each API call's request began to leave (its first byte written) and,
        # the earlier clock, when the benchmark called its HTTP client (`t_called`).
        self.t_api: dict[int, int] = {}
        self.t_called: dict[int, int] = {}
        # When the outside subscriber's socket received each PUBLISH (the kernel's
        # receive time) and, the earlier clock, when this process read it.
        self.t_pub: dict[int, int] = {}
        self.t_pub_read: dict[int, int] = {}
        self.t_sent: dict[int, int] = {}  # bus sends (no API call)
        self.phases: list[Phase] = []
        self.extra: dict[str, Any] = {}
        self.notes: list[str] = []
        self.clients: Clients | None = None
        self.http = httpx.AsyncClient(base_url=app.url, timeout=30)
        self.token = ""
        self.bus = None
        self.idle_rate = 0.05

    # -- plumbing ---------------------------------------------------------------

    async def listen_redis(self) -> None:
        """An outside subscriber: when Redis delivered each PUBLISH (≈ when it happened),
        as the kernel's receive time of the data that carried it (as for the readers)."""
        watch = self.publish_watch = PublishWatch(self)
        url = httpx.URL(self.app.redis_url)
        conn = await _clients.connect(url.host or "127.0.0.1", url.port or 6379, watch)
        if url.password:
            conn.write(_clients.resp("AUTH", *([url.username] if url.username else []), url.password))
        conn.write(_clients.resp("SUBSCRIBE", "story:published"))
        try:
            await asyncio.Event().wait()
        finally:
            conn.close()

    async def _post_story(self, k: int) -> httpx.Response:
        """POST /api/stories titled with marker `k`, noting when it was called and when
        its request began to leave (the first byte written: httpx's own work before
        that is the benchmark's, not the app's)."""

        async def trace(name: str, _info: dict) -> None:
            if name == "http11.send_request_headers.started":
                self.t_api[k] = time.time_ns()

        self.t_called[k] = time.time_ns()
        response = await self.http.post(
            "/api/stories", json={"title": f"{self.prefix}{k}", "status": "published"},
            headers={"Authorization": f"Bearer {self.token}"}, extensions={"trace": trace},
        )
        self.t_api.setdefault(k, self.t_called[k])
        return response

    async def wait_idle(self, max_seconds: float = 60, threshold: float = 0.08,
                        window: float = 0.5) -> float:
        """Wait until the server's CPU use falls below `threshold` cores."""
        t0 = time.monotonic()
        prev = self.app.cpu_seconds()
        while time.monotonic() - t0 < max_seconds:
            await asyncio.sleep(window)
            cur = self.app.cpu_seconds()
            if (cur - prev) / window < threshold:
                return time.monotonic() - t0
            prev = cur
        return time.monotonic() - t0

    async def register(self) -> None:
        name, pw = f"bench_{self.run_id}", "password123"
        r = await self.http.post("/api/auth/register", json={"username": name, "password": pw})
        r.raise_for_status()
        r = await self.http.post("/api/auth/token", json={"username": name, "password": pw})
        r.raise_for_status()
        self.token = r.json()["token"]

    async def publish_api(self) -> int:
        k = self.next_marker
        self.next_marker += 1
        r = await self._post_story(k)
        if r.status_code != 201:
            raise RuntimeError(f"POST /api/stories: {r.status_code} {r.text[:300]}")
        return k

    async def publish_bus(self) -> int:
        """Straight into the event bus (the relay's own call), for when the API cannot answer."""
        from fictures.events.bus import EventBus
        from fictures.events.schema import StoryPublished

        k = self.next_marker
        self.next_marker += 1
        body = StoryPublished(story_id=30_000_000 + k, title=f"{self.prefix}{k}",
                              author_id=1).body_without_id()
        self.t_sent[k] = time.time_ns()
        await self.bus_client(EventBus).send("story:published", body,
                                             dedupe_key=f"bench:{self.run_id}:{k}")
        return k

    async def responsive(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=5) as c:
                return (await c.get(f"{self.app.url}/ping")).status_code == 200
        except httpx.HTTPError:
            return False

    def connect_packet(self) -> tuple[str, str]:
        """The hydrate event a browser sends on /community, from the generated frontend."""
        ctx = (self.app.app_dir / ".web" / "utils" / "context.jsx").read_text()
        state_name = re.search(r'export const state_name = "([^"]+)"', ctx).group(1)
        schema = re.search(r'export const stateSchema = "([^"]+)"', ctx).group(1)
        hashes = json.loads(re.search(r"export const initialStateHashes = (\[[^\]]*\])", ctx).group(1))
        event = {
            "name": f"{state_name}.hydrate_and_load",
            "payload": {"hashes": hashes},
            "router_data": {"pathname": "/community/", "asPath": "/community/"},
        }
        packet = "40/_event," + json.dumps({"event": event, "state_schema": schema},
                                           separators=(",", ":"))
        from reflex import constants

        return packet, constants.Reflex.VERSION

    # -- phases -----------------------------------------------------------------

    async def connect(self, kind: str, n: int) -> Phase:
        assert self.clients
        phase = Phase(kind, n)
        await self.wait_idle(20)
        rss0 = self.app.rss_bytes()
        budget = self.args.connect_timeout + n * self.args.connect_seconds_per_client
        log(f"{kind}: connecting {n:,} (concurrency {self.args.concurrency}, budget {budget:.0f}s)")
        r = await self.clients.call("open", kind=kind, n=n, concurrency=self.args.concurrency,
                                    timeout=budget, stall=self.args.stall)
        phase.ready, phase.connect_errors = r["ready"], r["errors"]
        phase.connect_seconds = r["seconds_to_last_ready"]
        if kind == "tabs":
            self.extra.setdefault("ping_interval_ms", r.get("ping_interval_ms"))
            self.extra.setdefault("tab_connect_bytes", (r.get("sent_bytes_per_tab_connect"),
                                                        r.get("received_bytes_per_tab_connect")))
        await self.wait_idle(30)
        cpu = self.app.cpu_seconds()
        await asyncio.sleep(1.0)
        # What the open connections cost at rest (pings): the bar for "idle" between events.
        self.idle_rate = self.app.cpu_seconds() - cpu
        if phase.ready:
            phase.rss_per_conn = (self.app.rss_bytes() - rss0) / phase.ready
        if kind == "streams" and phase.ready < n and r.get("stalled"):
            phase.note += (
                f"Streams stopped connecting at {phase.ready:,}: Reflex starts Granian with its "
                f"defaults, backlog 1024 and backpressure = backlog ÷ workers "
                f"(= {1024 // self.args.workers:,} concurrent requests per worker here, 1,024 in "
                "total whatever the worker count), and an SSE stream holds its request slot for "
                "its lifetime (upgraded websockets evidently do not). Neither is settable from "
                "the environment through `reflex run`. "
            )
        if kind == "tabs":
            logged = set(re.findall(r"Live tab connected \(([0-9a-f]{8})\)", self.app.log_text()))
            phase.log_connected = sum(1 for t in r["token_prefixes"] if t in logged)
        log(f"{kind}: {phase.ready:,} of {n:,} ready in {phase.connect_seconds:.1f}s"
            + (f"; server log: 'Live tab connected' for {phase.log_connected:,} of them"
               if phase.log_connected is not None else "")
            + (f"; errors {phase.connect_errors}" if phase.connect_errors else ""))
        return phase

    async def publish_spaced(self, phase: Phase, k_events: int, via_bus: bool = False,
                             min_events: int | None = None, seconds: float | None = None
                             ) -> list[int]:
        """Publish up to `k_events`, one at a time; stop early once `min_events` are done
        and `seconds` have passed (large sizes on a slow path)."""
        assert self.clients
        markers = []
        wait = 10 + phase.ready * 0.004
        t0 = time.monotonic()
        for i in range(k_events):
            if min_events is not None and seconds is not None and i >= min_events \
                    and time.monotonic() - t0 > seconds:
                break
            k = await (self.publish_bus() if via_bus else self.publish_api())
            markers.append(k)
            got = await self.clients.call("wait", kind=phase.kind, marker=k, expect=phase.ready,
                                          timeout=wait)
            if got["count"] < phase.ready:
                log(f"  event {k}: only {got['count']:,} of {phase.ready:,} readers after {wait:.0f}s")
            # Every reader has its first frame; the server may still be sending the rest
            # (toasts) or saving tab state: let it finish so events never overlap.
            await self.wait_idle(30, window=0.2, threshold=self.idle_rate + 0.1)
            await asyncio.sleep(self.args.gap)
        await asyncio.sleep(0.5)
        return markers

    async def measure(self, kind: str, n: int) -> Phase:
        assert self.clients
        phase = await self.connect(kind, n)
        if phase.ready == 0:
            phase.note = "no reader became ready"
            self.phases.append(phase)
            await self.clients.call("close", kind=kind)
            return phase
        await self.clients.call("reset", kind=kind)
        via_bus = False
        if not await self.responsive():
            via_bus = True
            phase.note += (
                f"With {phase.ready:,} {kind} open the server answered no other HTTP request "
                "(GET /ping timed out), so this size's events went straight into the bus: no "
                "API→frame figures. "
            )
            log(f"{kind} {n:,}: the server does not answer HTTP; publishing via the bus")
        cpu0, ccpu0 = self.app.cpu_seconds(), self.clients.cpu_seconds()
        t0 = time.monotonic()
        markers = await self.publish_spaced(phase, self.args.events, via_bus=via_bus,
                                            min_events=self.args.min_events,
                                            seconds=self.args.size_seconds)
        cpu1, ccpu1 = self.app.cpu_seconds(), self.clients.cpu_seconds()
        phase.load = (f"publish phase {time.monotonic() - t0:.1f} s: server CPU {cpu1 - cpu0:.1f} s, "
                      f"reader process CPU {ccpu1 - ccpu0:.1f} s")
        data = await self.clients.call("collect", kind=kind)
        analyse(phase, data, self.t_sent if via_bus else self.t_api, self.t_pub, markers,
                api=not via_bus, called=self.t_called, pub_read=self.t_pub_read)
        if phase.deliveries:
            phase.cpu_per_1000 = (cpu1 - cpu0) / phase.deliveries * 1000
        if data["lost"]:
            phase.note += f"{data['lost']} readers disconnected during the run. "
        if data.get("unstamped"):
            phase.note += (f"{data['unstamped']:,} deliveries carried no kernel receive time and "
                           "count from when they were read. ")
        if phase.missing:
            phase.note += f"{phase.missing:,} (event, reader) deliveries missing. "
        if kind == "streams" and data.get("sample_ping_wire"):
            self.extra["sse_ping_wire"] = data["sample_ping_wire"]
        log(f"{kind} {n:,}: {len(markers)} events in {time.monotonic() - t0:.1f}s; "
            f"p50/p99 from PUBLISH {_f(pct(phase.lat_pub, 50))}/{_f(pct(phase.lat_pub, 99))} ms; "
            f"bytes/event {_f(phase.bytes_per_event, '{:.0f}')}")
        profile_at = self.args.profile if kind == "tabs" else self.args.profile_streams
        if n == profile_at and self.args.profile_events:
            await self.profile(phase)
        if kind == "streams" and self.args.burst:
            await self.throughput_burst(phase)
        self.phases.append(phase)
        await self.clients.call("close", kind=kind)
        await self.wait_idle(60)
        return phase

    async def throughput_burst(self, phase: Phase) -> None:
        """SSE: events straight into the bus, back to back; deliveries/s until the last arrives."""
        assert self.clients
        from fictures.events.bus import EventBus
        from fictures.events.schema import StoryPublished

        bus = self.bus_client(EventBus)
        n_events = max(10, min(200, self.args.burst // max(1, phase.ready)))
        await self.clients.call("reset", kind="streams")
        markers = list(range(self.next_marker, self.next_marker + n_events))
        self.next_marker += n_events
        bodies = [
            StoryPublished(story_id=10_000_000 + k, title=f"{self.prefix}{k}", author_id=1)
            .body_without_id()
            for k in markers
        ]
        cpu0, ccpu0 = self.app.cpu_seconds(), self.clients.cpu_seconds()
        t0 = time.time_ns()
        for k, body in zip(markers, bodies, strict=True):
            await bus.send("story:published", body, dedupe_key=f"bench:{self.run_id}:{k}")
        t_sent = time.time_ns()
        got = await self.clients.call("wait", kind="streams", marker=markers[-1],
                                      expect=phase.ready, timeout=60 + phase.ready * 0.05)
        await asyncio.sleep(0.5)
        cpu1, ccpu1 = self.app.cpu_seconds(), self.clients.cpu_seconds()
        data = await self.clients.call("collect", kind="streams")
        arrivals = [t for k in markers for t in data["arrivals"].get(str(k), []) if t is not None]
        if arrivals:
            seconds = (max(arrivals) - t0) / 1e9
            phase.max_rate = len(arrivals) / seconds
            phase.max_rate_detail = (
                f"{n_events} events sent back to back in {(t_sent - t0) / 1e6:.0f} ms to "
                f"{phase.ready:,} streams: {len(arrivals):,} of {n_events * phase.ready:,} "
                f"deliveries in {seconds:.2f} s; server CPU "
                f"{(cpu1 - cpu0) / len(arrivals) * 1000:.3f} s per 1,000 deliveries "
                f"({cpu1 - cpu0:.1f} s; reader process {ccpu1 - ccpu0:.1f} s)"
            )
            log(f"streams {phase.ready:,}: burst {phase.max_rate_detail}")
        if got["count"] < phase.ready:
            phase.note += f"burst: last event reached {got['count']:,} of {phase.ready:,}. "

    def bus_client(self, cls):
        if self.bus is None:
            self.bus = cls(self.app.redis_url, stream_key=self.app.stream_key, maxlen=10**9)
        return self.bus

    async def profile(self, phase: Phase) -> None:
        """py-spy on the server during a further spaced publish to the same tabs."""
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if not spy:
            self.notes.append("py-spy not installed: no profile (pip install py-spy).")
            return
        out = self.app.workdir / "profile.txt"
        assert self.app.process
        proc = subprocess.Popen(
            [spy, "record", "--pid", str(self.app.process.pid), "--subprocesses", "--rate", "1000",
             "--format", "raw", "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        await asyncio.sleep(1.5)
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
            self.notes.append(f"py-spy could not attach: {err.strip()}")
            return
        await self.clients.call("reset", kind=phase.kind)
        log(f"profiling: {self.args.profile_events} more events to {phase.ready:,} {phase.kind} under py-spy")
        await self.publish_spaced(phase, self.args.profile_events)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out.exists():
            self.extra["profile"] = summarise_profile(out.read_text(errors="replace"), phase.ready,
                                                      self.args.profile_events)
            self.extra["profile"]["kind"] = phase.kind
            keep = HERE / "profiles" / f"{self.args.label}-{phase.ready}{phase.kind}.txt"
            keep.parent.mkdir(exist_ok=True)
            shutil.copy(out, keep)
            self.extra["profile_file"] = str(keep.relative_to(HERE)) + " (not committed)"

    async def replay(self) -> None:
        assert self.clients
        from fictures.events.bus import EventBus
        from fictures.events.schema import StoryPublished

        bus = self.bus_client(EventBus)
        r = bus.redis
        have = await r.xlen(self.app.stream_key)
        need = self.args.replay - have
        log(f"replay: topping the stream up from {have:,} to {self.args.replay:,} events")
        base = self.next_marker
        self.next_marker += max(0, need)
        for start in range(0, max(0, need), 100):
            await asyncio.gather(*(
                bus.send("story:published",
                         StoryPublished(story_id=20_000_000 + base + i, title=f"{self.prefix}{base + i}",
                                        author_id=1).body_without_id(),
                         dedupe_key=f"bench:{self.run_id}:{base + i}")
                for i in range(start, min(need, start + 100))
            ))
        await self.wait_idle(30)
        first = await r.xrange(self.app.stream_key, min="-", max="+", count=1)
        first_id = int(first[0][0].split("-")[0])
        count = await r.xlen(self.app.stream_key)
        runs = []
        for _ in range(self.args.replay_runs):
            res = await self.clients.call("replay", last_event_id=first_id - 1, expect=count,
                                          timeout=300)
            if "seconds" not in res:
                runs = [res]
                break
            res["events_per_s"] = res["received"] / res["seconds"]
            runs.append(res)
            await self.wait_idle(10)
        res = sorted(runs, key=lambda r: r.get("events_per_s", 0))[len(runs) // 2]  # median
        res.update(events_in_stream=count, last_event_id=first_id - 1,
                   runs=[r.get("events_per_s") for r in runs])
        self.extra["replay"] = res
        log(f"replay: {res}")

    async def polling_baseline(self) -> None:
        """One real GET /api/stories: bytes on the wire (with headers) and latency."""
        req = (f"GET /api/stories HTTP/1.1\r\nHost: 127.0.0.1:{self.app.port}\r\n"
               "Accept: application/json\r\nUser-Agent: fictures-bench\r\nConnection: close\r\n\r\n"
               ).encode()
        sizes, lats = [], []
        for _ in range(self.args.poll_samples):
            t0 = time.perf_counter()
            reader, writer = await asyncio.open_connection("127.0.0.1", self.app.port)
            writer.write(req)
            await writer.drain()
            body = await reader.read()
            lats.append((time.perf_counter() - t0) * 1000)
            sizes.append(len(body))
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        head, _, payload = bytes(body).partition(b"\r\n\r\n")
        try:
            items = json.loads(payload)
            n_items = len(items["items"]) if isinstance(items, dict) and "items" in items else len(items)
        except ValueError:
            n_items = None
        self.extra["poll"] = {
            "request_bytes": len(req), "response_bytes": statistics.median(sizes),
            "header_bytes": len(head) + 4, "stories_in_page": n_items,
            "latency_p50_ms": pct(lats, 50), "latency_p99_ms": pct(lats, 99), "samples": len(lats),
        }
        log(f"polling: {self.extra['poll']}")

    async def relay_histogram(self) -> tuple[float, float, dict[float, float]]:
        """fictures_outbox_relay_seconds from /api/metrics: (count, sum, {le: cumulative})."""
        text = (await self.http.get("/api/metrics")).text
        count = total = 0.0
        buckets: dict[float, float] = {}
        for line in text.splitlines():
            if line.startswith("fictures_outbox_relay_seconds_count"):
                count = float(line.split()[-1])
            elif line.startswith("fictures_outbox_relay_seconds_sum"):
                total = float(line.split()[-1])
            elif m := re.match(r'fictures_outbox_relay_seconds_bucket\{le="([^"]+)"\} (\S+)', line):
                buckets[float(m.group(1))] = float(m.group(2))
        return count, total, buckets

    async def publish_path(self, n: int) -> None:
        """Where the publish API call's time goes before the PUBLISH, no readers open:
        the HTTP floor (GET /api/health/live), + the bearer token check (GET /api/me),
        + the DB write and commit (POST /api/stories answered), and the relay's share
        (its own histogram: the commit's wake-up -> PUBLISH)."""
        auth = {"Authorization": f"Bearer {self.token}"}

        async def rtt(method: str, path: str, **kw: Any) -> float:
            t0 = time.perf_counter()
            r = await self.http.request(method, path, **kw)
            r.raise_for_status()
            return (time.perf_counter() - t0) * 1000

        floor = [await rtt("GET", "/api/health/live") for _ in range(n)]
        me = [await rtt("GET", "/api/me", headers=auth) for _ in range(n)]
        c0, s0, b0 = await self.relay_histogram()
        posts, to_publish, as_called, client_part, read_part = [], [], [], [], []
        for _ in range(n):
            k = self.next_marker
            self.next_marker += 1
            t0 = time.perf_counter()
            (await self._post_story(k)).raise_for_status()
            posts.append((time.perf_counter() - t0) * 1000)
            for _ in range(200):
                if k in self.t_pub:
                    break
                await asyncio.sleep(0.005)
            if k in self.t_pub:
                to_publish.append((self.t_pub[k] - self.t_api[k]) / 1e6)
                as_called.append((self.t_pub_read[k] - self.t_called[k]) / 1e6)
                client_part.append((self.t_api[k] - self.t_called[k]) / 1e6)
                read_part.append((self.t_pub_read[k] - self.t_pub[k]) / 1e6)
            await asyncio.sleep(0.05)
        c1, s1, b1 = await self.relay_histogram()
        relay_n = c1 - c0
        relay_p50 = next((le * 1000 for le in sorted(b1) if relay_n and b1[le] - b0.get(le, 0) >= relay_n / 2), None)
        self.extra["publish_path"] = {
            "n": n, "api_to_publish_p50": pct(to_publish, 50), "api_to_publish_p99": pct(to_publish, 99),
            # The earlier clocks: from calling the HTTP client to reading the PUBLISH.
            "as_called_p50": pct(as_called, 50), "as_called_p99": pct(as_called, 99),
            "client_p50": pct(client_part, 50), "subscriber_read_p50": pct(read_part, 50),
            "http_p50": pct(floor, 50), "me_p50": pct(me, 50), "post_p50": pct(posts, 50),
            "relay_mean": (s1 - s0) / relay_n * 1000 if relay_n else None, "relay_p50_bucket": relay_p50,
            "relay_n": relay_n,
        }
        log(f"publish path: {self.extra['publish_path']}")

    async def run(self) -> None:
        packet, subprotocol = self.connect_packet()
        self.clients = await Clients.start(self.app.port, self.prefix,
                                           self.app.workdir / "clients.log")
        await self.clients.call("configure", connect_packet=packet, subprotocol=subprotocol)
        listener = asyncio.create_task(self.listen_redis())
        try:
            await asyncio.sleep(0.3)
            await self.register()
            if self.args.publish_path:
                await self.publish_path(self.args.publish_path)
            # Streams first: tabs leave memory behind that the server returns slowly,
            # which would blur the streams' memory figures.
            for n in self.args.streams:
                await self.measure("streams", n)
            for n in self.args.tabs:
                await self.measure("tabs", n)
            if self.args.replay:
                await self.replay()
            if self.args.poll_samples:
                await self.polling_baseline()
        finally:
            watch = getattr(self, "publish_watch", None)
            if watch is not None and watch.closed:
                self.notes.append("the outside Redis subscriber's connection closed during the run: "
                                  "events published after that have no PUBLISH time")
            if watch is not None and watch.unstamped:
                self.notes.append(f"{watch.unstamped:,} PUBLISH arrivals carried no kernel receive time "
                                  "and were noted at read time")
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
            await self.clients.stop()
            await self.http.aclose()
            if self.bus is not None:
                await self.bus.close()


# -- the report -------------------------------------------------------------------


PROFILE_BUCKETS = {
    name: re.compile(rx)
    for name, rx in {
        "per-tab event processing (Reflex process_event)": r"process_event \(",
        "page handler on_story_published": r"CommunityState\.on_story_published ",
        "toast/event formatting (chain_updates)": r"chain_updates ",
        "delta building (get_delta)": r"BaseState\.get_delta ",
        "Socket.IO emit": r"AsyncServer\.emit ",
        "room broadcast (TabHub.broadcast)": r"TabHub\.broadcast ",
        "tab state on disk (StateManagerDisk)": r"StateManagerDisk\.",
        "API request + DB write (create_story)": r"create_story \(.*fictures/stories",
        "SSE stream generator": r"_stream \(.*fictures/api/sse",
    }.items()
}


def summarise_profile(raw: str, tabs: int, events: int) -> dict:
    """py-spy raw (collapsed) output: top frames by own and by inclusive samples."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    buckets: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += c
        for name, rx in PROFILE_BUCKETS.items():
            if any(rx.match(f) for f in frames):
                buckets[name] = buckets.get(name, 0) + c
        # Per function, not per line.
        frames = [re.sub(r":\d+\)$", ")", f) for f in frames]
        own[frames[-1]] = own.get(frames[-1], 0) + c
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c

    def short(frame: str) -> str:
        frame = re.sub(r"\(/[^)]*?/site-packages/", "(", frame)
        return re.sub(r"\(" + re.escape(str(ROOT)) + "/", "(", frame)

    idle_re = re.compile(r"^(process |_worker \(concurrent|Condition\.wait|\w*Selector\.select"
                         r"|_wait_for_tstate_lock|Event\.wait|select \(|poll \()")
    idle = sum(c for f, c in own.items() if idle_re.match(f))
    top_own = sorted(((f, c) for f, c in own.items() if not idle_re.match(f)),
                     key=lambda kv: -kv[1])[:15]
    interesting = [(f, c) for f, c in incl.items() if re.search(
        r"fictures/|reflex(_base)?/(app|state|istate|event)|sonner|socketio|engineio", f)]
    top_incl = sorted(interesting, key=lambda kv: -kv[1])[:15]
    return {
        "samples": total, "idle_samples": idle, "tabs": tabs, "events": events,
        "buckets": {name: c for name, c in buckets.items() if c},
        "top_own": [(short(f), c) for f, c in top_own],
        "top_inclusive": [(short(f), c) for f, c in top_incl],
    }


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    import reflex

    try:
        from importlib.metadata import version

        granian = version("granian")
    except Exception:  # noqa: BLE001
        granian = "?"
    return {
        "nproc": str(os.cpu_count()), "cpu": cpu, "ram": mem,
        "python": platform.python_version(), "reflex": reflex.constants.Reflex.VERSION,
        "granian": granian, "os": platform.platform(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _slope(p: Phase) -> float:
    """Bytes a reader's event frames grow by per earlier event (least squares), or 0."""
    ys = p.bytes_series
    if len(ys) < 3:
        return 0.0
    xs = range(len(ys))
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    return slope if slope > 2 else 0.0


def hour_of_events(p: Phase, rate: int) -> float:
    """Bytes for `rate` events to one reader whose page stays open all hour."""
    slope = _slope(p)
    if not slope:
        return rate * (p.bytes_per_event or 0)
    first = p.bytes_series[0]
    return sum(first + slope * k for k in range(rate))


def growth_note(p: Phase) -> str:
    slope = _slope(p)
    return (f"; measured frames grow by {slope:,.0f} B per earlier event since page load, "
            f"extrapolated" if slope else f" × {p.bytes_per_event:,.0f} B")


def comparison(bench: Bench) -> str:
    """Polling vs SSE vs websockets for the community feed, from the measured figures."""
    poll = bench.extra.get("poll", {})
    rate = EVENT_RATE_PER_HOUR
    per_hour_polls = 3600 / POLL_SECONDS
    poll_bytes = (poll.get("request_bytes", 0) + poll.get("response_bytes", 0)) * per_hour_polls

    def best(kind: str) -> Phase | None:
        ps = [p for p in bench.phases if p.kind == kind and p.bytes_per_event and p.ready]
        ps.sort(key=lambda p: abs(p.asked - 1000))
        return ps[0] if ps else None

    tab, sse = best("tabs"), best("streams")
    ping_ms = bench.extra.get("ping_interval_ms") or 25000
    eio_pings = 3_600_000 / ping_ms
    ws_ping_bytes = eio_pings * (3 + 7)  # "2" down (2-byte header), "3" up (masked: 6-byte header)
    sse_ping_wire = bench.extra.get("sse_ping_wire") or 51
    sse_pings = 3600 / 30
    lines = [
        f"Assumptions: {rate} stories published per hour; polling `GET /api/stories` every "
        f"{POLL_SECONDS // 60} minutes; SSE keep-alive ping every 30 s ({sse_ping_wire} B each on "
        f"the wire); Engine.IO ping every {ping_ms / 1000:.0f} s (3 B down + 7 B pong up). Bytes are "
        "HTTP/websocket payload and framing, without TCP/IP headers; connection set-up is left out "
        "for the long-lived channels (once per reader) and counted for polling only as the request.",
        "",
        "| per reader | polling every 5 min | SSE stream | websocket tab on /community |",
        "|---|---|---|---|",
    ]
    sse_hour = sse_ping_bytes = sse_events = None
    if sse and sse.bytes_per_event:
        sse_ping_bytes = sse_pings * sse_ping_wire
        sse_events = hour_of_events(sse, rate)
        sse_hour = sse_events + sse_ping_bytes
    tab_hour = tab_events = None
    if tab and tab.bytes_per_event:
        tab_events = hour_of_events(tab, rate)
        tab_hour = tab_events + ws_ping_bytes
    lat_poll = (f"{POLL_SECONDS / 2:.0f} s on average, up to {POLL_SECONDS} s "
                f"(+{_f(poll.get('latency_p50_ms'))} ms request)")
    lines.append(
        f"| latency to see a new story | {lat_poll} "
        f"| p50 {_f(pct(sse.lat_pub, 50) if sse else None)} ms, p99 {_f(pct(sse.lat_pub, 99) if sse else None)} ms "
        f"from PUBLISH ({sse.ready:,} streams) "
        if sse else f"| latency to see a new story | {lat_poll} | – "
    )
    lines[-1] += (
        f"| p50 {_f(pct(tab.lat_pub, 50))} ms, p99 {_f(pct(tab.lat_pub, 99))} ms from PUBLISH "
        f"({tab.ready:,} tabs) |" if tab else "| – |"
    )
    lines.append(
        f"| requests per hour | {per_hour_polls:.0f} | 0 (one long-lived request) "
        f"| 0 (one long-lived websocket) |"
    )
    lines.append(
        f"| bytes per hour | {poll_bytes / 1024:,.0f} KiB ({poll.get('response_bytes', 0):,.0f} B "
        f"response with {poll.get('stories_in_page', '?')} stories + {poll.get('request_bytes', 0)} B "
        f"request, × {per_hour_polls:.0f}) "
        + (f"| {sse_hour / 1024:,.1f} KiB ({sse_events / 1024:,.1f} KiB for {rate} events"
           f"{growth_note(sse)} + {sse_ping_bytes / 1024:.1f} KiB pings) " if sse_hour else "| – ")
        + (f"| {tab_hour / 1024:,.1f} KiB ({tab_events / 1024:,.1f} KiB for {rate} events"
           f"{growth_note(tab)} + {ws_ping_bytes / 1024:.1f} KiB pings) |" if tab_hour else "| – |")
    )
    k = 1000
    lines.append(
        f"| for {k:,} readers, per hour | {per_hour_polls * k:,.0f} requests, "
        f"{poll_bytes * k / 2**20:,.1f} MiB "
        + (f"| {sse_hour * k / 2**20:,.1f} MiB, server CPU "
           f"{rate * k * (sse.cpu_per_1000 or 0) / 1000:,.1f} s " if sse_hour else "| – ")
        + (f"| {tab_hour * k / 2**20:,.1f} MiB, server CPU "
           f"{rate * k * (tab.cpu_per_1000 or 0) / 1000:,.1f} s |" if tab_hour else "| – |")
    )
    return "\n".join(lines)


def _phase_details(p: Phase) -> str:
    bits = [f"connected in {p.connect_seconds:.1f} s"]
    if p.log_connected is not None:
        bits.append(f"server log 'Live tab connected' ×{p.log_connected:,}")
    if p.connect_errors:
        bits.append("connect failures: " + "; ".join(f"{v:,}× {k}" for k, v in p.connect_errors.items()))
    if p.load:
        bits.append(p.load)
    if p.last_api:
        bits.append(f"last reader from API p50/p99 {_f(pct(p.last_api, 50))}/{_f(pct(p.last_api, 99))} ms")
    if p.read_pub:
        bits.append(
            "as read (the processes' reads, from the HTTP client called; the reader's queue "
            "included): PUBLISH→frame p50/p99 "
            f"{_f(pct(p.read_pub, 50))}/{_f(pct(p.read_pub, 99))} ms, last reader from PUBLISH "
            f"p50/p99 {_f(pct(p.read_last_pub, 50))}/{_f(pct(p.read_last_pub, 99))} ms"
            + (f", from API p99 {_f(pct(p.read_last_api, 99))} ms" if p.read_last_api else "")
        )
    if p.max_rate_detail:
        bits.append(p.max_rate_detail)
    if p.note:
        bits.append(p.note.strip())
    return f"- {p.asked:,} {p.kind}: " + "; ".join(bits)


def details(bench: Bench) -> list[str]:
    lines = [_phase_details(p) for p in bench.phases]
    rep = bench.extra.get("replay")
    if rep:
        if "events_per_s" in rep:
            lines.append(
                f"- replay: one SSE client resuming with Last-Event-ID {rep['last_event_id']} "
                f"(oldest retained − 1) from a stream of {rep['events_in_stream']:,} events received "
                f"{rep['received']:,} in {rep['seconds']:.2f} s: **{rep['events_per_s']:,.0f} events/s** "
                f"({rep['bytes'] / rep['received']:.0f} B per event); median of "
                f"{len(rep['runs'])} runs: " + ", ".join(f"{r:,.0f}" for r in rep["runs"])
                + " events/s"
            )
        else:
            lines.append(f"- replay: failed: {rep}")
    pp = bench.extra.get("publish_path")
    if pp:
        lines.append(
            f"- publish path, no readers, {pp['n']} stories one at a time: API call → PUBLISH p50 "
            f"**{_f(pp['api_to_publish_p50'])} ms** (p99 {_f(pp['api_to_publish_p99'])}; from the "
            f"request's first byte written to the kernel's receive time of the PUBLISH at the outside "
            f"subscriber). On the earlier clocks, from calling the HTTP client to reading the PUBLISH: "
            f"p50 {_f(pp.get('as_called_p50'))} ms (p99 {_f(pp.get('as_called_p99'))}); the client's "
            f"own work before the first byte p50 {_f(pp.get('client_p50'))} ms, the subscriber's "
            f"read after its kernel had the PUBLISH p50 {_f(pp.get('subscriber_read_p50'))} ms. Where it goes "
            f"(p50 round trips from the benchmark's client): HTTP to the app and back "
            f"{_f(pp['http_p50'])} ms (GET /api/health/live); bearer token check "
            f"+{_f(pp['me_p50'] - pp['http_p50'])} ms (GET /api/me); body, insert, outbox row and "
            f"commit +{_f(pp['post_p50'] - pp['me_p50'])} ms (POST /api/stories answered: "
            f"{_f(pp['post_p50'])} ms); the relay, from the commit's wake-up to the PUBLISH (thread "
            f"hop, reading the unsent row, the publish script in Redis): mean "
            f"{_f(pp['relay_mean'])} ms over {pp['relay_n']:.0f} (fictures_outbox_relay_seconds). "
            + (f"API → PUBLISH p50 per run: {' / '.join(_f(v) for v in pp['runs'])} ms. " if pp.get("runs") else "")
            +
            "The PUBLISH happens while the API's response is still on its way back."
        )
    tb = bench.extra.get("tab_connect_bytes")
    if tb and tb[0]:
        lines.append(f"- one tab's connect: {tb[0]:,} B sent, {tb[1]:,} B received up to ready "
                       "(upgrade, Engine.IO open, hydrate, on_load deltas)")
    return lines


def render_profile(prof: dict, raw_file: str) -> list[str]:
    busy = prof["samples"] - prof["idle_samples"]
    return [
        f"Profile (py-spy, 1,000 Hz, whole server tree, {prof['events']} events to "
        f"{prof['tabs']:,} {prof.get('kind', 'tabs')}; {prof['samples']:,} samples, ~{busy:,} not idle; raw file "
        f"{raw_file}):",
        "",
        "Where the busy samples are (a stack can count in several rows): "
        + "; ".join(f"{name} {c / max(busy, 1):.0%}" for name, c in
                    sorted(prof.get("buckets", {}).items(), key=lambda kv: -kv[1])) + ".",
        "",
        "| own samples | frame (idle waits left out) |", "|---|---|",
        *[f"| {c:,} | `{f}` |" for f, c in prof["top_own"][:12]],
        "",
        "| inclusive samples | app / Reflex / Socket.IO frame |", "|---|---|",
        *[f"| {c:,} | `{f}` |" for f, c in prof["top_inclusive"][:15]],
        "",
    ]


def render_block(bench: Bench, cmd: str, wall: float) -> str:
    a = bench.args
    m = machine()
    out = [
        f"## {a.label}",
        "",
        f"- date: {m['date']}; wall time {wall:.0f} s",
        f"- machine: {m['nproc']} cores ({m['cpu']}), {m['ram']} RAM; {m['os']}",
        f"- Python {m['python']}, Reflex {m['reflex']}, Granian {m['granian']}; "
        f"server workers: {a.workers}; Redis: {'given URL' if a.redis_url else 'embedded Valkey'}; "
        f"DB: {'given URL' if a.database_url else 'temp SQLite'}",
        f"- app code: {git_head(Path(a.app_dir).resolve())}",
        f"- command: `{cmd}`",
        *([f"- {a.runs} runs, the app restarted for each: each row is the run with the median p99 "
           "PUBLISH→frame for that row (the other runs' figures are in its details); profile and "
           "replay from the first run"] if getattr(a, "runs", 1) > 1 else []),
        "",
        table(bench.phases, bench.extra.get("replay")),
        "",
        "Columns: latency is from the API call (`POST /api/stories`: its request's first byte "
        "written) or from the moment an outside Redis subscriber received the `story:published` "
        "PUBLISH, to the first "
        "frame carrying the story at the reader (each the kernel's receive time of the data that "
        "carried it, SO_TIMESTAMPNS: when it reached the reader's machine; the processes' own "
        "later reads, the reader's queue of sockets included, and the HTTP client called, are in "
        "the details as \"as read\"), "
        "over every (event, reader) delivery; "
        "\"last reader\" is, per event, the time until the last reader had it. Spaced burst: "
        "deliveries ÷ (first API call → last arrival) while events are published one at a time "
        f"(the next {a.gap} s after every reader has the previous one and the server is idle again). Max deliveries/s: events sent "
        "straight into the bus back to back (SSE only). Bytes: everything the reader received for "
        "the event (all websocket frames, e.g. delta + toast; SSE chunk framing included), pings "
        "apart; (a→b) = first event → last event when it grows. CPU: user+system seconds of the "
        "server's process tree during the publish phase ÷ deliveries (includes the API requests "
        "and DB writes, which dominate at 1 reader). RSS: server process-tree resident memory "
        "after connecting minus before, ÷ ready connections (a later size of the same kind reuses "
        "memory freed by the earlier one, so the first size of each kind is the cleaner figure).",
        "",
    ]
    out += ["Details:", "", *details(bench), ""]
    if bench.notes:
        out += ["Notes:", "", *[f"- {n}" for n in bench.notes], ""]
    prof = bench.extra.get("profile")
    if prof:
        out += render_profile(prof, bench.extra.get("profile_file", ""))
    out += ["### Polling vs SSE vs websockets for this job", "", comparison(bench), ""]
    return "\n".join(out)


def git_head(app_dir: Path) -> str:
    try:
        head = subprocess.run(["git", "log", "-1", "--format=%h %s"], cwd=app_dir,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "fictures"], cwd=app_dir,
                               capture_output=True, text=True, check=False).stdout.strip()
        where = "" if app_dir == ROOT else f" (checkout at {app_dir})"
        return f"commit {head[:90]}{where}" + (
            "; fictures/ had uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


INTRO = """# Fan-out benchmark results

How a published story reaches readers of /community, measured by
`benchmarks/fanout.py` (see its docstring for the method). One section per
`--label`; a run rewrites only its own label's section. Figures, not
pass/fail: run it on a quiet machine and compare sections run on the same one.
"""


def write_results(label: str, block: str) -> None:
    blocks: dict[str, str] = {}
    if RESULTS.exists():
        text = RESULTS.read_text()
        for m in re.finditer(r"<!-- BEGIN ([\w.-]+) -->\n(.*?)<!-- END \1 -->", text, re.S):
            blocks[m.group(1)] = m.group(2)
    blocks[label] = block.rstrip() + "\n"
    order = sorted(blocks, key=lambda k: (k not in ("before", "after"), k != "before", k))
    parts = [INTRO]
    for k in order:
        parts.append(f"<!-- BEGIN {k} -->\n{blocks[k]}<!-- END {k} -->\n")
    RESULTS.write_text("\n".join(parts))


# -- entry point ------------------------------------------------------------------


def sizes(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()] if text else []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", default="run",
                   help="section of RESULTS.md to (re)write, e.g. before / after (default: run)")
    p.add_argument("--tabs", type=sizes, default=sizes("1,200,1000,5000"),
                   help="websocket tab counts, comma-separated ('' for none)")
    p.add_argument("--streams", type=sizes, default=sizes("1000,5000"),
                   help="SSE stream counts, comma-separated ('' for none)")
    p.add_argument("--events", type=int, default=20, help="events published per size (at most)")
    p.add_argument("--min-events", type=int, default=5,
                   help="... but a size stops after --size-seconds once this many were published")
    p.add_argument("--size-seconds", type=float, default=25,
                   help="publishing time per size after which --min-events suffice")
    p.add_argument("--gap", type=float, default=0.1,
                   help="seconds between the server going idle after an event (every reader "
                   "has it) and the next publish")
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--redis-url", default="", help="use this Redis instead of an embedded Valkey")
    p.add_argument("--database-url", default="", help="use this DB instead of a temp SQLite file")
    p.add_argument("--app-dir", default=str(ROOT),
                   help="run the app from this checkout (e.g. `git worktree add /tmp/old <commit>` "
                   "to measure older code); default: this repository")
    p.add_argument("--concurrency", type=int, default=50, help="connections opened at once")
    p.add_argument("--connect-timeout", type=float, default=20,
                   help="connect budget per size: this many seconds ...")
    p.add_argument("--connect-seconds-per-client", type=float, default=0.02,
                   help="... plus this many per reader")
    p.add_argument("--stall", type=float, default=8,
                   help="stop connecting once no reader became ready for this many seconds")
    p.add_argument("--burst", type=int, default=100_000,
                   help="SSE throughput burst size in deliveries (0: skip)")
    p.add_argument("--publish-path", type=int, default=30,
                   help="stories published with no readers to break down publish -> PUBLISH (0: skip)")
    p.add_argument("--replay", type=int, default=10_000,
                   help="events in the stream for the replay measurement (0: skip)")
    p.add_argument("--replay-runs", type=int, default=3, help="replay runs (the median is shown)")
    p.add_argument("--poll-samples", type=int, default=20, help="GET /api/stories samples")
    p.add_argument("--profile", type=int, default=1000,
                   help="tab count at which to profile the server with py-spy (0: never)")
    p.add_argument("--profile-events", type=int, default=3, help="events published while profiling")
    p.add_argument("--no-profile", dest="profile", action="store_const", const=0)
    p.add_argument("--profile-streams", type=int, default=0,
                   help="SSE stream count at which to profile the server with py-spy (0: never)")
    p.add_argument("--clear-states", action="store_true",
                   help="first delete the saved tab states (*.pkl) in the app dir's .states "
                   "(leftovers of earlier runs; don't use on a folder a running app shares)")
    p.add_argument("--runs", type=int, default=1,
                   help="measure this many times, the app restarted each time; each row shows the run "
                   "with its median p99 (PUBLISH -> frame), the others' figures in its details")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    return p.parse_args(argv)


async def one_run(args: argparse.Namespace, states_note: str, t0: float) -> Bench:
    """Start the app, measure every size, stop it."""
    log("starting Redis and the app (production build) ...")
    app = await asyncio.to_thread(
        _server.start_app, workers=args.workers, redis_url=args.redis_url or None,
        database_url=args.database_url or None, stream_maxlen=max(20_000, args.replay * 2),
        app_dir=Path(args.app_dir).resolve(),
    )
    log(f"app up at {app.url} (pid {app.process.pid if app.process else '?'}) "
        f"in {time.monotonic() - t0:.0f}s; log {app.log_path}")
    bench = Bench(args, app)
    bench.notes.append(
        f"{states_note}. Reflex (one worker, no Redis state manager) keeps every tab's state as "
        "pickles in the app's `.states` and periodically scans that folder, so a large leftover "
        "folder costs CPU during the run."
    )
    keep_logs = False
    try:
        await bench.run()
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise
    except BaseException:
        keep_logs = True
        log(f"failed; server log kept at {app.log_path}")
        raise
    finally:
        errors = [line for line in app.log_text().splitlines()
                  if re.search(r"\b(ERROR|CRITICAL)\b|Traceback", line)]
        if errors:
            bench.notes.append(f"the server logged {len(errors)} error line(s), first: "
                               f"`{errors[0][:200]}`")
        if keep_logs:
            app.stop()
        else:
            _server.cleanup(app)
    return bench


def merge_runs(benches: list[Bench]) -> Bench:
    """Several runs as one report: each row is the run whose p99 PUBLISH -> frame
    is the median of that row's runs (a real run's figures, not a blend); the
    spread over the runs goes in that row's details."""
    first = benches[0]
    if len(benches) == 1:
        return first
    merged = []
    for i in range(len(first.phases)):
        rows = [b.phases[i] for b in benches if i < len(b.phases)]
        rows.sort(key=lambda ph: pct(ph.lat_pub, 99) or 0.0)
        chosen = rows[len(rows) // 2]

        def spread(name: str, values: list[float | None]) -> str:
            return f"{name} " + " / ".join(_f(v) for v in values)

        chosen.note += (
            f"Median of {len(rows)} runs (by p99 PUBLISH→frame); per run: "
            + "; ".join([
                spread("PUBLISH→frame p99", [pct(ph.lat_pub, 99) for ph in rows]),
                spread("API→frame p99", [pct(ph.lat_api, 99) for ph in rows]),
                spread("last reader from PUBLISH p99", [pct(ph.last_pub, 99) for ph in rows]),
                spread("last reader from API p99", [pct(ph.last_api, 99) for ph in rows]),
                spread("as read: last reader from PUBLISH p99", [pct(ph.read_last_pub, 99) for ph in rows]),
                *([spread("max deliveries/s", [ph.max_rate for ph in rows])] if chosen.max_rate else []),
                spread("RSS/conn KiB", [ph.rss_per_conn / 1024 if ph.rss_per_conn else None for ph in rows]),
            ]) + " ms. "
        )
        merged.append(chosen)
    first.phases = merged
    paths = [b.extra["publish_path"] for b in benches if "publish_path" in b.extra]
    if paths:
        paths.sort(key=lambda pp: pp["api_to_publish_p50"] or 0.0)
        first.extra["publish_path"] = paths[len(paths) // 2]
        first.extra["publish_path"]["runs"] = [pp["api_to_publish_p50"] for pp in paths]
    first.notes += [n for b in benches[1:] for n in b.notes if n.startswith("the server logged")]
    return first


async def amain(args: argparse.Namespace, cmd: str) -> int:
    t0 = time.monotonic()
    limit = _server.raise_fd_limit()
    need = max([*args.tabs, *args.streams, 0]) + 200
    if limit < need:
        log(f"open-file limit {limit} is below {need}: the largest sizes may fail")
    states = Path(args.app_dir).resolve() / ".states"
    pickles = list(states.glob("*.pkl")) if states.is_dir() else []
    if args.clear_states and pickles:
        for f in pickles:
            f.unlink(missing_ok=True)
        log(f"removed {len(pickles):,} saved tab states from {states}")
    states_note = (f"{len(pickles):,} saved tab states in {states} at start"
                   + (" (removed: --clear-states)" if args.clear_states and pickles else ""))
    benches = []
    for run in range(args.runs):
        run_args = argparse.Namespace(**vars(args))
        if run:
            run_args.profile = run_args.profile_streams = 0  # profiled once, in the first run
            run_args.replay = 0
        if args.runs > 1:
            log(f"=== run {run + 1} of {args.runs}")
        benches.append(await one_run(run_args, states_note, t0))
    bench = merge_runs(benches)
    wall = time.monotonic() - t0
    block = render_block(bench, cmd, wall)
    print(block)
    if not args.no_write:
        write_results(args.label, block)
        log(f"wrote {RESULTS.relative_to(ROOT)} (section '{args.label}'); total {wall:.0f}s")
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cmd = ".venv/bin/python benchmarks/fanout.py " + " ".join(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _interrupt)  # unwinds through the cleanup like Ctrl+C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    try:
        return asyncio.run(amain(args, cmd.strip()))
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
