"""GET /api/community/events: every community event, exactly once, in order, resumable.

Protocol (Server-Sent Events; the response is fictures.api.sse_response's,
frames are encoded by sse-starlette's `ServerSentEvent`):
- first `event: connected` (data: the newest event id and the channels served);
- then each event as `event: <channel>`, `id: <event id>`, `data: <JSON>`;
- a `: ping` comment after `sse_ping_seconds` (up to a quarter more) without
  anything else;
- when the server stops (fictures.shutdown), a `retry: 1000` line (reconnect in a
  second: through a load balancer, to another instance, resuming with
  Last-Event-ID), then the stream ends cleanly.

Resume: send `Last-Event-ID` (EventSource does) or `?last_event_id=`. The
stream subscribes to this process's fan-out *first*, then replays the Redis
stream after that id, then drains the live queue skipping ids already sent,
so the seam has no gap and no duplicate. An id older than the retained
history gets `event: reset` (refetch, then carry on live). A client too slow
to keep up gets a final `reset` and is disconnected.

Filters: `?channels=a,b` and `?story_id=N` (events about that story only).
Private events (`private:draft`, `private:notification`,
`private:notifications-read`) go only to a stream authenticated with their
owner's bearer token.

Presence (who is reading, fictures.presence) is opt-in: `channels=presence`
adds `event: presence` frames (`{"room", "storyId", "count", "users"}`) each time
a room's count or names change, for every room or, with `story_id`, that story's
only (whose current count comes first, right after `connected`). They come from
the ephemeral lane: no `id:` (they are not replayed, and do not move the
stream's resume point).

Private events have a sequence of their own (public ids show no gap where a
draft changed). A stream that carries them therefore names its place in both:
every event's `id:` is `<public>.<private>`, the last id of each sequence the
stream has passed, and such a `Last-Event-ID` resumes each sequence after its
part: replay, history coverage and `reset` (which then says which
`sequence`) work per sequence. A plain integer on such a stream resumes the
public sequence and takes private events from now on; a dotted id on a public
stream resumes after its public part. Public streams keep plain integer ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from sse_starlette import ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fictures import analytics, client_address, db, metrics, presence, ratelimit
from fictures.api.deps import bearer_token, optional_user
from fictures.api.sse_response import DRAIN, PING, EventStreamResponse
from fictures.events import service
from fictures.events.bus import StoredEvent
from fictures.events.fanout import IDLE, Idle, Subscription
from fictures.events.schema import (
    EVENT_BY_CHANNEL,
    PRIVATE_CHANNELS,
    PUBLIC_CHANNELS,
    CommunityEvent,
    MalformedEvent,
    parse_event,
)
from fictures.settings import settings

logger = logging.getLogger(__name__)

_ID = re.compile(r"[0-9]{1,18}")
# A resume point: a public id, or a public and a private id joined by a dot.
_RESUME_ID = re.compile(r"([0-9]{1,18})(?:\.([0-9]{1,18}))?")
_REPLAY_BATCH = 1000
# The opt-in channel of presence changes (not an event: nothing to resume).
PRESENCE_CHANNEL = presence.KIND
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
# When the server stops: how soon clients should reconnect, and how long a stream
# has to say so before it is cancelled.
RETRY_MS = 1000
STOP_GRACE_SECONDS = 2.0


class _OpenStreams:
    """The open streams of this process (their stop signals)."""

    def __init__(self) -> None:
        self.streams: set[_Stopping] = set()
        self._emptied: asyncio.Event | None = None

    def add(self, stopping: _Stopping) -> None:
        self.streams.add(stopping)

    def discard(self, stopping: _Stopping) -> None:
        self.streams.discard(stopping)
        if not self.streams and self._emptied is not None:
            self._emptied.set()

    async def wait_closed(self, timeout: float) -> None:
        if not self.streams:
            return
        self._emptied = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._emptied.wait()


_open = _OpenStreams()


def open_streams() -> int:
    """Event streams open in this process."""
    return len(_open.streams)


async def wait_streams_closed(timeout: float) -> int:
    """Wait (at most `timeout` seconds) until no stream is open; how many still are."""
    await _open.wait_closed(timeout)
    return open_streams()


def close_all_streams() -> int:
    """Server stopping: every stream of this process sends its retry hint and
    ends; what is left after `STOP_GRACE_SECONDS` is cancelled. Returns how many
    streams were open."""
    streams = list(_open.streams)
    for stopping in streams:
        stopping.set()
    if streams:
        asyncio.get_running_loop().call_later(STOP_GRACE_SECONDS, _cancel_left, streams)
    return len(streams)


def _cancel_left(streams: list[_Stopping]) -> None:
    for stopping in streams:
        if stopping in _open.streams and stopping.response is not None:
            stopping.response.cancel()


class _Stopping:
    """A stream's stop signal: when the server stops, `set` closes the stream's
    fan-out subscription, so the stream leaves its live loop at once, says
    goodbye and ends. Nothing waits on it while the server runs: no task per stream."""

    def __init__(self) -> None:
        self._set = False
        self._sub: Subscription | None = None
        self.response: EventStreamResponse | None = None  # cancelled if still open after the grace period

    def set(self) -> None:
        self._set = True
        self.client_gone()

    def client_gone(self) -> None:
        """End the stream's live loop (its client left, or the server stops)."""
        if self._sub is not None:
            self._sub.close()

    def is_set(self) -> bool:
        return self._set

    def follow(self, sub: Subscription) -> None:
        self._sub = sub
        if self._set:
            sub.close()


