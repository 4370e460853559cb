"""GET /api/community/events: every community event, exactly once, in order, resumable.

Protocol (Server-Sent Events, framed by sse-starlette):
- first `event: connected` (data: the newest event id and the channels served);
- then each event as `event: <channel>`, `id: <event id>`, `data: <JSON>`;
- a `: ping` comment every `sse_ping_seconds`.

Resume: send `Last-Event-ID` (EventSource does) or `?last_event_id=`. The
stream subscribes to this process's fan-out *first*, then replays the Redis
stream after that id, then drains the live queue skipping ids already sent,
so the seam has no gap and no duplicate. An id older than the retained
history gets `event: reset` (refetch, then carry on live). A client too slow
to keep up gets a final `reset` and is disconnected.

Filters: `?channels=a,b` and `?story_id=N` (events about that story only).
Private events (`private:draft`) go only to a stream authenticated with the
author's bearer token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.exceptions
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fictures import client_address, db, metrics, ratelimit
from fictures.api.deps import bearer_token, optional_user
from fictures.events import service
from fictures.events.bus import StoredEvent
from fictures.events.schema import (
    EVENT_BY_CHANNEL,
    PRIVATE_CHANNEL,
    PUBLIC_CHANNELS,
    CommunityEvent,
    MalformedEvent,
    parse_event,
)
from fictures.settings import settings

logger = logging.getLogger(__name__)

_ID = re.compile(r"[0-9]{1,18}")
_REPLAY_BATCH = 1000


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


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _parse_last_id(request: Request) -> int | Response | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return None
    if not _ID.fullmatch(raw.strip()):
        return _error(400, f"malformed event id {raw[:40]!r}: expected a non-negative integer")
    return int(raw.strip())


def _user_id_for(token: str | None) -> int | None:
    if not token:
        return None
    with db.session() as s:
        user = optional_user(s, token)
        return user.id if user else None


_encoded: OrderedDict[int, bytes] = OrderedDict()


def _frame(event: CommunityEvent, raw: str | None = None) -> bytes:
    """The event's SSE frame, encoded once per process and written to every stream."""
    assert event.id is not None
    if (frame := _encoded.get(event.id)) is None:
        frame = ServerSentEvent(
            data=raw or event.to_json(), event=event.channel, id=str(event.id)
        ).encode()
        _encoded[event.id] = frame
        if len(_encoded) > 4096:
            _encoded.popitem(last=False)
    return frame


def _reset(reason: str, last_id: int) -> ServerSentEvent:
    metrics.RESETS.labels(reason).inc()
    return ServerSentEvent(
        data=json.dumps({"reason": reason, "lastEventId": last_id}), event="reset"
    )


async def _parse_filter(request: Request) -> StreamFilter | Response:
    token = bearer_token(request)
    user_id = await run_in_threadpool(_user_id_for, token)
    if token and user_id is None:
        return _error(401, "invalid bearer token")
    requested = request.query_params.get("channels")
    if requested:
        names = {c.strip() for c in requested.split(",") if c.strip()}
        unknown = sorted(n for n in names if n not in EVENT_BY_CHANNEL)
        if unknown:
            known = ", ".join((*PUBLIC_CHANNELS, PRIVATE_CHANNEL))
            return _error(422, f"unknown channel(s): {', '.join(unknown)}; known: {known}")
        if PRIVATE_CHANNEL in names and user_id is None:
            return _error(401, f"{PRIVATE_CHANNEL} needs a bearer token")
        channels = frozenset(names)
    else:
        channels = frozenset(PUBLIC_CHANNELS) | ({PRIVATE_CHANNEL} if user_id else set())
    story_id = None
    if (raw := request.query_params.get("story_id")) is not None:
        if not _ID.fullmatch(raw) or int(raw) < 1:
            return _error(422, f"story_id must be a positive integer, not {raw[:40]!r}")
        story_id = int(raw)
    return StreamFilter(channels=channels, story_id=story_id, user_id=user_id)


async def _replay(after: int) -> AsyncIterator[StoredEvent]:
    """The stored events after `after`, waiting out a Redis outage with backoff."""
    bus = service.bus()
    cursor, backoff = after, settings.redis_backoff_initial
    while True:
        try:
            batch = await bus.read_after(cursor, limit=_REPLAY_BATCH)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.redis_backoff_max)
            continue
        for stored in batch:
            cursor = stored.id
            yield stored
        if len(batch) < _REPLAY_BATCH:
            return


async def _covers(last_id: int) -> bool:
    backoff = settings.redis_backoff_initial
    while True:
        try:
            return await service.bus().covers(last_id)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.redis_backoff_max)


async def _stream(flt: StreamFilter, last_id: int | None, ip: str) -> AsyncIterator[ServerSentEvent]:
    fanout = service.fanout()
    metrics.SSE_CLIENTS.inc()
    logger.info("SSE stream opened from %s (resume after %s)", ip, last_id)
    try:
        async with fanout.subscribe(maxsize=settings.sse_queue_size) as sub:
            yield ServerSentEvent(
                data=json.dumps({"lastEventId": fanout.last_id, "channels": sorted(flt.channels)}),
                event="connected",
            )
            sent = last_id or 0
            if last_id is not None:
                if await _covers(last_id):
                    metrics.REPLAYS.inc()
                    async for stored in _replay(last_id):
                        try:
                            event = parse_event(stored.channel, stored.data)
                        except MalformedEvent:
                            continue
                        sent = event.id
                        if flt.accepts(event):
                            yield _frame(event, stored.data)
                else:
                    yield _reset("history", last_id)
                    sent = 0
            while (event := await sub.get()) is not None:
                if event.id <= sent:
                    continue  # already replayed
                sent = event.id
                if flt.accepts(event):
                    metrics.EVENTS_DELIVERED.labels(event.channel, "sse").inc()
                    yield _frame(event)
            if sub.overflowed:
                logger.warning("SSE client %s fell behind at #%s; sent reset", ip, sent)
                yield _reset("slow-consumer", sent)
    finally:
        metrics.SSE_CLIENTS.dec()
        logger.info("SSE stream from %s closed", ip)


class _EventStream(EventSourceResponse):
    def __init__(self, *args, lease: ratelimit.Lease, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lease = lease

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except* SendTimeoutError:
            # The client accepted nothing for `sse_send_timeout` seconds: it is gone.
            logger.info("SSE client stalled for %ss; stream closed", settings.sse_send_timeout)
        finally:
            # However the stream ended (client gone, stalled, server stopping).
            await ratelimit.stream_slots().release(self.lease)


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
    return _EventStream(
        _stream(flt, last_id, ip),
        ping=settings.sse_ping_seconds,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        # A client that stops reading altogether is dropped instead of pinning memory.
        send_timeout=settings.sse_send_timeout,
        lease=lease,
    )
