"""Which processes are alive (fictures.liveness), and tabs of dead ones keep their token."""

from __future__ import annotations

import asyncio
import contextlib
import pickle
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
    has a socket record; the wrapper clears records of processes that are gone."""
    client = aioredis.Redis.from_url(settings.redis_url)
    manager = RedisTokenManager(client)
    app = types.SimpleNamespace(event_namespace=types.SimpleNamespace(_token_manager=manager))
    alive = {"live-process"}

    async def is_alive(instance_id: str) -> bool:
        return instance_id in alive

    reflex_compat.keep_tokens_of_dead_processes(app, is_alive)
    tokens = {name: str(uuid.uuid4()) for name in ("orphan", "duplicate")}
    keys = {name: manager._get_redis_key(token) for name, token in tokens.items()}
    new_token = None
    try:
        # Left by a process that died without cleaning up: the tab keeps its token.
        await client.set(keys["orphan"], pickle.dumps(SocketRecord(instance_id="dead-process", sid="old")))
        assert await manager.link_token_to_sid(tokens["orphan"], "sid-1") is None
        record = pickle.loads(await client.get(keys["orphan"]))
        assert (record.instance_id, record.sid) == (manager.instance_id, "sid-1")
        # Held by a live process: a duplicated browser tab gets a token of its own, as before.
        await client.set(keys["duplicate"], pickle.dumps(SocketRecord(instance_id="live-process", sid="other")))
        new_token = await manager.link_token_to_sid(tokens["duplicate"], "sid-2")
        assert new_token not in (None, tokens["duplicate"])
        assert pickle.loads(await client.get(keys["duplicate"])).instance_id == "live-process"
        # Installing it twice wraps once.
        reflex_compat.keep_tokens_of_dead_processes(app, is_alive)
        assert not hasattr(manager.link_token_to_sid.__wrapped__, "__wrapped__")
    finally:
        await client.delete(*keys.values(), *([manager._get_redis_key(new_token)] if new_token else []))
        await manager.close()