def _goodbye() -> ServerSentEvent:
    return ServerSentEvent(comment="server stopping: reconnect", retry=RETRY_MS)


@dataclass(frozen=True)
class StreamFilter:
    channels: frozenset[str]
    story_id: int | None
    user_id: int | None

    def accepts(self, event: CommunityEvent) -> bool:
        if event.channel not in self.channels:
            return False
        if not event.public and getattr(event, "user_id", None) != self.user_id:
            return False
        return self.story_id is None or event.story_id_or_none == self.story_id

    @property
    def private(self) -> bool:
        """Whether the stream carries private events, and so two-part ids."""
        return not self.channels.isdisjoint(PRIVATE_CHANNELS)

    @property
    def presence(self) -> bool:
        return PRESENCE_CHANNEL in self.channels

    @property
    def presence_room(self) -> str | None:
        """The room whose presence the stream follows (None: every room)."""
        return None if self.story_id is None else presence.story_room(self.story_id)


@dataclass(frozen=True)
class ResumePoint:
    """A client's Last-Event-ID: the public id, and the private one if it named one."""

    public: int
    private: int | None = None

    def label(self, flt: StreamFilter) -> int | str:
        if not flt.private:
            return self.public
        return str(self.public) if self.private is None else f"{self.public}.{self.private}"


class Position:
    """The last id of each sequence a stream has passed (sent, or filtered out)."""

    def __init__(self, public: int, private: int):
        # Indexed by "private?": ids[False] public, ids[True] private. A list, not a
        # dict: every open stream keeps one.
        self.ids = [public, private]

    def passes(self, event: CommunityEvent) -> bool:
        """Move past `event`; False if the stream is already past it (replayed)."""
        assert event.id is not None
        private = not event.public
        if event.id <= self.ids[private]:
            return False
        self.ids[private] = event.id
        return True

    def label(self, flt: StreamFilter) -> int | str:
        """What the client is told: the public id, or both on a stream with private events."""
        return f"{self.ids[False]}.{self.ids[True]}" if flt.private else self.ids[False]


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _parse_last_id(request: Request) -> ResumePoint | Response | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return None
    if (match := _RESUME_ID.fullmatch(raw.strip())) is None:
        return _error(
            400,
            f"malformed event id {raw[:40]!r}: expected a non-negative integer "
            "(or, on a stream with private events, two joined by a dot)",
        )
    public, private = match.groups()
    return ResumePoint(int(public), None if private is None else int(private))


