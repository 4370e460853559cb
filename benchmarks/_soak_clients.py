"""Simulated readers for benchmarks/soak.py, in a process of their own.

Both kinds go through nginx and come back after every fault the way a browser does:

- tabs: Reflex websocket clients on /community (Engine.IO open, Socket.IO
  connect carrying the page's hydrate event, ping/pong) that keep their token
  across reconnects (a browser tab keeps it in sessionStorage) and retry after
  200 ms x attempts, at most 2 s (Reflex's own client);
- streams: SSE clients on /api/community/events that resume with Last-Event-ID
  after the server's `retry:` hint, or 3 s without one (EventSource's default).

Every published title carries its marker and its publish time in ms
(`<prefix><k>-<ms>`), so each reader records, without any coordination, the
first arrival of every marker (latency = arrival - publish time, per 30 s
window of publish time), repeated deliveries, and its own timeline (down,
connecting, live, stale = Live off because the server's Redis subscription is
down). Markers are bits in a bytearray per reader: thousands of readers and
tens of thousands of events fit in a few MB.

Driven by JSON lines on stdin, one answer per command on stdout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import resource
import sys
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

WINDOW_MS = 30_000
# A tab that was live from an event's publication until this long after it
# should have got it live; missing it then is a loss "while live".
LIVE_GRACE_MS = 5_000


def now_ms() -> float:
    return time.time() * 1000


class Bits:
    def __init__(self) -> None:
        self.data = bytearray(1024)

    def test_and_set(self, k: int) -> bool:
        """Set bit k; whether it was set before."""
        byte, bit = divmod(k, 8)
        if byte >= len(self.data):
            self.data.extend(bytes(max(byte + 1 - len(self.data), len(self.data))))
        was = self.data[byte] >> bit & 1
        self.data[byte] |= 1 << bit
        return bool(was)

    def has(self, k: int) -> bool:
        byte, bit = divmod(k, 8)
        return byte < len(self.data) and bool(self.data[byte] >> bit & 1)


class Shared:
    """What all readers of a kind add to: latency histograms per window."""

    def __init__(self, t0_ms: float) -> None:
        self.t0_ms = t0_ms
        self.latency: dict[tuple[str, int], Counter[int]] = defaultdict(Counter)


class Reader:
    kind = ""

    def __init__(self, shared: Shared, marker_re: re.Pattern[bytes]) -> None:
        self.shared = shared
        self.marker_re = marker_re
        self.seen = Bits()
        self.seen_live = Bits()
        self.duplicates = 0
        self.timeline: list[tuple[float, str]] = []
        self.delivered = 0
        self.created_ms = now_ms()
        self.connects = 0
        self.errors: Counter[str] = Counter()
        self.stopped = False
        self.task: asyncio.Task | None = None

    def state(self, name: str) -> None:
        if not self.timeline or self.timeline[-1][1] != name:
            self.timeline.append((now_ms(), name))

    @property
    def current(self) -> str:
        return self.timeline[-1][1] if self.timeline else "down"

    def arrived(self, data: bytes, live: bool) -> None:
        """Markers in a frame; `live` frames count toward duplicates."""
        t = now_ms()
        found = self.marker_re.findall(data)
        # A tab's broadcast frame carries one arrival; a frame with several is a
        # resync of the room's slots (after a reconnect), not a second delivery.
        live = live and (self.kind != "tabs" or len(found) == 1)
        for k_raw, ms_raw in found:
            k, published = int(k_raw), int(ms_raw)
            if published < self.created_ms:
                continue  # published before this reader existed: history, not delivery
            if not self.seen.test_and_set(k):
                self.delivered += 1
                window = int((published - self.shared.t0_ms) // WINDOW_MS)
                self.shared.latency[(self.kind, window)][max(0, round(t - published))] += 1
            if live and self.seen_live.test_and_set(k):
                self.duplicates += 1


# -- websocket tabs ---------------------------------------------------------------


def _mask(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


class Tab(Reader):
    kind = "tabs"
    host = ""
    port = 0
    origin = ""
    connect_packet = ""
    subprotocol = ""

    def __init__(self, shared: Shared, marker_re: re.Pattern[bytes]) -> None:
        super().__init__(shared, marker_re)
        self.token = str(uuid.uuid4())
        self.ready = asyncio.get_running_loop().create_future()
        self.got_ready = False
        self.flags: dict[str, bool] = {}

    async def run(self) -> None:
        attempts = 0
        while not self.stopped:
            self.state("connecting")
            try:
                attempts = 0 if await self.session() else attempts
            except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
                self.errors[re.sub(r"\d+", "N", f"{type(exc).__name__}: {exc}")[:100]] += 1
            self.state("down")
            if self.stopped:
                return
            attempts = min(attempts + 1, 10)
            await asyncio.sleep(0.2 * attempts)

    async def session(self) -> bool:
        """One connection, until it ends; whether it got ready."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.got_ready = False
        self.flags = {"hydrated": False, "live": False, "loaded": False}
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write((
                f"GET /_event/?EIO=4&transport=websocket&token={self.token} HTTP/1.1\r\n"
                f"Host: {self.host}:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {self.subprotocol}\r\nOrigin: {self.origin}\r\n"
                "User-Agent: fictures-soak\r\n\r\n").encode())
            status = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                raise ConnectionError(f"upgrade refused: {status.decode(errors='replace')}")
            self.connects += 1
            while True:
                opcode, payload = await _read_frame(reader)
                if opcode == 0x9:
                    writer.write(_mask(0xA, payload))
                elif opcode == 0x8 or (opcode in (0x0, 0x1) and not self.on_text(payload, writer)):
                    return self.got_ready
        finally:
            writer.close()

    def on_text(self, payload: bytes, writer: asyncio.StreamWriter) -> bool:
        """Handle one Engine.IO packet; False when the server ends the session."""
        if payload == b"2":
            writer.write(_mask(0x1, b"3"))
        elif payload.startswith(b"0{"):
            writer.write(_mask(0x1, self.connect_packet.encode()))
        elif payload.startswith(b"42/_event,"):
            if self.got_ready:
                # A load's list (a reconnect's catch-up) is not a broadcast.
                self.arrived(payload, live=b'"stories_rx_state_"' not in payload)
                if b'"live_ok_rx_state_":false' in payload:
                    self.state("stale")
                elif b'"live_ok_rx_state_":true' in payload:
                    self.state("live")
                return True
            self.arrived(payload, live=False)
            self.flags["hydrated"] |= b'"is_hydrated_rx_state_":true' in payload
            self.flags["live"] |= b'"live_ok_rx_state_":true' in payload
            self.flags["loaded"] |= b'"loading_rx_state_":false' in payload
            if all(self.flags.values()):
                self.got_ready = True
                self.state("live")
                if not self.ready.done():
                    self.ready.set_result(True)
        elif payload.startswith((b"41", b"44")):
            return False
        return True


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return b0 & 0x0F, await reader.readexactly(n)


