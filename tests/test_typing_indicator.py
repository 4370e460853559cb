"""fictures.typing_indicator on the real Redis: the server-side throttle, and
typers shown in every process through real signals, expiring by themselves."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

import fictures.pages.story  # noqa: F401  (registers StoryRoom, the class of "story:<id>" rooms)
from fictures import rooms
from fictures.settings import settings
from fictures.signals import Signals
from fictures.typing_indicator import KIND, TypingTracker
from tests.conftest import wait_until


@dataclass
class Process:
    signals: Signals
    typing: TypingTracker
    tasks: list[asyncio.Task]


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    """Two processes' typing trackers on one Redis and one signals channel."""
    prefix = f"{settings.stream_key}:typing-test-{uuid.uuid4().hex[:8]}"
    made: list[Process] = []
    clients = []
    for _ in range(2):
        client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
        clients.append(client)
        sig = Signals(settings.redis_url, channel=f"{prefix}:signals")
        typing = TypingTracker(client, prefix=prefix, send=sig.send, hold_seconds=0.6,
                               min_interval_seconds=0.4)
        sig.on(KIND, typing.on_signal)
        made.append(Process(sig, typing, [asyncio.create_task(sig.run()), asyncio.create_task(typing.run())]))
    await wait_until(lambda: all(p.signals.healthy for p in made), message="both subscribed")
    yield made
    for p in made:
        for task in p.tasks:
            task.cancel()
        await asyncio.gather(*p.tasks, return_exceptions=True)
        await p.signals.close()
    for client in clients:
        await client.aclose()


def _room() -> str:
    return f"story:{uuid.uuid4().int % 10**9}"


def _shown(room: str) -> list[str] | None:
    return rooms.current(room, "typers")


async def test_the_server_admits_one_report_per_interval_per_user_and_story(processes):
    a, b = (p.typing for p in processes)
    room, other = _room(), _room()
    assert await a.admit(room, 1)
    # Excess is dropped whichever worker it reaches.
    assert not await a.admit(room, 1)
    assert not await b.admit(room, 1)
    # Other users and other stories have their own allowance.
    assert await b.admit(room, 2)
    assert await a.admit(other, 1)
    started = time.monotonic()
    await wait_until(lambda: a.admit(room, 1), timeout=2, interval=0.05, message="the next window")
    assert time.monotonic() - started >= 0.3
    # A submitted post ends the window at once.
    await a.stopped(room=room, user_id=1, username="ada")
    assert await b.admit(room, 1)


async def test_typers_show_in_every_process_and_expire_after_the_hold(processes):
    a, b = (p.typing for p in processes)
    room = _room()
    await a.typed(room=room, user_id=1, username="ada", token="tab-1")
    await wait_until(lambda: _shown(room) == ["ada"] and b.typers.get(room, {}).keys() == {"ada"},
                     message="ada shown")
    await b.typed(room=room, user_id=2, username="basil", token="tab-2")
    await wait_until(lambda: _shown(room) == ["ada", "basil"], message="both shown")
    started = time.monotonic()
    await wait_until(lambda: _shown(room) == [] and room not in a.typers and room not in b.typers,
                     timeout=3, message="both expired")
    assert time.monotonic() - started >= 0.3  # held, not dropped at once


async def test_a_report_while_typing_changes_nothing_and_stop_clears_at_once(processes):
    a, b = (p.typing for p in processes)
    room = _room()
    await a.typed(room=room, user_id=1, username="ada", token="tab-1")
    await wait_until(lambda: "ada" in b.typers.get(room, {}), message="ada typing")
    deadline = b.typers[room]["ada"]
    await a.typed(room=room, user_id=1, username="ada", token="tab-1")
    await wait_until(lambda: b.typers[room]["ada"] > deadline, message="the hold extended")
    await a.stopped(room=room, user_id=1, username="ada")
    await wait_until(lambda: room not in b.typers and _shown(room) == [], message="stopped")


async def test_the_typers_tab_leaving_the_story_stops_its_line(processes):
    a, b = (p.typing for p in processes)
    room = _room()
    await a.typed(room=room, user_id=1, username="ada", token="tab-1")
    await wait_until(lambda: "ada" in b.typers.get(room, {}), message="ada typing")
    await a.rooms_changed("another-tab", frozenset(), frozenset({room}))  # not the typer's
    await a.rooms_changed("tab-1", frozenset(), frozenset({"community"}))  # not this room
    assert "ada" in b.typers.get(room, {})
    await a.rooms_changed("tab-1", frozenset(), frozenset({room}))
    await wait_until(lambda: room not in b.typers, message="stopped on leave")


async def test_malformed_typing_signals_are_ignored(processes):
    a = processes[0].typing
    for bad in ({}, {"room": "community", "user": "ada"}, {"room": "story:1", "user": "<b>x</b>"},
                {"room": "story:1", "user": "ada", "stop": "yes"}, {"room": ["story:1"], "user": "ada"}):
        await a.on_signal(bad)
    assert a.typers == {}