def _user_id_for(token: str | None) -> int | None:
    if not token:
        return None
    with db.session() as s:
        user = optional_user(s, token)
        return user.id if user else None


_encoded: OrderedDict[int, bytes] = OrderedDict()


def _frame(event: CommunityEvent, raw: str | None = None, *, position: str | None = None) -> bytes:
    """The event's SSE frame, encoded once per process and written to every public stream.

    With `position` (a stream carrying private events) the frame's id is that
    stream's place in both sequences, its own: that frame is encoded for it alone."""
    assert event.id is not None
    if position is not None:
        return ServerSentEvent(data=raw or event.to_json(), event=event.channel, id=position).encode()
    assert event.public  # only streams with private events ever get one
    if (frame := _encoded.get(event.id)) is None:
        frame = ServerSentEvent(
            data=raw or event.to_json(), event=event.channel, id=str(event.id)
        ).encode()
        _encoded[event.id] = frame
        if len(_encoded) > 4096:
            _encoded.popitem(last=False)
    return frame


def _reset(reason: str, last_id: int | str, sequence: str | None = None) -> ServerSentEvent:
    metrics.RESETS.labels(reason).inc()
    data: dict[str, int | str] = {"reason": reason, "lastEventId": last_id}
    if sequence is not None:
        data["sequence"] = sequence
    return ServerSentEvent(data=json.dumps(data), event="reset")


_PUBLIC_CHANNELS = frozenset(PUBLIC_CHANNELS)
_ALL_CHANNELS = _PUBLIC_CHANNELS | frozenset(PRIVATE_CHANNELS)
# One set object per distinct choice of channels (all known names, so few), shared
# by the streams that asked for it: thousands of open streams keep no copy each.
_channel_sets: dict[frozenset[str], frozenset[str]] = {}


def _channel_set(names: frozenset[str]) -> frozenset[str]:
    return _channel_sets.setdefault(names, names)


async def _parse_filter(request: Request) -> StreamFilter | Response:
    token = bearer_token(request)
    # Anonymous streams (most) make no thread hop: the task would keep anyio's
    # per-task record of it for as long as the stream is open.
    user_id = await run_in_threadpool(_user_id_for, token) if token else None
    if token and user_id is None:
        return _error(401, "invalid bearer token")
    requested = request.query_params.get("channels")
    if requested:
        names = {c.strip() for c in requested.split(",") if c.strip()}
        unknown = sorted(n for n in names if n not in EVENT_BY_CHANNEL and n != PRESENCE_CHANNEL)
        if unknown:
            known = ", ".join((*PUBLIC_CHANNELS, *PRIVATE_CHANNELS, PRESENCE_CHANNEL))
            return _error(422, f"unknown channel(s): {', '.join(unknown)}; known: {known}")
        if (private := sorted(names & set(PRIVATE_CHANNELS))) and user_id is None:
            return _error(401, f"{', '.join(private)} needs a bearer token")
        channels = _channel_set(frozenset(names))
    else:
        channels = _ALL_CHANNELS if user_id else _PUBLIC_CHANNELS
    story_id = None
    if (raw := request.query_params.get("story_id")) is not None:
        if not _ID.fullmatch(raw) or int(raw) < 1:
            return _error(422, f"story_id must be a positive integer, not {raw[:40]!r}")
        story_id = int(raw)
    return StreamFilter(channels=channels, story_id=story_id, user_id=user_id)


async def _replay(at: Position, public: bool, private: bool) -> AsyncIterator[StoredEvent]:
    """The stored events after `at` in the sequences asked for, in the order they
    were sent; a Redis outage is waited out with backoff, then reading resumes
    from where the stream got to."""
    backoff = settings.redis_backoff_initial
    while True:
        stored_events = service.bus().replay(
            at.ids[False] if public else None,
            at.ids[True] if private else None,
            batch=_REPLAY_BATCH,
        )
        try:
            async with contextlib.aclosing(stored_events):
                async for stored in stored_events:
                    yield stored
            return
        except _REDIS_DOWN:
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.redis_backoff_max)


