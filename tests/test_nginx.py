"""deploy/nginx.conf as an instance sees it, through each of its locations.

nginx drops every inherited `proxy_set_header` in a block that sets one of its
own, so a location that adds Upgrade/Connection silently loses Host and the
forwarded headers unless it repeats them. Stand-in instances (plain asyncio
servers: no app needed) record the request heads nginx sends them, for a page,
a POST, the websocket and the event stream; the client sends none of these
headers itself, so each one the instance sees was set by nginx.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.cluster import NGINX, Nginx, free_port

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason=f"{NGINX} is not installed")

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 5.0
TAB_TOKEN = "0b1e5c8e-tab-token-never-logged"


@dataclass
class Seen:
    upstream: str
    method: str
    target: str
    headers: dict[str, str]


@dataclass
class StandIn:
    """An instance stand-in: records each request head and answers by location."""

    name: str
    seen: list[Seen] = field(default_factory=list)
    # The event stream sends one event, then holds the response open until set.
    release: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    port: int = 0
    # Pages and POSTs are answered with this status (503: an instance draining).
    status: int = 200

    async def start(self) -> StandIn:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # nginx keeps upstream connections alive: several requests each
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *lines = head.split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers: dict[str, str] = {}
                for line in filter(None, lines):
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                self.seen.append(Seen(self.name, method, target, headers))
                body = json.dumps({"upstream": self.name, "headers": headers}).encode()
                if target.startswith("/_event/"):
                    await self._websocket(headers, body, reader, writer)
                    return
                if target.startswith("/api/community/events"):
                    await self._event_stream(body, writer)
                    return
                if length := int(headers.get("content-length", "0")):
                    await reader.readexactly(length)
                writer.write(b"HTTP/1.1 %d Whatever\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (self.status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _websocket(self, headers: dict[str, str], body: bytes,
                         reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + _WS_GUID).digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        # One unmasked text frame (server to client) carrying what was seen.
        length = len(body)
        prefix = bytes([0x81, length]) if length < 126 else bytes([0x81, 126]) + length.to_bytes(2, "big")
        writer.write(prefix + body)
        await writer.drain()
        await reader.read(1)  # the client's close frame: answer it, and close
        writer.write(b"\x88\x00")
        await writer.drain()

    async def _event_stream(self, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n")
        writer.write(b"data: " + body + b"\n\n")
        await writer.drain()
        await self.release.wait()
        writer.write(b"data: done\n\n")
        await writer.drain()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


@contextlib.contextmanager
def _nginx(upstreams: list[str]) -> Iterator[Nginx]:
    proxy = Nginx(port=free_port(), upstreams=upstreams)
    try:
        yield proxy.start()
    finally:
        proxy.close()


@pytest.fixture
async def stand_ins() -> AsyncIterator[tuple[StandIn, StandIn]]:
    a, b = await StandIn("a").start(), await StandIn("b").start()
    yield a, b
    for s in (a, b):
        s.release.set()
        await s.close()


async def _websocket(url: str) -> dict:
    async with connect(url.replace("http://", "ws://") + f"/_event/?token={TAB_TOKEN}&EIO=4&transport=websocket",
                       open_timeout=TIMEOUT) as ws:
        return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def _event_stream(client: httpx.AsyncClient, url: str, stand_ins: tuple[StandIn, ...]) -> dict:
    async with client.stream("GET", f"{url}/api/community/events") as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        try:
            # The stand-in holds the response open after its first event: it only
            # arrives now if nginx passes the stream on unbuffered.
            first = await asyncio.wait_for(anext(lines), TIMEOUT)
        except TimeoutError:
            raise AssertionError("the first event did not come through: nginx buffered the stream") from None
        for s in stand_ins:
            s.release.set()
        assert first.startswith("data: ")
        return json.loads(first.removeprefix("data: "))


async def _logged_request_ids(proxy: Nginx, count: int) -> list[str]:
    """Request ids of the access log (a line is written when its request ends)."""
    for _ in range(100):
        ids = re.findall(r"rid=([0-9a-f]{32})", proxy.access_log())
        if len(ids) >= count:
            return ids
        await asyncio.sleep(0.05)
    raise AssertionError(f"nginx logged fewer than {count} requests:\n{proxy.access_log()}")


async def test_every_location_forwards_host_client_address_and_request_id(stand_ins):
    with _nginx([s.address for s in stand_ins]) as proxy:
        host = f"127.0.0.1:{proxy.port}"
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            page = (await client.get(f"{proxy.url}/community")).json()
            post = (await client.post(f"{proxy.url}/api/stories", json={"title": "x"})).json()
            stream = await _event_stream(client, proxy.url, stand_ins)
        socket_ = await _websocket(proxy.url)

        seen = {"page": page, "POST": post, "event stream": stream, "websocket": socket_}
        for where, answer in seen.items():
            headers = answer["headers"]
            # Without the location's own proxy_set_header lines nginx sends
            # `Host: fictures` (the upstream's name) and none of the others.
            assert headers.get("host") == host, (where, headers)
            assert headers.get("x-forwarded-for") == "127.0.0.1", (where, headers)
            assert headers.get("x-forwarded-proto") == "http", (where, headers)
            assert re.fullmatch(r"[0-9a-f]{32}", headers.get("x-request-id", "")), (where, headers)
        # Upgraded only where it should be; elsewhere the upstream connection is
        # kept alive (no `Connection: close` from nginx).
        assert socket_["headers"].get("upgrade") == "websocket"
        assert socket_["headers"].get("connection", "").lower() == "upgrade"
        for where in ("page", "POST", "event stream"):
            assert "upgrade" not in seen[where]["headers"]
            assert "connection" not in seen[where]["headers"], (where, seen[where]["headers"])
        # The id the instance got is the one nginx logged: one id across both logs.
        logged = await _logged_request_ids(proxy, len(seen))
        assert {a["headers"]["x-request-id"] for a in seen.values()} == set(logged)
        # A tab's websocket URL carries its client token: the log has the path only.
        assert "/_event/" in proxy.access_log() and TAB_TOKEN not in proxy.access_log()
        # Both upstream lines are in use.
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            served = {(await client.get(f"{proxy.url}/community")).json()["upstream"] for _ in range(4)}
        assert served == {"a", "b"}


async def test_a_dead_instance_is_skipped_for_every_location(stand_ins):
    """Passive failover: a refused connect is retried on the other instance, for
    a page, a POST (it never reached the dead one), the stream and the websocket."""
    live, _ = stand_ins
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    with _nginx([dead, live.address]) as proxy:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            for _ in range(3):
                r = await client.get(f"{proxy.url}/community")
                assert r.status_code == 200 and r.json()["upstream"] == "a"
            r = await client.post(f"{proxy.url}/api/stories", json={"title": "x"})
            assert r.status_code == 200 and r.json()["upstream"] == "a"
            assert (await _event_stream(client, proxy.url, (live,)))["upstream"] == "a"
        assert (await _websocket(proxy.url))["upstream"] == "a"
        await _logged_request_ids(proxy, 6)
        # The first request tried the dead instance, then the live one.
        assert f"upstream={dead}, {live.address}" in proxy.access_log()


async def test_an_instance_answering_503_is_skipped_but_a_post_is_not_sent_twice(stand_ins):
    """A draining instance's 503 sends a GET on to the other instance; a POST
    that reached an instance is never replayed on another (it may have been
    applied: a story published twice)."""
    draining, live = stand_ins
    draining.status = 503
    with _nginx([draining.address, live.address]) as proxy:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            # A fresh nginx sends its first request to the first server.
            r = await client.post(f"{proxy.url}/api/stories", json={"title": "x"})
            assert r.status_code == 503
            assert [s.method for s in draining.seen] == ["POST"] and live.seen == []
            for _ in range(3):
                r = await client.get(f"{proxy.url}/community")
                assert r.status_code == 200 and r.json()["upstream"] == "b"