# -- SSE streams ------------------------------------------------------------------


class Stream(Reader):
    kind = "streams"
    url = ""
    default_retry_ms = 3000

    def __init__(self, shared: Shared, marker_re: re.Pattern[bytes]) -> None:
        super().__init__(shared, marker_re)
        self.last_id: str | None = None
        self.retry_ms = self.default_retry_ms
        self.resets = 0
        self.ready = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        import httpx
        from httpx_sse import aconnect_sse

        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
            while not self.stopped:
                self.state("connecting")
                headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
                try:
                    async with aconnect_sse(client, "GET", self.url, headers=headers) as source:
                        if source.response.status_code != 200:
                            raise ConnectionError(f"HTTP {source.response.status_code}")
                        self.connects += 1
                        async for event in source.aiter_sse():
                            self.on_event(event)
                except (httpx.HTTPError, ConnectionError, OSError) as exc:
                    self.errors[re.sub(r"\d+", "N", f"{type(exc).__name__}: {exc}")[:100]] += 1
                self.state("down")
                if not self.stopped:
                    await asyncio.sleep(self.retry_ms / 1000)

    def on_event(self, event: Any) -> None:
        if event.retry is not None:
            self.retry_ms = event.retry
        if event.event == "connected":
            self.state("live")
            if not self.ready.done():
                self.ready.set_result(True)
            return
        if event.event == "reset":
            self.resets += 1
            return
        if event.id:
            self.last_id = event.id
        if event.data:
            self.arrived(event.data.encode(), live=True)


# -- the control loop ---------------------------------------------------------------