async def _covers(last_id: int, *, private: bool) -> bool:
    backoff = settings.redis_backoff_initial
    while True:
        try:
            return await service.bus().covers(last_id, private=private)
        except _REDIS_DOWN:
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.redis_backoff_max)


async def _resume(
    flt: StreamFilter, resume: ResumePoint, at: Position
) -> AsyncIterator[ServerSentEvent | bytes]:
    """Replay what the client missed, sequence by sequence: one whose history no
    longer reaches back gets a reset and carries on live from `at` (now)."""
    after = {False: resume.public, True: resume.private if flt.private else None}
    for private, last in after.items():
        if last is not None and not await _covers(last, private=private):
            sequence = ("private" if private else "public") if flt.private else None
            yield _reset("history", resume.label(flt), sequence)
            after[private] = None
    if after[False] is None and after[True] is None:
        return
    metrics.REPLAYS.inc()
    for private, last in after.items():
        if last is not None:
            at.ids[private] = last
    replay = _replay(at, after[False] is not None, after[True] is not None)
    async with contextlib.aclosing(replay) as stored_events:
        async for stored in stored_events:
            try:
                event = parse_event(stored.channel, stored.data)
            except MalformedEvent:
                continue
            if at.passes(event) and flt.accepts(event):
                yield _frame(event, stored.data, position=_position(flt, at))


def _position(flt: StreamFilter, at: Position) -> str | None:
    return str(at.label(flt)) if flt.private else None


def _presence_frame(room: str, readers: presence.Readers) -> bytes:
    data = {"room": room, "storyId": presence.story_id_of(room), **readers.public()}
    return ServerSentEvent(data=json.dumps(data, separators=(",", ":")), event=PRESENCE_CHANNEL).encode()


# Events written in one chunk when several are already queued for a stream (a
# burst): one write instead of one per event.
_BATCH = 64

Live = CommunityEvent | tuple[str, presence.Readers] | bytes


def _ready(sub: Subscription, event: CommunityEvent | Idle) -> list[Live]:
    """What to write after `sub.get` gave `event`: the events queued behind it too
    (a burst: one write instead of one per event), or a ping."""
    return [PING] if event is IDLE else [event, *sub.take(_BATCH - 1)]


async def _opening(
    flt: StreamFilter,
    last_id: ResumePoint | None,
    at: Position,
    changes: asyncio.Queue[tuple[str, presence.Readers]] | None,
    stopping: _Stopping,
) -> AsyncIterator[ServerSentEvent | bytes]:
    """What a stream starts with: `connected`, the story's readers if it follows
    their presence, then what it missed if it resumes."""
    yield ServerSentEvent(
        data=json.dumps({"lastEventId": at.label(flt), "channels": sorted(flt.channels)}),
        event="connected",
    )
    if flt.presence_room is not None and changes is not None:
        if (now := await presence.read(flt.presence_room, all_names=False)) is not None:
            yield _presence_frame(flt.presence_room, now)
    if last_id is not None:
        # Closed here, not whenever it is collected, if the client leaves mid-replay.
        async with contextlib.aclosing(_resume(flt, last_id, at)) as replayed:
            async for item in replayed:
                if stopping.is_set():
                    break
                yield item


