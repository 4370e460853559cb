"""fictures.presence on the real Redis: several processes' tabs counted together.

Each `PresenceTracker` here has its own Redis connection and process name, as
each worker has; what they write to one Redis is what every worker and
instance counts together. Announcements are heard through a real signals
subscription (fictures.signals), as in the app.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

import fictures.pages.story  # noqa: F401  (registers StoryRoom, the class of "story:<id>" rooms)
from fictures import presence, rooms
from fictures.presence import PresenceStore, PresenceTracker, Readers, Summary, member_for
from fictures.settings import settings
from fictures.signals import Signals
from tests.conftest import wait_until

STORY = "story:1"


@dataclass
class World:
    """Processes sharing one Redis (one prefix and signals channel for this test)."""

    prefix: str
    channel: str
    identities: dict[str, tuple[int, str] | None] = field(default_factory=dict)
    heard: list[dict] = field(default_factory=list)
    clients: list[aioredis.Redis] = field(default_factory=list)

    def store(self, *, ttl: float = 10.0, max_names: int = 50) -> PresenceStore:
        client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
        self.clients.append(client)
        return PresenceStore(client, prefix=self.prefix, channel=self.channel, ttl_seconds=ttl,
                             max_names=max_names)

    def process(self, name: str, *, ttl: float = 10.0, heartbeat: float = 1.0,
                silent: set[str] | None = None, max_names: int = 50) -> PresenceTracker:
        return PresenceTracker(
            self.store(ttl=ttl, max_names=max_names), identity=self.identities.get,
            find_silent=lambda tokens: tokens & (silent or set()), heartbeat_seconds=heartbeat,
            process=name,
        )

    async def read(self, room: str = STORY) -> Readers:
        return (await self.store().read(room, all_names=True)).readers

    def announced(self, room: str = STORY) -> list[dict]:
        return [data for data in self.heard if data["room"] == room]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    prefix = f"{settings.stream_key}:presence-test-{uuid.uuid4().hex[:8]}"
    w = World(prefix=prefix, channel=f"{prefix}:signals")
    listener = Signals(settings.redis_url, channel=w.channel)

    async def heard(data: dict) -> None:
        w.heard.append(data)

    listener.on("presence", heard)
    task = asyncio.create_task(listener.run())
    await wait_until(lambda: listener.healthy, message="the signals subscription")
    yield w
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await listener.close()
    for client in w.clients:
        await client.aclose()


async def join(tracker: PresenceTracker, token: str, room: str = STORY) -> None:
    await tracker.rooms_changed(token, frozenset({room}), frozenset())
    await tracker.flush()


async def leave(tracker: PresenceTracker, token: str, room: str = STORY) -> None:
    await tracker.rooms_changed(token, frozenset(), frozenset({room}))
    await tracker.flush()


async def test_users_count_once_across_tabs_and_processes_anonymous_tabs_each(world: World):
    world.identities.update({"a1": (1, "ada"), "a2": (1, "ada"), "b1": (2, "basil"), "g1": None, "g2": None})
    one, two = world.process("one"), world.process("two")
    await join(one, "a1")
    await join(one, "a2")  # ada's second tab, same process
    await join(two, "b1")
    await join(two, "g1")
    await join(one, "g2")
    assert await world.read() == Readers(count=4, users=["ada", "basil"], guests=2)
    world.identities["a3"] = (1, "ada")
    await join(two, "a3")  # ada again, on the other process
    assert await world.read() == Readers(count=4, users=["ada", "basil"], guests=2)

    await leave(one, "a1")
    await leave(one, "a2")  # ada still has a tab on process two
    assert await world.read() == Readers(count=4, users=["ada", "basil"], guests=2)
    await leave(two, "a3")
    await leave(one, "g2")
    assert await world.read() == Readers(count=2, users=["basil"], guests=1)
    # Every change of the count or names was announced once, in order, with
    # increasing versions; changes that altered neither were not announced.
    await wait_until(lambda: world.announced() and world.announced()[-1]["count"] == 2,
                     message="the last announcement")
    counts = [(d["count"], d["users"]) for d in world.announced()]
    assert counts == [
        (1, ["ada"]), (2, ["ada", "basil"]), (3, ["ada", "basil"]), (4, ["ada", "basil"]),
        (3, ["basil"]), (2, ["basil"]),
    ]
    versions = [d["v"] for d in world.announced()]
    assert versions == sorted(set(versions))


async def test_the_other_room_is_counted_apart_and_an_empty_room_announces_zero(world: World):
    world.identities.update({"t": (5, "cleo")})
    one = world.process("one")
    await join(one, "t", "community")
    await join(one, "g", STORY)
    assert await world.read("community") == Readers(1, ["cleo"], 0)
    assert await world.read(STORY) == Readers(1, [], 1)
    await leave(one, "g", STORY)
    await wait_until(lambda: world.announced() and world.announced()[-1]["count"] == 0,
                     message="zero announced")
    assert await world.read(STORY) == Readers()
    # The emptied room left the index that sweeps walk.
    client = world.clients[0]
    assert await client.sismember(f"{world.prefix}:rooms", STORY) == 0
    assert await client.sismember(f"{world.prefix}:rooms", "community") == 1


async def test_a_dead_workers_readers_expire_and_a_live_worker_sweeps_them(world: World):
    world.identities.update({"ada": (1, "ada"), "basil": (2, "basil")})
    doomed = world.process("doomed", ttl=1.0, heartbeat=0.5)
    alive = world.process("alive", ttl=1.0, heartbeat=0.3)
    await join(doomed, "ada")
    await join(doomed, "guest")
    await join(doomed, "guest", "story:2")  # a room no live process has a tab in
    await join(alive, "basil")
    assert (await world.read()).count == 3
    assert (await world.read("story:2")).count == 1
    # `doomed` stops here: no leave, no refresh (its worker was killed).
    # `alive` keeps its heartbeat: refreshes its own reader, sweeps the rest.

    async def swept() -> bool:
        await alive.heartbeat()
        return (await world.read()) == Readers(1, ["basil"], 0) and (await world.read("story:2")).count == 0

    await wait_until(swept, timeout=5, interval=0.3, message="the dead worker's readers swept")
    await wait_until(lambda: world.announced("story:2")[-1]["count"] == 0 and world.announced()[-1]["count"] == 1,
                     message="the sweep announced both rooms")
    # The survivor's own reader was refreshed, not expired, all along.
    assert [d["count"] for d in world.announced()][-2:] == [3, 1]
    assert [d["count"] for d in world.announced("story:2")] == [1, 0]


async def test_a_silent_tab_stops_counting_and_counts_again_when_it_answers(world: World):
    silent: set[str] = set()
    world.identities.update({"ada": (1, "ada")})
    one = world.process("one", silent=silent)
    await join(one, "ada")
    await join(one, "guest")
    silent.add("guest")
    await one.heartbeat()
    assert await world.read() == Readers(1, ["ada"], 0)
    silent.clear()
    await one.heartbeat()
    assert await world.read() == Readers(2, ["ada"], 1)


async def test_the_heartbeat_re_adds_what_redis_lost(world: World):
    one = world.process("one")
    await join(one, "guest")
    client = world.clients[0]
    await client.delete(f"{world.prefix}:room:{STORY}")  # a Redis restart, say
    assert (await world.read()).count == 0
    await one.heartbeat()
    assert (await world.read()).count == 1


async def test_announcements_name_at_most_max_names_and_the_count_stays_exact(world: World):
    one = world.process("one", max_names=2)
    for i, name in enumerate(["cleo", "ada", "basil"], start=1):
        world.identities[name] = (i, name)
        await join(one, name)
    await wait_until(lambda: len(world.announced()) == 3, message="three announcements")
    assert world.announced()[-1] | {"v": 0} == {
        "room": STORY, "count": 3, "users": ["ada", "basil"], "guests": 0, "v": 0,
    }
    assert await world.read() == Readers(3, ["ada", "basil", "cleo"], 0)


async def test_an_older_announcement_never_replaces_a_newer_one(world: World):
    room = "story:77"
    one = world.process("one")
    one.local[room] = {"tab": "a:x"}  # a local tab: the room's values are stored here
    newer, older = Readers(2, ["ada"], 1), Readers(1, [], 1)
    await one._apply(room, Summary(newer, 20))
    await one.on_signal({"room": room, **older.public(), "guests": 1, "v": 10})
    assert rooms.current(room, "readers") == newer
    await one.on_signal({"room": room, "count": 3, "users": ["ada"], "guests": 2, "v": 30})
    assert rooms.current(room, "readers") == Readers(3, ["ada"], 2)
    # Malformed signals are ignored (logged), whatever they hold.
    for bad in ({"room": room}, {"room": "elsewhere", "count": 1, "users": [], "guests": 0, "v": 99},
                {"room": room, "count": "9", "users": [], "guests": 0, "v": 99},
                {"room": room, "count": 9, "users": ["<b>"], "guests": 0, "v": 99}):
        await one.on_signal(bad)
    assert rooms.current(room, "readers") == Readers(3, ["ada"], 2)
    rooms.forget(room)


async def test_a_clean_shutdown_removes_the_processes_readers_at_once(world: World):
    one, two = world.process("one"), world.process("two")
    await join(one, "guest-1")
    await join(two, "guest-2")
    await one.leave_all()
    assert (await world.read()).count == 1


def test_members_never_hold_a_tab_token():
    token = str(uuid.uuid4())
    assert token not in member_for(None, token, "p")
    assert member_for(None, token, "p") == member_for(None, token, "q")  # a tab is a tab anywhere
    assert member_for((7, "ada"), token, "p") == "u:7:ada:p"


class FrameLog(PresenceTracker):
    """A tracker that records the frames it would send (and pretends a room size)."""

    sockets = 1000

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames: list[tuple[float, Readers]] = []

    async def _send_frame(self, room, room_cls, readers) -> int:
        self.frames.append((asyncio.get_running_loop().time(), readers))
        return self.sockets


async def test_a_burst_of_changes_is_one_frame_now_and_one_with_the_latest_count_later(world: World):
    room = "story:78"
    tracker = FrameLog(world.store(), identity=world.identities.get, process="one")
    tracker.local[room] = {"tab": "a:x"}
    started = asyncio.get_running_loop().time()
    for version in range(1, 21):  # twenty readers arriving at once
        await tracker._apply(room, Summary(Readers(version, [], version), version))
    await wait_until(lambda: len(tracker.frames) == 2, message="the deferred frame")
    (_, first), (last_at, last) = tracker.frames
    assert first.count == 1 and last.count == 20  # the latest count, not every step
    assert last_at - started >= presence.FRAME_INTERVAL - 0.05
    assert rooms.current(room, "readers").count == 20  # a tab hydrating meanwhile reads the latest
    rooms.forget(room)


def test_frames_to_a_large_room_are_spaced_more_but_a_join_shows_within_2_s():
    assert presence.frame_interval(10) == presence.FRAME_INTERVAL
    assert presence.frame_interval(2000) == 1.0
    assert presence.frame_interval(100_000) == presence.FRAME_INTERVAL_MAX < 2 - presence.COALESCE_SECONDS