class Fleet:
    def __init__(self, host: str, port: int, prefix: str) -> None:
        self.host, self.port = host, port
        self.marker_re = re.compile(re.escape(prefix).encode() + rb"(\d+)-(\d+)")
        self.shared = Shared(now_ms())
        self.readers: dict[str, list[Reader]] = {"tabs": [], "streams": []}
        Tab.host, Tab.port = host, port
        Stream.url = f"http://{host}:{port}/api/community/events"

    async def open(self, kind: str, n: int, concurrency: int, timeout: float) -> dict:
        make = Tab if kind == "tabs" else Stream
        started = time.monotonic()
        ready = 0
        for first in range(0, n, concurrency):
            batch = [make(self.shared, self.marker_re) for _ in range(first, min(n, first + concurrency))]
            for reader in batch:
                reader.task = asyncio.ensure_future(reader.run())
            self.readers[kind].extend(batch)
            done, _ = await asyncio.wait([r.ready for r in batch], timeout=timeout)  # type: ignore[attr-defined]
            ready += len(done)
        return {"ready": ready, "asked": n, "seconds": time.monotonic() - started}

    def status(self) -> dict:
        return {kind: Counter(r.current for r in readers) for kind, readers in self.readers.items()}

    def report(self, published: list[list[float]], failed: list[int], end_ms: float,
               faults: list[list[Any]]) -> dict:
        """Losses, duplicates, latency per window, and recovery after each fault."""
        out: dict[str, Any] = {"t0_ms": self.shared.t0_ms, "kinds": {}}
        published_at = {int(k): ms for k, ms in published}
        failed_set = set(failed)
        for kind, readers in self.readers.items():
            lost = lost_live = dups = resets = extra = 0
            lost_by_window: Counter[int] = Counter()
            readers_losing = 0
            for r in readers:
                live_spans = _spans(r.timeline, end_ms)
                first_live = next((t for t, s in r.timeline if s == "live"), None)
                before = lost
                for k, ms in published_at.items():
                    if first_live is None or ms < first_live or ms > end_ms - LIVE_GRACE_MS:
                        continue
                    if not r.seen.has(k):
                        lost += 1
                        lost_by_window[int((ms - self.shared.t0_ms) // WINDOW_MS)] += 1
                        if any(a <= ms and ms + LIVE_GRACE_MS <= b for a, b in live_spans):
                            lost_live += 1
                readers_losing += lost > before
                extra += sum(1 for k in failed_set if r.seen.has(k))
                dups += r.duplicates
                resets += getattr(r, "resets", 0)
            errors: Counter[str] = Counter()
            for r in readers:
                errors.update(r.errors)
            windows = {}
            for (k, window), hist in sorted(self.shared.latency.items()):
                if k == kind:
                    windows[window] = {"deliveries": sum(hist.values()), "p50": _pct(hist, 50),
                                       "p99": _pct(hist, 99), "max": max(hist),
                                       "lost": lost_by_window.get(window, 0)}
            out["kinds"][kind] = {
                "readers": len(readers), "lost": lost, "lost_while_live": lost_live,
                "readers_losing": readers_losing,
                "duplicates": dups, "resets": resets, "delivered_unconfirmed": extra,
                "connects": sum(r.connects for r in readers), "errors": dict(errors.most_common(6)),
                "windows": windows,
                "recovery": [_recovery(readers, name, at, published_at) for name, at in faults],
            }
        return out

    async def handle(self, cmd: dict) -> Any:  # noqa: PLR0911 (one branch per command)
        op = cmd["cmd"]
        if op == "configure":
            Tab.connect_packet, Tab.subprotocol, Tab.origin = cmd["connect_packet"], cmd["subprotocol"], cmd["origin"]
            self.shared.t0_ms = cmd["t0_ms"]
            return {"ok": True}
        if op == "open":
            return await self.open(cmd["kind"], cmd["n"], cmd.get("concurrency", 50), cmd.get("timeout", 60))
        if op == "status":
            return self.status()
        if op == "start":  # publishing begins: latency windows count from here
            self.shared.t0_ms = cmd["t0_ms"]
            return {"ok": True}
        if op == "delivered":
            return {kind: sum(r.delivered for r in readers) for kind, readers in self.readers.items()}
        if op == "report":
            return self.report(cmd["published"], cmd["failed"], cmd["end_ms"], cmd["faults"])
        if op == "quit":
            for readers in self.readers.values():
                for r in readers:
                    r.stopped = True
                    if r.task is not None:
                        r.task.cancel()
            return {"ok": True}
        raise ValueError(f"unknown command {op!r}")


def _spans(timeline: list[tuple[float, str]], end_ms: float) -> list[tuple[float, float]]:
    """[start, end) of each stretch in the "live" state."""
    spans, start = [], None
    for t, s in timeline:
        if s == "live" and start is None:
            start = t
        elif s != "live" and start is not None:
            spans.append((start, t))
            start = None
    if start is not None:
        spans.append((start, end_ms + LIVE_GRACE_MS))
    return spans


def _recovery(readers: list[Reader], name: str, at: float, published_at: dict[int, float]) -> dict:
    """After a fault at `at`: readers that left "live" within 30 s of it, how long
    until they were live again; and for every reader, how long until it got the
    first event published after the fault (deliveries resumed)."""
    back, never, resumed = [], 0, []
    after = sorted((ms, k) for k, ms in published_at.items() if ms >= at)
    for r in readers:
        left = next((t for t, s in r.timeline if at <= t <= at + 30_000 and s != "live"), None)
        if left is not None:
            again = next((t for t, s in r.timeline if t > left and s == "live"), None)
            if again is None:
                never += 1
            else:
                back.append((again - at) / 1000)
        first = next((ms for ms, k in after if r.seen.has(k)), None)
        if first is not None:
            resumed.append((first - at) / 1000)
    return {"fault": name, "affected": len(back) + never, "never_back": never,
            "back_p50_s": _pct_list(back, 50), "back_p99_s": _pct_list(back, 99),
            "back_max_s": max(back) if back else None,
            "first_event_after_p50_s": _pct_list(resumed, 50), "first_event_after_max_s": max(resumed) if resumed else None}


def _pct(hist: Counter[int], p: float) -> float:
    total = sum(hist.values())
    rank, seen = total * p / 100, 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return value
    return max(hist) if hist else 0


def _pct_list(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def main() -> None:
    host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    fleet = Fleet(host, port, prefix)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            result = {"ok": True, "result": await fleet.handle(cmd)}
        except Exception as exc:  # noqa: BLE001 - reported to the driver
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(result).encode() + b"\n")
        out.flush()
        if cmd["cmd"] == "quit":
            break


if __name__ == "__main__":
    asyncio.run(main())