async def _live_with_presence(
    sub: Subscription, changes: asyncio.Queue[tuple[str, presence.Readers]], flt: StreamFilter, at: Position
) -> AsyncIterator[bytes]:
    """A stream's live part when it asked for presence: the chunks to write as
    things arrive (events from the fan-out, the events already queued behind the
    first, presence changes), or a ping after `sse_ping_seconds` of nothing;
    ends when the subscription closes. After each chunk is written, its events
    count as delivered. (Without presence, `_stream` reads the subscription
    itself: one generator less to pass for each event.)"""
    idle = settings.sse_ping_seconds
    next_event = asyncio.ensure_future(sub.get())
    next_change = asyncio.ensure_future(changes.get())
    try:
        while True:
            done, _ = await asyncio.wait(
                {next_event, next_change}, timeout=idle, return_when=asyncio.FIRST_COMPLETED
            )
            ready: list[Live] = [] if done else [PING]
            if next_change in done:
                ready.append(next_change.result())
                next_change = asyncio.ensure_future(changes.get())
            if next_event in done:
                if (event := next_event.result()) is None:
                    return
                ready += _ready(sub, event)
                next_event = asyncio.ensure_future(sub.get())
            chunk, sent = _chunk(ready, flt, at)
            if chunk:
                yield chunk
                _delivered(sent)
    finally:
        next_event.cancel()
        next_change.cancel()


def _chunk(ready: list[Live], flt: StreamFilter, at: Position) -> tuple[bytes, list[CommunityEvent]]:
    """What `ready` puts on the wire for this stream (one write), and the events in it."""
    frames: list[bytes] = []
    sent: list[CommunityEvent] = []
    for item in ready:
        if isinstance(item, bytes):
            frames.append(item)  # a ping
        elif isinstance(item, tuple):
            metrics.PRESENCE_FRAMES.inc()
            frames.append(_presence_frame(*item))
        elif at.passes(item) and flt.accepts(item):  # not already replayed
            frames.append(_frame(item, position=_position(flt, at)))
            sent.append(item)
    return (frames[0] if len(frames) == 1 else b"".join(frames)), sent


def _delivered(sent: list[CommunityEvent]) -> None:
    # Public events only (analytics skips the rest): the metrics are public,
    # drafts nobody's business.
    for event in sent:
        analytics.delivered(event, "sse")


def _presence_changes(flt: StreamFilter) -> contextlib.AbstractAsyncContextManager[Any]:
    return presence.listen(flt.presence_room) if flt.presence else contextlib.nullcontext(None)


def _last_word(
    stopping: _Stopping, sub: Subscription, flt: StreamFilter, at: Position, ip: str
) -> ServerSentEvent | None:
    """What a stream's live part ends with: the retry hint if the server stops, a
    reset if the client fell behind."""
    if stopping.is_set():
        return _goodbye()
    if sub.overflowed:
        logger.warning("SSE client %s fell behind at #%s; sent reset", ip, at.label(flt))
        return _reset("slow-consumer", at.label(flt))
    return None


class _Direct:
    """A public stream's events written by the fan-out itself while the stream
    waits for its next one (`Subscription.direct`): the shared frame goes straight
    to the connection (`EventStreamResponse.write_now`), and the stream's task is
    not woken for it. At thousands of streams, waking each one's task (through
    its ASGI frames, its generator, its chunk) was most of a delivery's cost
    (benchmarks/RESULTS.md, "issue10-round7" sections). An event the response
    cannot take at once (a write still pending, a server other than Granian)
    goes to the stream's queue, and its task sends it as before: the stream's
    order is kept either way, since the queue is empty whenever this writes."""

    __slots__ = ("at", "flt", "response", "sub")

    def __init__(self, flt: StreamFilter, at: Position, response: EventStreamResponse, sub: Subscription):
        self.flt, self.at, self.response, self.sub = flt, at, response, sub

    def take(self, event: CommunityEvent) -> bool:
        response = self.response
        if not response.writable():
            return False
        if not self.at.passes(event) or not self.flt.accepts(event):
            return True  # already replayed, or not this stream's: nothing to write
        if not response.write_now(_frame(event)):
            # The connection broke as it was written: the stream's task finds out.
            self.sub.nudge()
            return True
        analytics.delivered(event, "sse")
        self.sub.written()  # bytes went out: its keep-alive ping can wait again
        if response.blocked is not None:
            self.sub.nudge()  # the stream's task waits for that write before the next
        return True


