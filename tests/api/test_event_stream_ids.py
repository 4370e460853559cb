"""SSE ids and resuming, per sequence, on the process's own event service and Redis.

The stream generator behind GET /api/community/events is read directly (an HTTP
client over ASGI would wait for the endless response to end); the browser-level
tests in tests/e2e/test_event_stream.py read the same streams over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY
from starlette.requests import Request

from fictures import stories
from fictures.api import sse
from fictures.api.sse import ResumePoint, StreamFilter
from fictures.events import service
from fictures.events.schema import PRIVATE_CHANNEL, PUBLIC_CHANNELS
from fictures.models import StoryUpdate, User
from tests.conftest import in_db, unsent_outbox_rows, wait_until
from tests.factories import make_story, make_user

ANONYMOUS = StreamFilter(channels=frozenset(PUBLIC_CHANNELS), story_id=None, user_id=None)


def own(user_id: int) -> StreamFilter:
    """What an authenticated stream without ?channels= serves."""
    return StreamFilter(
        channels=frozenset((*PUBLIC_CHANNELS, PRIVATE_CHANNEL)), story_id=None, user_id=user_id
    )


@pytest.fixture
async def event_service(database: None) -> AsyncIterator[None]:
    """The process's event service (the relay and fan-out the SSE endpoint reads)."""
    async with service.lifespan():
        await wait_until(lambda: service.fanout().healthy, message="the fan-out")
        # Rows other tests left would arrive in the middle of this test's streams.
        await wait_until(lambda: not unsent_outbox_rows(), message="the outbox to drain")
        yield


@dataclass
class Frame:
    event: str
    id: str | None
    data: dict[str, Any]


def _parse(raw: bytes) -> Frame | None:
    fields = {}
    for line in raw.decode().split("\r\n"):
        name, sep, value = line.partition(": ")
        if sep and not line.startswith(":"):
            fields[name] = value
    if "event" not in fields:
        return None  # a ping
    return Frame(fields["event"], fields.get("id"), json.loads(fields["data"]))


class Reader:
    """One SSE stream, read in a task of its own."""

    def __init__(self, flt: StreamFilter, resume: ResumePoint | None = None):
        self.frames: list[Frame] = []
        self._task = asyncio.create_task(self._read(flt, resume))

    async def _read(self, flt: StreamFilter, resume: ResumePoint | None) -> None:
        async for item in sse._stream(flt, resume, "test-client"):
            raw = item if isinstance(item, bytes) else item.encode()
            # One chunk may carry several frames (the events queued behind the first).
            for part in raw.split(b"\r\n\r\n"):
                if part and (frame := _parse(part)) is not None:
                    self.frames.append(frame)

    async def wait_for(self, predicate: Callable[[Frame], bool], what: str) -> Frame:
        await wait_until(lambda: any(predicate(f) for f in self.frames), message=what)
        return next(f for f in self.frames if predicate(f))

    async def connected(self) -> Frame:
        return await self.wait_for(lambda f: f.event == "connected", "the connected event")

    def events(self) -> list[Frame]:
        return [f for f in self.frames if f.id is not None]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def about(story_id: int, channel: str | None = None) -> Callable[[Frame], bool]:
    return lambda f: f.data.get("storyId") == story_id and channel in (None, f.event)


async def _users(count: int) -> list[int]:
    return await in_db(lambda s: [make_user(s).id for _ in range(count)])


async def _story(author_id: int, *, published: bool = True) -> int:
    return await in_db(lambda s: make_story(s, s.get(User, author_id), published=published).id)


async def _retitle(author_id: int, story_id: int, title: str) -> None:
    await in_db(
        lambda s: stories.update_story(
            session=s, author=s.get(User, author_id), story_id=story_id,
            data=StoryUpdate(title=title),
        )
    )


async def _sent() -> None:
    """Until every change so far is in Redis (the relay marks rows once sent)."""
    await wait_until(lambda: not unsent_outbox_rows(), message="the relay to send")


