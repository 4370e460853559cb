"""The per-address limit of /api/community/events, over real HTTP on the real Redis.

The API app runs under uvicorn in this test process; streams are real HTTP
responses held open, so the limit is checked as clients meet it: many streams
opened at once from one address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from fictures import ratelimit
from fictures.settings import settings
from tests.conftest import free_port, wait_until

LIMIT = 5


@pytest.fixture
async def server(database, monkeypatch) -> AsyncIterator[str]:
    from fictures import fast_paths
    from fictures.api import build

    monkeypatch.setattr(settings, "sse_max_per_ip", LIMIT)
    config = uvicorn.Config(fast_paths.ahead_of(build()), host="127.0.0.1", port=free_port(), lifespan="off",
                            log_level="warning")
    instance = uvicorn.Server(config)
    task = asyncio.create_task(instance.serve())
    await wait_until(lambda: instance.started, message="uvicorn to start")
    yield f"http://127.0.0.1:{config.port}"
    instance.should_exit = True
    await task


@contextlib.asynccontextmanager
async def open_streams(url: str, count: int, headers: dict | None = None):
    """`count` streams opened at once; yields (client, responses), the 200s read up
    to their `connected` event."""
    async with httpx.AsyncClient(timeout=15, limits=httpx.Limits(max_connections=count + 10)) as client:
        async def one() -> httpx.Response:
            request = client.build_request("GET", f"{url}/api/community/events", headers=headers)
            response = await client.send(request, stream=True)
            if response.status_code == 200:
                # One line iterator per stream, kept: a dropped one closes its response.
                lines = response.extensions["test_lines"] = response.aiter_lines()
                while await anext(lines) != "event: connected":
                    pass
            else:
                await response.aread()
            return response

        responses = await asyncio.gather(*(one() for _ in range(count)))
        try:
            yield client, list(responses)
        finally:
            for response in responses:
                await response.aclose()


def _leases(address: str) -> str:
    return f"{settings.stream_key}:limits:streams:{address}"


async def _held(address: str) -> int:
    return await ratelimit.stream_slots().redis.zcard(_leases(address))


async def test_sixty_streams_at_once_from_one_address_open_exactly_the_limit(server):
    """The report: 60 streams opened at once gave 39 open with a limit of 20."""
    async with open_streams(server, 60) as (_, responses):
        codes = [r.status_code for r in responses]
        assert codes.count(200) == LIMIT and codes.count(429) == 60 - LIMIT, sorted(codes)
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json() == {
            "detail": f"too many open event streams from 127.0.0.1 (limit {LIMIT})"
        }
        assert await _held("127.0.0.1") == LIMIT

        # Closing one frees its slot (once the server has seen the disconnect).
        await next(r for r in responses if r.status_code == 200).aclose()
        await wait_until(lambda: _held_below("127.0.0.1"), message="the slot to be released")
        async with open_streams(server, 3) as (_, again):
            assert sorted(r.status_code for r in again) == [200, 429, 429]
    await wait_until(lambda: _none_held("127.0.0.1"), message="every slot to be released")


async def _held_below(address: str) -> bool:
    return await _held(address) < LIMIT


async def _none_held(address: str) -> bool:
    return await _held(address) == 0


async def test_clients_behind_a_trusted_proxy_have_their_own_limit(server, monkeypatch):
    monkeypatch.setattr(settings, "trusted_proxies", "127.0.0.1")
    # In canonical form ("::255", not "::0255"), as the server names them.
    first, second = (str(ipaddress.ip_address(f"2001:db8::{uuid.uuid4().hex[:4]}")) for _ in range(2))
    async with open_streams(server, LIMIT + 2, {"X-Forwarded-For": first}) as (_, mine):
        assert [r.status_code for r in mine].count(200) == LIMIT
        assert f"from {first} " in next(r for r in mine if r.status_code == 429).json()["detail"]
        async with open_streams(server, 1, {"X-Forwarded-For": second}) as (_, theirs):
            assert theirs[0].status_code == 200
