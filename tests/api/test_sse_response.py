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
from tests.conftest import wait_until


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


class PyEmptyAwaitable:
    """What Granian's `send` answers when it took the chunk and has room for more."""

    def __await__(self):
        return iter(())


class _GranianSend:
    """Plays Granian's `send`: a plain call answering with an awaitable; while
    `full`, a pending future (its queue for the connection is full)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.full = False
        self.waits: list[asyncio.Future] = []

    def __call__(self, message):
        if message["type"] == "http.response.body":
            self.bodies.append(message["body"])
        if self.full:
            self.waits.append(asyncio.get_running_loop().create_future())
            return self.waits[-1]
        return PyEmptyAwaitable()


async def _open_stream(monkeypatch, send: _GranianSend, ended: list[str], story_id: int | None = None):
    """A public stream (fictures.api.sse) served to `send`, waiting for its first event."""
    from fictures.api import sse, sse_response

    monkeypatch.setattr(sse_response, "is_granian_send", lambda send: True)

    async def receive():
        await asyncio.Event().wait()  # the client stays

    stopping = sse._Stopping()
    flt = sse.StreamFilter(channels=sse._PUBLIC_CHANNELS, story_id=story_id, user_id=None)
    stopping.response = EventStreamResponse(
        sse._stream(flt, None, "192.0.2.1", stopping), send_timeout=0.6,
        on_client_gone=stopping.client_gone, on_end=_recorder(ended),
    )
    serving = asyncio.create_task(stopping.response({"type": "http", "method": "GET"}, receive, send))
    # until it said `connected` and waits for its next event
    await wait_until(lambda: stopping._sub is not None and stopping._sub._waiter is not None, timeout=5)
    assert send.bodies and b"event: connected" in send.bodies[0]
    return stopping, serving


async def test_a_waiting_stream_is_written_by_the_fan_out_itself_in_order_and_waits_when_the_server_is_full(
    monkeypatch,
):
    """The direct writes (fictures.api.sse `_Direct`): while a public stream waits,
    the fan-out writes each event's frame during `dispatch` itself, no task woken.
    When the server's queue for the connection is full (its pending future), the
    next events queue and the stream's task writes them once that write is done,
    in order; a client that then reads nothing is dropped as stalled."""
    from fictures.api import sse
    from fictures.events import service
    from fictures.events.schema import StoryDeleted

    send, ended = _GranianSend(), []
    stopping, serving = await _open_stream(monkeypatch, send, ended)
    fanout = service.fanout()
    next_id = fanout.last_id + 1

    def publish() -> bytes:
        nonlocal next_id
        event = StoryDeleted(id=next_id, story_id=next_id)
        next_id += 1
        fanout.dispatch(event)
        return sse._frame(event)

    first = publish()
    assert send.bodies[-1] == first  # written during dispatch: the stream's task was not needed
    send.full = True
    second = publish()
    assert send.bodies[-1] == second and stopping.response.blocked is send.waits[0]  # taken; wait before more
    third, fourth = publish(), publish()
    assert send.bodies[-1] == second  # not written past the pending one: queued
    await asyncio.sleep(0.05)
    assert send.bodies[-1] == second  # the task waits for the server too
    send.full = False
    send.waits[0].set_result(None)
    await wait_until(lambda: send.bodies[-1].endswith(fourth), timeout=5)
    assert send.bodies[1:] == [first, second, third + fourth]  # in order; the queued two in one chunk
    assert stopping.response.blocked is None
    fifth = publish()
    assert send.bodies[-1] == fifth  # waiting again: written directly again
    # The server stays full and the client reads nothing: the stall check drops it.
    send.full = True
    publish()
    await asyncio.wait_for(serving, 5)
    assert ended == ["ended"] and stopping._sub.closed


def _publisher():
    """Dispatch a StoryDeleted event about a story through the process's fan-out;
    returns the frame a public stream gets for it."""
    from fictures.api import sse
    from fictures.events import service
    from fictures.events.schema import StoryDeleted

    fanout = service.fanout()

    def publish(story_id: int) -> bytes:
        event = StoryDeleted(id=fanout.last_id + 1, story_id=story_id)
        fanout.dispatch(event)
        return sse._frame(event)

    return publish


async def test_a_filtered_stream_waits_for_a_direct_write_even_when_the_next_event_is_not_its_own(monkeypatch):
    """A direct write the server asked to wait for is waited for before the stream
    parks again, whatever comes next: an event the stream filters out too (else
    the write stays pending, and the stall check drops a client that reads)."""
    send, ended = _GranianSend(), []
    stopping, serving = await _open_stream(monkeypatch, send, ended, story_id=5)
    publish = _publisher()
    response = stopping.response
    send.full = True
    mine = publish(5)
    assert send.bodies[-1] == mine and response.blocked is not None  # written; wait before more
    publish(7)  # someone else's story, queued behind it
    send.full = False
    send.waits[0].set_result(None)
    await wait_until(lambda: response.blocked is None and stopping._sub._waiter is not None, timeout=5)
    assert response.blocked is None and response._pending_since is None  # waited for, not stalled
    again = publish(5)
    assert send.bodies[-1] == again  # written directly again
    stopping.client_gone()
    await asyncio.wait_for(serving, 5)


async def test_a_filtered_stream_still_pings_while_only_others_events_pass(monkeypatch):
    """Events a stream filters out write nothing: its keep-alive ping stays due."""
    from fictures.api.sse_response import PING
    from fictures.settings import settings

    monkeypatch.setattr(settings, "sse_ping_seconds", 0.2)
    send, ended = _GranianSend(), []
    stopping, serving = await _open_stream(monkeypatch, send, ended, story_id=5)
    publish = _publisher()
    for _ in range(16):  # 0.8 s of other stories' events, one every 0.05 s
        publish(7)
        await asyncio.sleep(0.05)
    assert PING in send.bodies, send.bodies
    stopping.client_gone()
    await asyncio.wait_for(serving, 5)