def _parts(frame: Frame) -> tuple[int, int]:
    assert frame.id is not None
    public, private = frame.id.split(".")
    return int(public), int(private)


def _delivered(channel: str) -> float:
    return REGISTRY.get_sample_value(
        "fictures_events_delivered_total", {"channel": channel, "client": "sse"}
    ) or 0.0


async def test_a_stream_with_private_events_names_both_sequences_in_every_id(event_service):
    author, other = await _users(2)
    mine, anonymous = Reader(own(author)), Reader(ANONYMOUS)
    try:
        connected = await mine.connected()
        fanout = service.fanout()
        assert connected.data["lastEventId"] == f"{fanout.last_id}.{fanout.last_private_id}"
        assert (await anonymous.connected()).data["lastEventId"] == fanout.last_id

        public_one = await _story(author)
        draft = await _story(author, published=False)
        await _story(other, published=False)  # someone else's: passed over, never shown
        public_two = await _story(other)
        await _retitle(author, draft, "Draft, again")
        await mine.wait_for(about(draft, "private:draft"), "the draft's creation")
        edited = await mine.wait_for(
            lambda f: about(draft)(f) and f.data["action"] == "updated", "the draft's edit"
        )
        await anonymous.wait_for(about(public_two), "the second story")
    finally:
        await mine.close()
        await anonymous.close()

    got = mine.events()
    assert [(f.event, f.data["storyId"]) for f in got] == [
        ("story:published", public_one), ("private:draft", draft),
        ("story:published", public_two), ("private:draft", draft),
    ]
    # Each id is (last public id, last private id) passed so far: the event's own id
    # in its sequence's part, the other part unchanged since that sequence's last event.
    (p1, q0), (p1b, q1), (p2, q1b), (p2b, q3) = [_parts(f) for f in got]
    assert (p1, q1, p2, q3) == tuple(f.data["id"] for f in got)
    assert (p1b, p2b, q0) == (p1, p2, q1 - 1)
    assert q1b == q1 + 1 and q3 == q1 + 2  # the other author's draft was passed over
    assert p2 == p1 + 1  # and nothing of it shows in the public sequence
    assert edited.id == f"{p2}.{q3}"
    # The anonymous stream: plain ids, the public events only.
    assert [(f.event, f.id) for f in anonymous.events()] == [
        ("story:published", str(p1)), ("story:published", str(p2)),
    ]
    assert _delivered(PRIVATE_CHANNEL) == 0  # the metrics are public


async def test_resuming_from_a_two_part_id_misses_nothing_and_repeats_nothing(event_service):
    author, other = await _users(2)
    reference, first = Reader(own(author)), Reader(own(author))
    resumed = None
    try:
        await reference.connected()
        await first.connected()
        await _story(author)
        draft = await _story(author, published=False)
        await first.wait_for(about(draft), "the draft")
        await first.close()
        last = first.events()[-1].id

        # While away both sequences move on, with others' events in between.
        await _story(other, published=False)
        await _story(other)
        await _retitle(author, draft, "Edited while away")
        await _story(author)
        away = await _story(author, published=False)
        await reference.wait_for(about(away), "the last event while away")

        public, private = map(int, last.split("."))
        resumed = Reader(own(author), ResumePoint(public, private))
        await resumed.connected()
        # And live again after the replay.
        await _story(other)
        await _retitle(author, away, "Live again")
        done = lambda f: about(away)(f) and f.data["action"] == "updated"  # noqa: E731
        await reference.wait_for(done, "the last live event")
        await resumed.wait_for(done, "the last live event, resumed")
    finally:
        for reader in (reference, first, resumed):
            if reader is not None:
                await reader.close()

    def seen(frames: list[Frame]) -> list[tuple[str, str | None, int]]:
        return [(f.event, f.id, f.data["id"]) for f in frames]

    expected = seen(reference.events())
    got = seen(first.events() + resumed.events())
    assert len(expected) == 8
    assert got == expected  # same events, same order, same ids: no gap, no duplicate
    assert not [f for f in resumed.frames if f.event == "reset"]


