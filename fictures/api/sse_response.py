"""The Server-Sent Events response: one task writes the stream, one notices the client leave.

It replaced sse-starlette's `EventSourceResponse`, which runs four tasks per
stream (the body, a ping timer, a shutdown watcher, a disconnect listener)
under an anyio task group and wraps every write in a cancel scope for its send
timeout. At thousands of streams that was most of the cost of a delivery and
of an idle stream's memory (benchmarks/RESULTS.md, "issue10" sections). Here:

- **the body** is an async iterator of chunks (bytes, or sse-starlette's
  `ServerSentEvent`, still used to encode frames); the request's own task
  writes them in order;
- **keep-alive pings** come from the body itself: it waits for its next event
  with an idle time (`Subscription.wait(idle)`) and yields `PING` when that
  passes, so a busy stream sends no pings at all;
- **a client that stopped reading** (one write pending for `send_timeout`
  seconds) is found by the loop's sweep (fictures.deadline), which looks at
  every open stream every `send_timeout / 2` seconds, instead of a cancel scope
  per write or a timer per stream;
- **the client leaving**: a second task waits for `http.disconnect` and calls
  `on_client_gone` (the stream closes its subscription, so the body stops
  waiting and ends); the writer stops at its next chunk (some servers' `send`
  to a closed connection returns quietly, without an error). A callback on
  Granian's `receive()` future instead of the task kept ~0.8 KiB less per open
  stream; with it, one CI run saw a worker panic in Granian's runtime thread as
  the instance stopped ("Cannot drop pointer into Python heap without the thread
  being attached"), before it flushed its outbox. Granian has reports of that
  panic at shutdown with websockets, so the callback may not have caused it, but
  it was reverted while that is unknown;
- **the server stopping** is the body's business (fictures.api.sse ends each
  stream with a `retry:` hint); `cancel` ends what is left after a grace period;
- **writes from outside the task** (`write_now`): while the body waits for its
  next event, the fan-out writes a public stream's events itself
  (fictures.api.sse `_Direct`), on Granian's own `send` only: no task is woken
  for them. Granian answers a chunk it cannot queue yet with a pending future;
  the response then writes nothing more until its task has waited for it (the
  body yields `DRAIN` to have it waited for), so chunks stay in order, and the
  wait counts as a pending write for the stall check;
- **HEAD** gets the headers and no body, like any GET route's HEAD;
- **`on_end`** is awaited once the response is over, however it ended (the
  stream frees its per-address slot there); it is this response's own step, not
  a subclass wrapping `__call__`, so an open stream keeps one coroutine less.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from sse_starlette import ServerSentEvent
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from fictures.deadline import sweep
from fictures.reflex_compat import is_granian_send, written_at_once

logger = logging.getLogger(__name__)

# A comment line: keeps proxies and clients from timing the connection out.
PING = b": ping\r\n\r\n"
# A chunk of nothing: the body's way to have a write made by `write_now` that
# the server could not take at once waited for (nothing is written for it).
DRAIN = b""


# The encoded headers, per distinct `headers` argument: every stream's response
# shares their tuples instead of encoding its own.
_HEADERS: dict[tuple[tuple[str, str], ...], tuple[tuple[bytes, bytes], ...]] = {}


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        body: AsyncIterator[bytes | ServerSentEvent],
        *,
        send_timeout: float,
        on_client_gone: Callable[[], None] | None = None,
        on_end: Callable[[], Awaitable[None]] | None = None,
        headers: Mapping[str, str] | None = None,
        status_code: int = 200,
    ) -> None:
        self.body_iterator = body
        self.on_client_gone = on_client_gone
        self.on_end = on_end
        self.status_code = status_code
        self.background = None
        self.send_timeout = send_timeout
        key = tuple((headers or {}).items())
        if (shared := _HEADERS.get(key)) is None:
            self.init_headers({
                "Cache-Control": "no-store", **(headers or {}),
                "Connection": "keep-alive", "X-Accel-Buffering": "no",
            })
            shared = tuple(self.raw_headers)
            if len(_HEADERS) < 64:
                _HEADERS[key] = shared
        self.raw_headers = list(shared)
        self._writer: asyncio.Task | None = None
        self._pending_since: float | None = None  # a write not finished yet began then
        self._ended_by: str | None = None  # "client" | "stall" | "cancel": why the stream ends early
        self._send: Send | None = None  # the server's own send, for `write_now` (Granian's only)
        self.blocked: Awaitable[None] | None = None  # a `write_now` the server asked to wait for

    def writable(self) -> bool:
        """Whether `write_now` can write now."""
        return (self._send is not None and self._pending_since is None
                and self.blocked is None and self._ended_by is None)

    def write_now(self, chunk: bytes) -> bool:
        """Write `chunk` at once, from outside the writer's task (the fan-out, while
        the body waits for its next event): no task woken. False, and nothing
        written, when it cannot be: a server other than Granian, a write still
        pending or waited for, the stream ending. A write the server took but
        wants waited for sets `blocked` (the body then yields `DRAIN`) and counts
        as pending for the stall check."""
        if not self.writable():
            return False
        send = self._send
        try:
            sent = send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception:  # noqa: BLE001  (the connection is gone: the writer's own next write finds out)
            self._send = None
            return False
        if not written_at_once(sent):
            self.blocked = sent
            self._pending_since = asyncio.get_running_loop().time()
        return True

    def cancel(self) -> None:
        """End the stream now (the server stops and its grace period is over)."""
        self._end("cancel")

    def _end(self, why: str) -> None:
        if self._writer is None or self._writer.done() or self._ended_by is not None:
            return
        self._ended_by = why
        if why == "client" and self.on_client_gone is not None:
            # Wake the body where it waits (its subscription closes): it ends,
            # and the writer stops at its next chunk. No cancel: one that lands
            # while the writer is between awaits would be delivered later, in
            # its cleanup.
            self.on_client_gone()
        else:
            self._writer.cancel()  # stuck in a write, or the server is stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The start message and the headers are not kept while the stream is open.
        start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        self.raw_headers = []
        if scope.get("method", "GET").upper() == "HEAD":
            await self._head(send, start)
            return
        loop = asyncio.get_running_loop()
        self._writer = asyncio.current_task()
        listener = asyncio.create_task(self._wait_for_disconnect(receive))
        watchdog = sweep(self.send_timeout / 2)
        watchdog.add(self)
        try:
            await send(start)
            start = None
            if is_granian_send(send):
                self._send = send
            async for chunk in self.body_iterator:
                if self._ended_by is not None:
                    break  # the client left (or a cancel was swallowed on its way): stop writing
                if (blocked := self.blocked) is not None:
                    await blocked  # a `write_now` first (`_pending_since` is its start)
                    self.blocked = blocked = self._pending_since = None
                if not chunk:
                    continue  # DRAIN
                self._pending_since = loop.time()
                await send({
                    "type": "http.response.body",
                    "body": chunk.encode() if isinstance(chunk, ServerSentEvent) else chunk,
                    "more_body": True,
                })
                self._pending_since = None
                del chunk  # not kept while the stream waits (the first is the `connected` event)
            if self._ended_by is None:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if self._ended_by is None:
                raise  # not ours: the server is cancelling the request
        finally:
            if self._ended_by in ("stall", "cancel") and self._writer.cancelling():
                self._writer.uncancel()  # ours, delivered and handled: the request ends normally
            watchdog.discard(self)
            listener.cancel()
            with contextlib.suppress(Exception):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
            await self._ended()
        if self._ended_by == "stall":
            # The client accepted nothing for `send_timeout` seconds: it is gone.
            # The request ends normally.
            logger.info("SSE client stalled for %ss; stream closed", self.send_timeout)

    async def _head(self, send: Send, start: Message) -> None:
        try:
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self._ended()

    async def _wait_for_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._end("client")

    async def _ended(self) -> None:
        """However the response ended: the client gone, stalled, the server stopping."""
        if self.on_end is not None:
            await self.on_end()

    def swept(self, now: float) -> None:
        """The watchdog's look (every `send_timeout / 2` seconds): a write pending
        for `send_timeout` seconds means the client stopped reading."""
        since = self._pending_since
        if since is not None and now - since >= self.send_timeout:
            self._end("stall")
