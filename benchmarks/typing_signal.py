"""Typing-signal benchmark: one typing signal to every tab on one story page.

    .venv/bin/python benchmarks/typing_signal.py [--tabs 1000] [--signals 20] [--workers 1]
        [--idle-signals 200] [--label typing] [--no-write]

It starts the app in production mode (as benchmarks/fanout.py does, with
benchmarks/_server.py), publishes one story, and opens --tabs simulated tabs on
its page (benchmarks/_clients.py: real Reflex websocket clients, hydrate +
on_load like a browser, so each joins the story's room and counts as a reader).
Once their presence has settled it sends typing signals the way the typer's
worker does (a PUBLISH on the signals channel, kind "typing"), one at a time:

- a new typer: every tab gets one frame (the room's `typers` value); measured
  from the PUBLISH (seen by an outside subscriber) to the frame at each tab, and
  to the frame at the LAST tab; then that typer's `stop` (another frame, not timed);
- the same typer again while typing (--idle-signals of them): nothing changes,
  so no frame is sent; this shows what a burst costs the server per signal.

Server CPU is the server process tree's user+system time during each part,
less what the open tabs cost at rest (pings) over the same time, divided by
the signals sent. Figures only, never pass/fail; it writes its section of
benchmarks/RESULTS.md (--label, default "typing").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import _server  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from fanout import Clients, log, pct, write_results  # noqa: E402


def connect_packet(app: _server.App, path: str) -> tuple[str, str]:
    """The hydrate event a browser sends on `path`, from the generated frontend."""
    from reflex import constants

    ctx = (app.app_dir / ".web" / "utils" / "context.jsx").read_text()
    state_name = re.search(r'export const state_name = "([^"]+)"', ctx).group(1)
    schema = re.search(r'export const stateSchema = "([^"]+)"', ctx).group(1)
    hashes = json.loads(re.search(r"export const initialStateHashes = (\[[^\]]*\])", ctx).group(1))
    event = {
        "name": f"{state_name}.hydrate_and_load",
        "payload": {"hashes": hashes},
        "router_data": {"pathname": path, "asPath": path},
    }
    packet = "40/_event," + json.dumps({"event": event, "state_schema": schema}, separators=(",", ":"))
    return packet, constants.Reflex.VERSION


async def idle_rate(app: _server.App, seconds: float = 2.0) -> float:
    """Server CPU seconds per second with the tabs open and nothing happening."""
    cpu = app.cpu_seconds()
    await asyncio.sleep(seconds)
    return (app.cpu_seconds() - cpu) / seconds


async def wait_idle(app: _server.App, threshold: float, max_seconds: float = 60) -> None:
    t0, prev = time.monotonic(), app.cpu_seconds()
    while time.monotonic() - t0 < max_seconds:
        await asyncio.sleep(0.3)
        cur = app.cpu_seconds()
        if (cur - prev) / 0.3 < threshold:
            return
        prev = cur


async def run(args: argparse.Namespace, app: _server.App) -> dict:
    run_id = uuid.uuid4().hex[:6]
    prefix = f"bench_{run_id}_"  # a valid username: the typer's name carries the marker
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        name, password = f"author_{run_id}", "password123"
        (await http.post("/api/auth/register", json={"username": name, "password": password})).raise_for_status()
        token = (await http.post("/api/auth/token", json={"username": name, "password": password})).json()["token"]
        story = (await http.post("/api/stories", json={"title": "Typing bench", "status": "published"},
                                 headers={"Authorization": f"Bearer {token}"})).json()["id"]
    room, path = f"story:{story}", f"/community/story/{story}/"
    channel = app.stream_key + ":signals"
    packet, subprotocol = connect_packet(app, path)
    clients = await Clients.start(app.port, prefix, app.workdir / "clients.log")
    redis = aioredis.Redis.from_url(app.redis_url)
    published: dict[int, int] = {}
    listener = asyncio.create_task(_listen(app.redis_url, channel, prefix, published))
    result: dict = {"story": story}
    try:
        await clients.call("configure", connect_packet=packet, subprotocol=subprotocol)
        await asyncio.sleep(0.3)
        log(f"opening {args.tabs:,} tabs on {path}")
        opened = await clients.call("open", kind="tabs", n=args.tabs, concurrency=50,
                                    timeout=60 + args.tabs * 0.03, stall=15)
        result["ready"] = opened["ready"]
        result["connect_s"] = opened["seconds_to_last_ready"]
        log(f"{opened['ready']:,} tabs ready in {opened['seconds_to_last_ready']:.1f} s; waiting for presence to settle")
        await wait_idle(app, threshold=0.1)
        async with httpx.AsyncClient(base_url=app.url, timeout=10) as http:
            result["readers"] = (await http.get(f"/api/stories/{story}/presence")).json()["count"]
        rest = await idle_rate(app)
        result["idle_cpu_per_s"] = rest
        await clients.call("reset", kind="tabs")

        setup = Setup(args, app, clients, redis, channel, room, prefix, opened["ready"], published, rest)
        result["new_typer"] = await new_typers(setup)
        log(f"new typer: {result['new_typer']}")
        result["still_typing"] = await still_typing(setup)
        log(f"still typing: {result['still_typing']}")
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await listener
        await redis.aclose()
        await clients.stop()
    return result


@dataclass
class Setup:
    """What the measurements share: the app, its story room and the open tabs."""

    args: argparse.Namespace
    app: _server.App
    clients: Clients
    redis: aioredis.Redis
    channel: str
    room: str
    prefix: str  # of the typers' names, which carry the marker the tabs look for
    ready: int  # open tabs
    published: dict[int, int]  # marker -> when Redis delivered its PUBLISH
    rest: float  # server CPU seconds per second at rest


async def new_typers(b: Setup) -> dict:
    """New typers one at a time: one frame to every tab each (then its stop)."""
    args, app, clients, redis, channel, room, prefix, ready, published, rest = (
        b.args, b.app, b.clients, b.redis, b.channel, b.room, b.prefix, b.ready, b.published, b.rest
    )
    cpu0, t0 = app.cpu_seconds(), time.monotonic()
    for k in range(1, args.signals + 1):
        user = f"{prefix}{k}"
        await redis.publish(channel, json.dumps({"kind": "typing", "room": room, "user": user}))
        got = await clients.call("wait", kind="tabs", marker=k, expect=ready, timeout=30)
        if got["count"] < ready:
            log(f"  signal {k}: only {got['count']:,} of {ready:,} tabs had the frame")
        await redis.publish(channel, json.dumps({"kind": "typing", "room": room, "user": user, "stop": True}))
        await wait_idle(app, threshold=rest + 0.05)
    cpu1, t1 = app.cpu_seconds(), time.monotonic()
    data = await clients.call("collect", kind="tabs")
    lat, last, sizes = [], [], []
    for k in range(1, args.signals + 1):
        arrivals = [t for t in data["arrivals"].get(str(k), []) if t is not None]
        if k in published and arrivals:
            lat += [(t - published[k]) / 1e6 for t in arrivals]
            if len(arrivals) == data["clients"]:
                last.append((max(arrivals) - published[k]) / 1e6)
        sizes += [b for b in data["bytes"].get(str(k), []) if b]
    return {
        "signals": args.signals,
        "deliveries": len(lat),
        "lat_p50": pct(lat, 50), "lat_p99": pct(lat, 99),
        "last_p50": pct(last, 50), "last_p99": pct(last, 99), "last_max": max(last, default=None),
        "bytes_start_stop": sum(sizes) / len(sizes) if sizes else None,
        # Each new typer is two signals: it, and its stop.
        "cpu_per_signal_ms": ((cpu1 - cpu0) - rest * (t1 - t0)) / (2 * args.signals) * 1000,
    }


async def still_typing(b: Setup) -> dict:
    """The same typer again and again while shown: nothing changes, no frame."""
    args, app, redis, channel, room, prefix, rest = (
        b.args, b.app, b.redis, b.channel, b.room, b.prefix, b.rest
    )
    message = json.dumps({"kind": "typing", "room": room, "user": f"{prefix}0"})
    await redis.publish(channel, message)
    await wait_idle(app, threshold=rest + 0.05)
    cpu0, t0 = app.cpu_seconds(), time.monotonic()
    for _ in range(args.idle_signals):
        await redis.publish(channel, message)
    await wait_idle(app, threshold=rest + 0.05)
    cpu1, t1 = app.cpu_seconds(), time.monotonic()
    return {
        "signals": args.idle_signals,
        "cpu_per_signal_ms": max(0.0, (cpu1 - cpu0) - rest * (t1 - t0)) / args.idle_signals * 1000,
    }


async def _listen(url: str, channel: str, prefix: str, published: dict[int, int]) -> None:
    """An outside subscriber: when Redis delivered each typing PUBLISH (≈ when it happened)."""
    marker = re.compile(re.escape(prefix) + r"(\d+)")
    r = aioredis.Redis.from_url(url)
    ps = r.pubsub()
    await ps.subscribe(channel)
    try:
        async for msg in ps.listen():
            if msg["type"] != "message":
                continue
            now = time.time_ns()
            data = msg["data"].decode(errors="replace")
            if '"stop"' not in data and (m := marker.search(data)):
                published.setdefault(int(m.group(1)), now)
    finally:
        await ps.aclose()
        await r.aclose()


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def render(result: dict, args: argparse.Namespace, cmd: str, wall: float) -> str:
    new, idle = result["new_typer"], result["still_typing"]
    cpu = psutil.cpu_count(logical=True)
    per_tab_us = new["cpu_per_signal_ms"] * 1000 / max(result["ready"], 1)
    return "\n".join([
        f"## {args.label}",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; wall time {wall:.0f} s",
        f"- machine: {cpu} cores; {platform.platform()}; server workers: {args.workers}; Redis: embedded Valkey",
        f"- load average (1 min) before / after the run: {result['load'][0]:.1f} / {result['load'][1]:.1f} "
        "(other work on the machine inflates latencies more than CPU seconds)",
        f"- command: `{cmd}`",
        "",
        f"{result['ready']:,} simulated tabs on one story page (connected in {result['connect_s']:.1f} s; "
        f"{result['readers']:,} readers counted by presence); typing signals sent as the typer's "
        "worker sends them (one PUBLISH each).",
        "",
        "| signal | signals | PUBLISH→frame p50 / p99 ms (every tab) | PUBLISH→frame at the LAST tab "
        "p50 / p99 / max ms | bytes per tab (start + stop frame) | server CPU per signal |",
        "|---|---|---|---|---|---|",
        f"| a new typer (one frame to every tab; then its stop) | {new['signals']} "
        f"| {_f(new['lat_p50'])} / {_f(new['lat_p99'])} "
        f"| **{_f(new['last_p50'])}** / {_f(new['last_p99'])} / {_f(new['last_max'])} "
        f"| {_f(new['bytes_start_stop'], '{:,.0f}')} "
        f"| **{new['cpu_per_signal_ms']:.1f} ms** ({per_tab_us:.1f} µs per tab) |",
        f"| the same typer still typing (no change, no frame) | {idle['signals']} | – | – | 0 "
        f"| **{idle['cpu_per_signal_ms']:.3f} ms** |",
        "",
        f"Server CPU: user+system of the server's process tree while the signals were handled, less "
        f"its rate at rest with the tabs open ({result['idle_cpu_per_s'] * 1000:.0f} ms per second: "
        "Engine.IO pings every 5 s), divided by the signals (a new typer counts its stop as a "
        "second signal). No handler runs per tab: a signal costs one dict update and, when the "
        "room's list changed, one Socket.IO frame encoded once and written to each socket.",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tabs", type=int, default=1000)
    p.add_argument("--signals", type=int, default=20, help="new typers (each one frame to every tab)")
    p.add_argument("--idle-signals", type=int, default=200, help="signals from a typer already shown")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--label", default="typing")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = p.parse_args(argv)
    cmd = ".venv/bin/python benchmarks/typing_signal.py " + " ".join(sys.argv[1:] if argv is None else argv)
    t0 = time.monotonic()
    load_before = os.getloadavg()[0]
    _server.raise_fd_limit()
    log("starting Redis and the app (production build) ...")
    app = _server.start_app(workers=args.workers)
    try:
        result = asyncio.run(run(args, app))
        result["load"] = (load_before, os.getloadavg()[0])
    finally:
        errors = [line for line in app.log_text().splitlines()
                  if re.search(r"\b(ERROR|CRITICAL)\b|Traceback", line)]
        _server.cleanup(app)
    block = render(result, args, cmd.strip(), time.monotonic() - t0)
    if errors:
        block += f"\n\nThe server logged {len(errors)} error line(s), first: `{errors[0][:200]}`"
    print(block)
    if not args.no_write:
        write_results(args.label, block)
        log(f"wrote benchmarks/RESULTS.md (section '{args.label}')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