async def test_a_sequence_whose_history_is_gone_is_reset_on_its_own(event_service):
    author = (await _users(1))[0]
    bus = service.bus()
    story = await _story(author)
    draft = await _story(author, published=False)
    await _sent()
    public, private = await bus.head(), await bus.head(private=True)

    # A private id from before a Redis reset: the public part still replays.
    reader = Reader(own(author), ResumePoint(public - 1, private + 1000))
    try:
        reset = await reader.wait_for(lambda f: f.event == "reset", "the reset")
        assert reset.data == {
            "reason": "history", "lastEventId": f"{public - 1}.{private + 1000}",
            "sequence": "private",
        }
        replayed = await reader.wait_for(about(story), "the replayed story")
        assert replayed.id == f"{public}.{private}"  # the private part carries on from now
        later = await _story(author, published=False)
        live = await reader.wait_for(about(later), "a later draft")
        assert live.id == f"{public}.{private + 1}"
    finally:
        await reader.close()

    # And the other way around.
    reader = Reader(own(author), ResumePoint(public + 1000, private - 1))
    try:
        reset = await reader.wait_for(lambda f: f.event == "reset", "the reset")
        assert reset.data["sequence"] == "public"
        draft_again = await reader.wait_for(about(draft), "the replayed draft")
        assert draft_again.id == f"{public}.{private}"
        assert draft_again.data["id"] == private
    finally:
        await reader.close()


async def test_public_streams_keep_plain_ids(event_service):
    author = (await _users(1))[0]
    story = await _story(author)
    await _sent()
    public = await service.bus().head()

    # A two-part id (a client that signed out) resumes after its public part.
    reader = Reader(ANONYMOUS, ResumePoint(public - 1, 12345))
    try:
        replayed = await reader.wait_for(about(story), "the replayed story")
        await _story(author, published=False)
        after = await _story(author)
        live = await reader.wait_for(about(after), "the next story")
    finally:
        await reader.close()
    assert (replayed.id, live.id) == (str(public), str(public + 1))
    assert [f.event for f in reader.events()] == ["story:published", "story:published"]


async def test_a_plain_id_on_a_private_stream_takes_private_events_from_now(event_service):
    author = (await _users(1))[0]
    await _story(author)
    await _sent()
    public = await service.bus().head()
    before = await _story(author, published=False)
    story = await _story(author)
    await _sent()

    reader = Reader(own(author), ResumePoint(public))
    try:
        replayed = await reader.wait_for(about(story), "the replayed story")
        after = await _story(author, published=False)
        await reader.wait_for(about(after), "a draft made after connecting")
    finally:
        await reader.close()
    private = service.fanout().last_private_id
    assert replayed.id == f"{public + 1}.{private - 1}"
    assert [f.data["storyId"] for f in reader.events()] == [story, after]
    assert before not in [f.data["storyId"] for f in reader.events()]


def _request(**headers_or_query: str) -> Request:
    header = headers_or_query.get("header")
    query = headers_or_query.get("query", "")
    return Request({
        "type": "http",
        "headers": [(b"last-event-id", header.encode())] if header else [],
        "query_string": query.encode(),
    })


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"header": "42"}, ResumePoint(42)),
        ({"header": "42.7"}, ResumePoint(42, 7)),
        ({"query": "last_event_id=0.0"}, ResumePoint(0, 0)),
        ({"header": " 5.12 "}, ResumePoint(5, 12)),
    ],
)
def test_last_event_id_takes_one_or_two_parts(given, expected):
    assert sse._parse_last_id(_request(**given)) == expected


@pytest.mark.parametrize("bad", ["1.2.3", "1.", ".1", "1.x", "-1.2", "1..2", "1,2"])
async def test_a_malformed_last_event_id_is_a_400(api_client, bad):
    r = await api_client.get("/api/community/events", params={"last_event_id": bad})
    assert r.status_code == 400
    assert "malformed event id" in r.json()["detail"]
