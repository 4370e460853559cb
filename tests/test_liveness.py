"""Which processes are alive (fictures.liveness), and tabs of dead ones keep their token."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import time
import types
import uuid

import redis.asyncio as aioredis
from reflex.utils.token_manager import RedisTokenManager, SocketRecord

from fictures import reflex_compat
from fictures.liveness import Liveness
from fictures.settings import settings
from tests.conftest import wait_until


async def test_a_process_is_alive_exactly_while_it_holds_its_subscription():
    liveness = Liveness(settings.redis_url)
    me = f"process-{uuid.uuid4().hex}"
    try:
        assert not await liveness.alive(me)
        task = asyncio.create_task(liveness.run(me))
        await asyncio.wait_for(liveness.subscribed.wait(), 5)
        assert await liveness.alive(me)
        assert not await liveness.alive(f"process-{uuid.uuid4().hex}")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

        async def gone() -> bool:
            return not await liveness.alive(me)

        # The connection closed with the subscription: gone at once.
        await wait_until(gone, timeout=2, message="the process to be gone")
    finally:
        await liveness.close()


async def test_a_tab_keeps_its_token_when_its_previous_process_is_gone():
    """Reflex hands a tab a new token (an empty state) whenever its token still
    has a socket record; the wrapper clears records of processes that are gone,
    and waits a moment for one that is stopping."""
    client = aioredis.Redis.from_url(settings.redis_url)
    manager = RedisTokenManager(client)
    app = types.SimpleNamespace(event_namespace=types.SimpleNamespace(_token_manager=manager))
    alive = {"live-process", "stopping-process", "cleaning-process"}

    async def is_alive(instance_id: str) -> bool:
        return instance_id in alive

    reflex_compat.keep_tokens_of_dead_processes(app, is_alive, grace=1.0)
    names = ("orphan", "duplicate", "stopping", "cleaning")
    tokens = {name: str(uuid.uuid4()) for name in names}
    keys = {name: manager._get_redis_key(token) for name, token in tokens.items()}

    async def record(name: str, owner: str) -> None:
        await client.set(keys[name], pickle.dumps(SocketRecord(instance_id=owner, sid="old")))

    async def owner_of(name: str) -> str:
        return pickle.loads(await client.get(keys[name])).instance_id

    new_token = None
    try:
        # Left by a process that died without cleaning up: the tab keeps its token.
        await record("orphan", "dead-process")
        assert await manager.link_token_to_sid(tokens["orphan"], "sid-1") is None
        assert await owner_of("orphan") == manager.instance_id
        # Its process exits a moment after the tab reconnected: it waits, and keeps its token.
        await record("stopping", "stopping-process")
        asyncio.get_running_loop().call_later(0.3, alive.discard, "stopping-process")
        assert await manager.link_token_to_sid(tokens["stopping"], "sid-2") is None
        assert await owner_of("stopping") == manager.instance_id
        # Its process deletes the record itself (its disconnect handler): the same.
        await record("cleaning", "cleaning-process")
        asyncio.get_running_loop().call_later(0.3, asyncio.ensure_future, client.delete(keys["cleaning"]))
        assert await manager.link_token_to_sid(tokens["cleaning"], "sid-3") is None
        assert await owner_of("cleaning") == manager.instance_id
        # Held by a live process past the grace: a duplicated browser tab gets a token of its own.
        await record("duplicate", "live-process")
        started = time.monotonic()
        new_token = await manager.link_token_to_sid(tokens["duplicate"], "sid-4")
        assert new_token not in (None, tokens["duplicate"])
        assert time.monotonic() - started >= 1.0
        assert await owner_of("duplicate") == "live-process"
        # Installing it twice wraps once.
        reflex_compat.keep_tokens_of_dead_processes(app, is_alive)
        assert not hasattr(manager.link_token_to_sid.__wrapped__, "__wrapped__")
    finally:
        await client.delete(*keys.values(), *([manager._get_redis_key(new_token)] if new_token else []))
        await manager.close()
