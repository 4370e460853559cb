"""GET /api/stories/{id}/presence and the SSE `presence` channel, on the real Redis.

Readers are written with the process's own presence store (as a worker's
tracker writes them); the stream generator is read directly, as in
tests/api/test_event_stream_ids.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from fictures import presence, signals
from fictures.api.sse import PRESENCE_CHANNEL, StreamFilter
from fictures.events.schema import PUBLIC_CHANNELS
from fictures.models import User
from fictures.presence import PresenceStore, PresenceTracker, story_room
from tests.api.test_event_stream_ids import Reader, event_service  # noqa: F401  (a fixture)
from tests.conftest import in_db, wait_until
from tests.factories import api_story, api_user, make_story, make_user


async def _story(*, published: bool = True) -> int:
    return await in_db(lambda s: make_story(s, make_user(s), published=published).id)


@pytest.fixture
async def readers() -> AsyncIterator[list[tuple[str, list[str]]]]:
    """(room, members) written through the process's store; removed afterwards."""
    written: list[tuple[str, list[str]]] = []
    yield written
    for room, members in written:
        await presence.store().update(room, remove=members)


async def test_presence_counts_users_once_and_names_them(api_client, readers):
    story_id = await _story()
    room = story_room(story_id)
    members = ["u:1:ada:p1", "u:1:ada:p2", "u:2:basil:p1", "a:0001", "a:0002"]
    readers.append((room, members))
    await presence.store().update(room, add=members)
    r = await api_client.get(f"/api/stories/{story_id}/presence")
    assert r.status_code == 200
    assert r.json() == {"count": 4, "users": ["ada", "basil"]}


async def test_a_story_nobody_reads_has_no_readers(api_client):
    r = await api_client.get(f"/api/stories/{await _story()}/presence")
    assert (r.status_code, r.json()) == (200, {"count": 0, "users": []})


async def test_drafts_and_missing_stories_are_404_even_for_the_author(api_client):
    author = await api_user(api_client)
    draft = await api_story(api_client, author, status="draft")
    for path in (f"/api/stories/{draft['id']}/presence", "/api/stories/999999999/presence",
                 "/api/stories/x/presence", "/api/stories/0/presence", "/api/stories/99999999999/presence"):
        r = await api_client.get(path, headers=author.headers)
        assert r.status_code == 404, path
        assert "not found" in r.json()["detail"]
    r = await api_client.post(f"/api/stories/{draft['id']}/presence")
    assert r.status_code == 405


async def test_presence_while_redis_is_down_is_503(api_client, embedded_redis, monkeypatch):
    server = embedded_redis()
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=1, socket_timeout=1)
    down = PresenceStore(client, prefix="p", channel="c", ttl_seconds=10, max_names=50)
    server.stop()
    monkeypatch.setattr(presence, "store", lambda: down)
    r = await api_client.get(f"/api/stories/{await _story()}/presence")
    await client.aclose()
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert "unavailable" in r.json()["detail"]


async def test_presence_is_a_known_channel_but_never_on_by_default(api_client):
    r = await api_client.get("/api/community/events?channels=presence,nope")
    assert r.status_code == 422
    assert "nope" in r.json()["detail"] and PRESENCE_CHANNEL in r.json()["detail"]


@pytest.fixture
async def tracker(event_service) -> AsyncIterator[PresenceTracker]:  # noqa: F811
    """A tracker on the process's signals hub and presence store, as a worker runs it."""
    async with signals.lifespan():
        await wait_until(lambda: signals.hub().healthy, message="the signals subscription")
        names: dict[str, tuple[int, str] | None] = {}
        t = PresenceTracker(presence.store(), identity=names.get, process=f"p-{uuid.uuid4().hex[:6]}")
        t.names = names  # type: ignore[attr-defined]
        signals.hub().on(presence.KIND, t.on_signal)
        yield t
        signals.hub().off(presence.KIND, t.on_signal)
        await t.leave_all()


def _filter(channels: tuple[str, ...], story_id: int | None = None) -> StreamFilter:
    return StreamFilter(channels=frozenset(channels), story_id=story_id, user_id=None)


async def test_streams_that_ask_get_presence_changes_of_their_story_without_ids(tracker):
    followed, other = await _story(), await _story()
    ada = await in_db(lambda s: make_user(s, username=f"ada_{uuid.uuid4().hex[:6]}").id)
    ada_name = await in_db(lambda s: s.get(User, ada).username)
    tracker.names["tab-ada"] = (ada, ada_name)  # type: ignore[attr-defined]
    story_stream = Reader(_filter((PRESENCE_CHANNEL,), followed))
    every_room = Reader(_filter((*PUBLIC_CHANNELS, PRESENCE_CHANNEL)))
    no_presence = Reader(_filter(PUBLIC_CHANNELS))
    try:
        for stream in (story_stream, every_room, no_presence):
            await stream.connected()
        # A stream that follows a story gets its current count first.
        first = await story_stream.wait_for(lambda f: f.event == "presence", "the current count")
        assert first.data == {"room": story_room(followed), "storyId": followed, "count": 0, "users": []}

        await tracker.rooms_changed("tab-ada", frozenset({story_room(followed)}), frozenset())
        await tracker.rooms_changed("tab-guest", frozenset({story_room(other)}), frozenset())
        await tracker.flush()
        joined = await story_stream.wait_for(
            lambda f: f.event == "presence" and f.data["count"] == 1, "ada joining"
        )
        assert joined.data == {"room": story_room(followed), "storyId": followed, "count": 1,
                               "users": [ada_name]}
        assert joined.id is None  # ephemeral: nothing to resume
        await every_room.wait_for(lambda f: f.event == "presence" and f.data["storyId"] == other,
                                  "the other story's count")
        await every_room.wait_for(lambda f: f.event == "presence" and f.data["storyId"] == followed,
                                  "the followed story's count")

        await tracker.rooms_changed("tab-ada", frozenset(), frozenset({story_room(followed)}))
        await tracker.flush()
        await story_stream.wait_for(
            lambda f: f.event == "presence" and f.data["count"] == 0 and f is not first, "ada leaving"
        )
        assert all(f.data["storyId"] == followed for f in story_stream.frames if f.event == "presence")
        assert not [f for f in no_presence.frames if f.event == "presence"]
    finally:
        for stream in (story_stream, every_room, no_presence):
            await stream.close()
