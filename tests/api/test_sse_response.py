"""The SSE response's own endings (fictures.api.sse_response): a client that
accepts nothing, a client that leaves, a HEAD. Each awaits `on_end` exactly once
(the event stream frees its per-address slot there) and ends the request
normally. The ASGI server here is the test: `send` and `receive` are the two
callables a server hands an app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from fictures.api.sse_response import EventStreamResponse


async def _endless(sent: list[bytes]) -> AsyncIterator[bytes]:
    n = 0
    while True:
        n += 1
        chunk = f"data: {n}\r\n\r\n".encode()
        sent.append(chunk)
        yield chunk
        await asyncio.sleep(0.01)


def _recorder(ended: list[str]):
    async def on_end() -> None:
        await asyncio.sleep(0)  # a real await, as the Redis release makes
        ended.append("ended")

    return on_end


async def test_a_client_that_accepts_nothing_is_dropped_and_on_end_runs_once(caplog):
    ended: list[str] = []
    yielded: list[bytes] = []
    response = EventStreamResponse(_endless(yielded), send_timeout=0.3, on_end=_recorder(ended))
    written: list[bytes] = []
    stuck = asyncio.Event()  # never set: the client stopped reading

    async def send(message):
        if message["type"] == "http.response.body":
            written.append(message["body"])
            if len(written) == 2:
                await stuck.wait()  # the second write never finishes

    async def receive():
        await asyncio.Event().wait()  # the connection stays up

    caplog.set_level(logging.INFO, logger="fictures.api.sse_response")
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(response({"type": "http", "method": "GET"}, receive, send), 5)
    took = loop.time() - t0
    assert ended == ["ended"]
    assert len(written) == 2, written  # nothing more was written after the stuck one
    assert 0.3 <= took < 4.0, took  # dropped once a write was pending for send_timeout
    assert "stalled for 0.3s" in caplog.text


async def test_a_client_that_leaves_ends_the_stream_and_on_end_runs_once():
    ended: list[str] = []
    yielded: list[bytes] = []
    response = EventStreamResponse(_endless(yielded), send_timeout=30, on_end=_recorder(ended))
    written: list[bytes] = []
    gone = asyncio.Event()

    async def send(message):
        if message["type"] == "http.response.body":
            written.append(message["body"])
            if len(written) == 3:
                gone.set()

    async def receive():
        await gone.wait()
        return {"type": "http.disconnect"}

    await asyncio.wait_for(response({"type": "http", "method": "GET"}, receive, send), 5)
    assert ended == ["ended"]
    assert 3 <= len(written) <= 4, written  # stopped at the next chunk at most
    assert all(message != b"" for message in written)  # no closing body to a gone client


async def test_head_gets_headers_only_and_on_end_runs_once():
    ended: list[str] = []
    yielded: list[bytes] = []
    response = EventStreamResponse(_endless(yielded), send_timeout=30, on_end=_recorder(ended))
    messages: list[dict] = []

    async def send(message):
        messages.append(message)

    async def receive():
        await asyncio.Event().wait()

    await asyncio.wait_for(response({"type": "http", "method": "HEAD"}, receive, send), 5)
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert messages[1]["body"] == b"" and not messages[1]["more_body"]
    assert (b"content-type", b"text/event-stream; charset=utf-8") in messages[0]["headers"]
    assert yielded == [] and ended == ["ended"]