def _write_directly(sub: Subscription, flt: StreamFilter, at: Position, response: EventStreamResponse | None) -> None:
    """While a public stream waits, the fan-out writes its events itself (`_Direct`)."""
    if response is not None and not flt.private:
        sub.direct = _Direct(flt, at, response, sub)


def _log_opened(ip: str, resume: int | str | None) -> None:
    # Logged from this short call, not from the stream's generator: a log record
    # looks up its caller's frame, and the frame object that makes stays alive
    # with the frame (for a stream: as long as it is open, ~350 B each).
    logger.info("SSE stream opened from %s (resume after %s)", ip, resume)


async def _stream(
    flt: StreamFilter, last_id: ResumePoint | None, ip: str, stopping: _Stopping | None = None
) -> AsyncIterator[ServerSentEvent | bytes]:
    stopping = stopping or _Stopping()
    fanout = service.fanout()
    metrics.SSE_CLIENTS.inc()
    _open.add(stopping)
    _log_opened(ip, last_id and last_id.label(flt))
    try:
        async with (
            fanout.subscribe(maxsize=settings.sse_queue_size) as sub,
            _presence_changes(flt) as changes,
        ):
            stopping.follow(sub)
            # Read in the same step as subscribing: every later event is in the
            # queue, every earlier one at or below these ids.
            at = Position(fanout.last_id, fanout.last_private_id)
            async with contextlib.aclosing(_opening(flt, last_id, at, changes, stopping)) as opening:
                async for item in opening:
                    yield item
            opening = item = None  # finished: not kept for the stream's life
            # Live: what is ready (the events queued behind the first in the same
            # chunk), or a ping after `sse_ping_seconds` of nothing. After each
            # yield the chunk is written: its events count as delivered.
            if changes is None:
                idle = settings.sse_ping_seconds
                response = stopping.response
                _write_directly(sub, flt, at, response)
                while True:
                    # `sub.get(idle)` in two steps: no coroutine of its own kept
                    # while the stream waits.
                    if (waiting := sub.wait(idle)) is not None:
                        await waiting
                    if (event := sub.next()) is None:
                        break
                    if response is not None and response.blocked is not None:
                        yield DRAIN  # a direct write the server wants waited for, first
                        if event is IDLE:
                            continue
                    chunk, sent = _chunk(_ready(sub, event), flt, at)
                    if chunk:
                        yield chunk
                        _delivered(sent)
            else:
                async with contextlib.aclosing(_live_with_presence(sub, changes, flt, at)) as live:
                    async for chunk in live:
                        yield chunk
            if (last := _last_word(stopping, sub, flt, at, ip)) is not None:
                yield last
    finally:
        metrics.SSE_CLIENTS.dec()
        _open.discard(stopping)
        logger.info("SSE stream from %s closed%s", ip, " (server stopping)" if stopping.is_set() else "")


async def community_events(request: Request) -> Response:
    last_id = _parse_last_id(request)
    if isinstance(last_id, Response):
        return last_id
    flt = await _parse_filter(request)
    if isinstance(flt, Response):
        return flt
    ip = client_address.from_connection(request)
    # Taken (or refused) in one step in Redis, counted across every worker.
    lease = await ratelimit.stream_slots().acquire(ip, settings.sse_max_per_ip)
    if lease is None:
        return _error(
            429, f"too many open event streams from {ip} (limit {settings.sse_max_per_ip})"
        )
    stopping = _Stopping()
    stopping.response = EventStreamResponse(
        _stream(flt, last_id, ip, stopping),
        headers={"Cache-Control": "no-cache"},
        # A client that stops reading altogether is dropped instead of pinning memory.
        send_timeout=settings.sse_send_timeout,
        on_client_gone=stopping.client_gone,
        # However the stream ends (client gone, stalled, server stopping), its slot is freed.
        on_end=functools.partial(ratelimit.stream_slots().release, lease),
    )
    return stopping.response
