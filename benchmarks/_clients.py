"""Simulated readers for benchmarks/fanout.py, run in their own process.

Two kinds, both on raw asyncio protocols so that one process holds thousands
and the bytes counted are the bytes that came off the socket:

- tabs: Reflex websocket clients doing what a browser on /community does
  (Engine.IO open, Socket.IO connect to /_event carrying the hydrate event,
  ping/pong), ready once the page's on_load deltas arrived;
- streams: SSE clients on /api/community/events, ready on `event: connected`.

Each client notes, per benchmark event (a story whose title holds the run's
marker), when the first frame carrying it arrived and every byte received from
then until the next event (keep-alive pings are counted apart). "Arrived" is
the kernel's receive time of the data that carried the frame (SO_TIMESTAMPNS on
each socket, read with `recvmsg`; CLOCK_REALTIME, the clock the measuring
process uses too): when the frame reached this machine, as a reader on its own
machine would see it. This one process reads thousands of sockets in turn, at
about 30 µs of CPU each for a tab, so the time it gets to a frame (also noted,
as `reads`) adds its own queue: 1,000 tabs' frames of one event take it about
30 ms to read, whatever the server does.

Driven by JSON lines on stdin, one answer per command on stdout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import resource
import socket
import struct
import sys
import time
import uuid
from collections import Counter
from typing import Any

# Linux's SO_TIMESTAMPNS (= SCM_TIMESTAMPNS); Python's socket module may not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("qq")
ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)
READ_SIZE = 256 * 1024




def resp(*parts: str) -> bytes:
    """A Redis command in RESP (for the raw subscribers that time PUBLISHes)."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        raw = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def kernel_time_ns(ancillary: list) -> int | None:
    """The kernel's receive time (ns) in a `recvmsg` read's ancillary data from a
    socket with SO_TIMESTAMPNS on, or None if it carries none."""
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = _TIMESPEC.unpack_from(raw)
            return sec * 1_000_000_000 + nsec
    return None


# -- connections --------------------------------------------------------------------


class Connection:
    """A client TCP connection read with `recvmsg`, so each read carries the kernel's
    receive time; a small stand-in for an asyncio transport (`write`, `close`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, client: Client) -> None:
        self.loop, self.sock, self.client = loop, sock, client
        self.fd = sock.fileno()
        self.out = bytearray()
        self.closed = False
        loop.add_reader(self.fd, self._readable)
        client.connection_made(self)

    def _readable(self) -> None:
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(READ_SIZE, ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        self.client.ancillary = ancillary  # decoded only for a frame that carries a marker
        self.client.data_received(data, time.time_ns())

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.out:
            self.out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lost(exc)
            return
        if sent < len(data):
            self.out += data[sent:]
            self.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self.out[:sent]
        if not self.out:
            self.loop.remove_writer(self.fd)

    def close(self) -> None:
        self._lost(None)

    def _lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.fd)
        self.loop.remove_writer(self.fd)
        self.sock.close()
        self.client.connection_lost(exc)


async def connect(host: str, port: int, client: Client) -> Connection:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return Connection(loop, sock, client)


# -- shared bookkeeping -----------------------------------------------------------


class Board:
    """Arrivals per marker for one kind of client, and waiters for "everyone has it"."""

    def __init__(self) -> None:
        self.counts: Counter[int] = Counter()
        self.waiters: dict[int, tuple[int, asyncio.Future]] = {}

    def arrived(self, marker: int) -> None:
        self.counts[marker] += 1
        waiter = self.waiters.get(marker)
        if waiter and self.counts[marker] >= waiter[0] and not waiter[1].done():
            waiter[1].set_result(True)

    async def wait(self, marker: int, expect: int, timeout: float) -> int:
        if self.counts[marker] < expect:
            fut = asyncio.get_running_loop().create_future()
            self.waiters[marker] = (expect, fut)
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                pass
            finally:
                self.waiters.pop(marker, None)
        return self.counts[marker]


class Client:
    """What every simulated reader records."""

    board: Board
    marker_re: re.Pattern[bytes]

    def __init__(self) -> None:
        self.transport: Connection | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closed = False
        self.ancillary: list = []  # of the read being handled: its kernel receive time
        self.unstamped = 0  # arrivals noted at read time: the kernel gave no timestamp
        self.arrivals: dict[int, int] = {}  # marker -> kernel receive time
        self.reads: dict[int, int] = {}  # marker -> when this process read it
        self.event_bytes: dict[int, int] = {}
        self.current: int | None = None
        self.ping_bytes = 0
        self.pings = 0
        self.other_bytes = 0
        self.total_bytes = 0
        self.error: str | None = None

    def connection_made(self, transport: Connection) -> None:
        self.transport = transport

    def kernel_ns(self, read: int) -> int:
        """The kernel's receive time of the data being handled (`read` if it gave
        none, counted in `unstamped` and reported)."""
        stamped = kernel_time_ns(self.ancillary)
        if stamped is None:
            self.unstamped += 1
            return read
        return stamped

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready ({exc})"))

    def fail(self, why: str) -> None:
        self.error = why
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.close()

    def note(self, data: bytes, wire: int, now: int) -> None:
        """Attribute `wire` bytes (a frame or chunk carrying `data`) to an event."""
        if self.ready.done():
            new = None
            for m in self.marker_re.findall(data):
                k = int(m)
                if k not in self.arrivals:
                    self.arrivals[k] = self.kernel_ns(now)
                    self.reads[k] = now
                    self.board.arrived(k)
                    new = k if new is None else max(new, k)
            if new is not None:
                self.current = new
        if self.current is None:
            self.other_bytes += wire
        else:
            self.event_bytes[self.current] = self.event_bytes.get(self.current, 0) + wire

    def reset_records(self) -> None:
        self.arrivals.clear()
        self.reads.clear()
        self.unstamped = 0
        self.event_bytes.clear()
        self.current = None
        self.ping_bytes = self.pings = self.other_bytes = 0


def _split_http_head(buf: bytearray) -> tuple[str, dict[str, str], int] | None:
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers, end + 4


# -- websocket tabs ---------------------------------------------------------------


def _mask_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


class Tab(Client):
    host: str
    port: int
    connect_packet: str  # "40/_event,{...hydrate...}"
    subprotocol: str

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray()
        self.upgraded = False
        self.token = str(uuid.uuid4())
        self.flags = {"hydrated": False, "live": False, "loaded": False}
        self.ping_interval_ms: int | None = None
        self.sent_bytes = 0

    def connection_made(self, transport: Connection) -> None:
        super().connection_made(transport)
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            f"GET /_event/?EIO=4&transport=websocket&token={self.token} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {self.subprotocol}\r\n"
            f"Origin: http://{self.host}:{self.port}\r\n"
            "User-Agent: fictures-bench\r\n\r\n"
        ).encode()
        self.send_raw(req)

    def send_raw(self, data: bytes) -> None:
        self.sent_bytes += len(data)
        assert self.transport is not None
        self.transport.write(data)

    def send_text(self, text: str) -> None:
        self.send_raw(_mask_frame(text))

    def data_received(self, data: bytes, now: int) -> None:
        self.total_bytes += len(data)
        self.buf += data
        if not self.upgraded:
            head = _split_http_head(self.buf)
            if head is None:
                return
            status, _, size = head
            if " 101 " not in status + " ":
                self.fail(f"upgrade refused: {status}")
                return
            self.upgraded = True
            self.other_bytes += size
            del self.buf[:size]
        buf = self.buf
        pos = 0
        while True:
            if len(buf) - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            off = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                off = 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                off = 10
            if len(buf) - pos < off + n:
                break
            payload = bytes(buf[pos + off : pos + off + n])
            self.frame(b0 & 0x0F, payload, off + n, now)
            pos += off + n
        if pos:
            del buf[:pos]

    def frame(self, opcode: int, payload: bytes, wire: int, now: int) -> None:
        if opcode == 0x8:  # close
            self.other_bytes += wire
            self.fail("server closed the websocket")
            return
        if opcode == 0x9:  # websocket ping: pong it
            self.ping_bytes += wire
            assert self.transport is not None
            mask = os.urandom(4)
            self.send_raw(bytes([0x8A, 0x80 | len(payload)]) + mask
                          + bytes(b ^ mask[i & 3] for i, b in enumerate(payload)))
            return
        if opcode not in (0x1, 0x0):
            self.other_bytes += wire
            return
        if payload == b"2":  # Engine.IO ping
            self.ping_bytes += wire
            self.pings += 1
            self.send_text("3")
            return
        if payload.startswith(b"42/_event,"):
            if not self.ready.done():
                self.other_bytes += wire
                self.check_ready(payload)
            else:
                self.note(payload, wire, now)
            return
        self.other_bytes += wire
        if payload.startswith(b"0{"):
            try:
                self.ping_interval_ms = json.loads(payload[1:]).get("pingInterval")
            except ValueError:
                pass
            self.send_text(self.connect_packet)
        elif payload.startswith(b"44/_event"):
            self.fail(f"connect refused: {payload[:200]!r}")
        elif payload.startswith(b"41"):
            self.fail("disconnected by the server")

    def check_ready(self, payload: bytes) -> None:
        if b'"is_hydrated_rx_state_":true' in payload:
            self.flags["hydrated"] = True
        if b'"live_ok_rx_state_":true' in payload:
            self.flags["live"] = True
        if b'"loading_rx_state_":false' in payload:
            self.flags["loaded"] = True
        if all(self.flags.values()):
            self.ready.set_result(True)


# -- SSE streams ------------------------------------------------------------------


class Stream(Client):
    host: str
    port: int

    def __init__(self, last_event_id: int | None = None, count_only: bool = False) -> None:
        super().__init__()
        self.last_event_id = last_event_id
        self.count_only = count_only
        self.buf = bytearray()
        self.head_done = False
        self.chunked = True
        self.sse = bytearray()
        self.events_seen = 0
        self.count_target = 0
        self.count_done: asyncio.Future | None = None
        self.last_ping: bytes = b""
        self.ping_wire = 0

    def connection_made(self, transport: Connection) -> None:
        super().connection_made(transport)
        extra = f"Last-Event-ID: {self.last_event_id}\r\n" if self.last_event_id is not None else ""
        assert self.transport is not None
        self.transport.write(
            (
                f"GET /api/community/events HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{extra}"
                "User-Agent: fictures-bench\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes, now: int) -> None:
        self.total_bytes += len(data)
        self.buf += data
        if not self.head_done:
            head = _split_http_head(self.buf)
            if head is None:
                return
            status, headers, size = head
            if " 200 " not in status + " ":
                self.fail(f"HTTP {status}")
                return
            self.head_done = True
            self.chunked = "chunked" in headers.get("transfer-encoding", "")
            self.other_bytes += size
            del self.buf[:size]
        if not self.chunked:
            body = bytes(self.buf)
            self.buf.clear()
            self.messages(body, len(body), now)
            return
        buf = self.buf
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            try:
                n = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            except ValueError:
                self.fail("bad chunk framing")
                return
            end = eol + 2 + n + 2
            if len(buf) < end:
                break
            self.messages(bytes(buf[eol + 2 : eol + 2 + n]), end - pos, now)
            pos = end
        if pos:
            del buf[:pos]

    def messages(self, body: bytes, wire: int, now: int) -> None:
        """One HTTP chunk (sse-starlette writes one message per chunk)."""
        self.sse += body
        kind = None
        while (end := self.sse.find(b"\r\n\r\n")) >= 0:
            msg = bytes(self.sse[:end])
            del self.sse[: end + 4]
            if msg.startswith(b":"):
                kind = kind or "ping"
                self.last_ping = msg + b"\r\n\r\n"
                self.pings += 1
                continue
            if not self.ready.done():
                if b"event: connected" in msg:
                    self.ready.set_result(True)
                kind = kind or "other"
                continue
            if self.count_only:
                if b"\r\nid: " in msg or msg.startswith(b"id: "):
                    self.events_seen += 1
                    if self.count_done and self.events_seen >= self.count_target and not self.count_done.done():
                        self.count_done.set_result(now)
                kind = "event"
                continue
            kind = "event"
            self.note(msg, 0, now)
        if kind == "ping":
            self.ping_bytes += wire
            self.ping_wire = wire
        elif kind == "event":
            self.note(b"", wire, now)
        else:
            self.other_bytes += wire


# -- the control loop ---------------------------------------------------------------


class Fleet:
    def __init__(self, host: str, port: int, marker_prefix: str) -> None:
        self.host, self.port = host, port
        marker_re = re.compile(re.escape(marker_prefix).encode() + rb"(\d+)")
        self.tab_board, self.stream_board = Board(), Board()
        Tab.board, Stream.board = self.tab_board, self.stream_board
        Tab.marker_re = Stream.marker_re = marker_re
        Tab.host = Stream.host = host
        Tab.port = Stream.port = port
        self.tabs: list[Tab] = []
        self.streams: list[Stream] = []

    async def _open(self, make, timeout: float) -> Client:
        client = make()
        try:
            await asyncio.wait_for(connect(self.host, self.port, client), timeout)
            await asyncio.wait_for(asyncio.shield(client.ready), timeout)
        except BaseException as exc:  # closed, then raised (cancellation included)
            client.error = client.error or f"{type(exc).__name__}: {exc}"[:200]
            if client.transport is not None:
                client.transport.close()
            if not client.ready.done():
                client.ready.cancel()
            raise
        return client

    async def open_many(self, kind: str, n: int, concurrency: int, timeout: float,
                        stall: float) -> dict:
        """Open `n` clients, `concurrency` at a time; give up after `timeout` seconds, or
        once no client has become ready for `stall` seconds while some are pending."""
        sem = asyncio.Semaphore(concurrency)
        make = Tab if kind == "tabs" else Stream
        ok: list[Client] = []
        errors: Counter[str] = Counter()
        t0 = time.monotonic()
        progress = [t0]

        async def one() -> None:
            async with sem:
                try:
                    ok.append(await self._open(make, 60.0))
                    progress[0] = time.monotonic()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    errors[re.sub(r"\d+", "N", f"{type(exc).__name__}: {exc}")[:120]] += 1

        tasks = [asyncio.ensure_future(one()) for _ in range(n)]
        stalled = False
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=0.5, return_when=asyncio.FIRST_EXCEPTION)
            now = time.monotonic()
            if now - t0 > timeout or now - progress[0] > stall:
                stalled = now - t0 <= timeout
                pending = [t for t in tasks if not t.done()]
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                why = (f"given up: no connection became ready for {stall:.0f} s" if stalled
                       else f"given up: connect budget of {timeout:.0f} s spent")
                errors[why] += len(pending)
                break
        (self.tabs if kind == "tabs" else self.streams).extend(ok)  # type: ignore[arg-type]
        extra = {}
        if kind == "tabs" and ok:
            extra["ping_interval_ms"] = ok[0].ping_interval_ms  # type: ignore[attr-defined]
            extra["sent_bytes_per_tab_connect"] = ok[0].sent_bytes  # type: ignore[attr-defined]
            extra["received_bytes_per_tab_connect"] = ok[0].total_bytes
        return {
            "ready": len(ok), "asked": n, "seconds": time.monotonic() - t0,
            "seconds_to_last_ready": progress[0] - t0, "stalled": stalled,
            "errors": dict(errors),
            "token_prefixes": [c.token[:8] for c in ok] if kind == "tabs" else [],  # type: ignore[attr-defined]
            **extra,
        }

    def live(self, kind: str) -> list[Client]:
        clients = self.tabs if kind == "tabs" else self.streams
        return [c for c in clients if not c.closed]

    def collect(self, kind: str) -> dict:
        clients = self.live(kind)
        markers = sorted({k for c in clients for k in c.arrivals})
        return {
            "clients": len(clients),
            "lost": len(self.tabs if kind == "tabs" else self.streams) - len(clients),
            "arrivals": {k: [c.arrivals.get(k) for c in clients] for k in markers},
            "reads": {k: [c.reads.get(k) for c in clients] for k in markers},
            "unstamped": sum(c.unstamped for c in clients),
            "bytes": {k: [c.event_bytes.get(k, 0) for c in clients] for k in markers},
            "ping_bytes": sum(c.ping_bytes for c in clients),
            "pings": sum(c.pings for c in clients),
            "sample_ping": next(
                (c.last_ping.decode(errors="replace") for c in clients if getattr(c, "last_ping", b"")),
                "",
            ),
            "sample_ping_wire": next((c.ping_wire for c in clients if getattr(c, "ping_wire", 0)), 0),
        }

    def close(self, kind: str) -> int:
        clients = self.tabs if kind == "tabs" else self.streams
        for c in clients:
            if c.transport is not None:
                c.transport.close()
        n = len(clients)
        clients.clear()
        board = self.tab_board if kind == "tabs" else self.stream_board
        board.counts.clear()
        return n

    async def replay(self, last_event_id: int, expect: int, timeout: float) -> dict:
        loop = asyncio.get_running_loop()
        client = Stream(last_event_id=last_event_id, count_only=True)
        client.count_target = expect
        client.count_done = loop.create_future()
        t0 = time.time_ns()
        try:
            await asyncio.wait_for(connect(self.host, self.port, client), timeout)
            await asyncio.wait_for(asyncio.shield(client.ready), timeout)
            t_ready = time.time_ns()
            t_done = await asyncio.wait_for(client.count_done, timeout)
        except Exception as exc:  # noqa: BLE001
            return {"error": f"{type(exc).__name__}: {exc}", "received": client.events_seen}
        finally:
            if client.transport is not None:
                client.transport.close()
        return {
            "received": client.events_seen, "bytes": client.total_bytes,
            "seconds": (t_done - t0) / 1e9, "seconds_after_connected": (t_done - t_ready) / 1e9,
        }

    async def handle(self, cmd: dict) -> Any:  # noqa: PLR0911 (one branch per command)
        op = cmd["cmd"]
        if op == "open":
            return await self.open_many(cmd["kind"], cmd["n"], cmd.get("concurrency", 50),
                                        cmd.get("timeout", 120), cmd.get("stall", 15))
        if op == "wait":
            board = self.tab_board if cmd["kind"] == "tabs" else self.stream_board
            return {"count": await board.wait(cmd["marker"], cmd["expect"], cmd["timeout"])}
        if op == "collect":
            return self.collect(cmd["kind"])
        if op == "reset":
            for c in self.live(cmd["kind"]):
                c.reset_records()
            (self.tab_board if cmd["kind"] == "tabs" else self.stream_board).counts.clear()
            return {"ok": True}
        if op == "close":
            return {"closed": self.close(cmd["kind"])}
        if op == "count":
            return {"live": len(self.live(cmd["kind"]))}
        if op == "replay":
            return await self.replay(cmd["last_event_id"], cmd["expect"], cmd.get("timeout", 120))
        if op == "quit":
            return {"ok": True}
        if op == "configure":
            Tab.connect_packet = cmd["connect_packet"]
            Tab.subprotocol = cmd["subprotocol"]
            return {"ok": True}
        raise ValueError(f"unknown command {op!r}")


async def main() -> None:
    host, port, marker_prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    fleet = Fleet(host, port, marker_prefix)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
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
    fleet.close("tabs")
    fleet.close("streams")


if __name__ == "__main__":
    asyncio.run(main())
