"""A stopping process ends its event streams with a retry hint (fictures.shutdown
closes each stream's subscription; what is left after the grace period is
cancelled), over real HTTP on the real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from fictures import shutdown
from fictures.api import sse
from tests.conftest import free_port, wait_until


@pytest.fixture
async def server(database) -> AsyncIterator[str]:
    from fictures import fast_paths
    from fictures.api import build

    config = uvicorn.Config(fast_paths.ahead_of(build()), host="127.0.0.1", port=free_port(), lifespan="off",
                            log_level="warning")
    instance = uvicorn.Server(config)
    task = asyncio.create_task(instance.serve())
    await wait_until(lambda: instance.started, message="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        instance.should_exit = True
        await task


async def _read(client: httpx.AsyncClient, url: str, opened: asyncio.Event) -> tuple[list[str], float]:
    """Every line of one stream until it ends, and when it ended."""
    lines: list[str] = []
    async with client.stream("GET", url) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
            if line == "event: connected":
                opened.set()
    return lines, time.monotonic()


@pytest.mark.parametrize("query", ["", "?channels=story:published,presence&story_id=1"])
async def test_streams_get_a_retry_hint_and_end_when_the_process_stops(server, query):
    url = f"{server}/api/community/events{query}"
    async with httpx.AsyncClient(timeout=10) as client:
        opened = [asyncio.Event() for _ in range(3)]
        readers = [asyncio.create_task(_read(client, url, event)) for event in opened]
        for event in opened:
            await asyncio.wait_for(event.wait(), 10)
        assert sse.open_streams() == 3

        started = time.monotonic()
        closed = await shutdown.drain()
        ended = await asyncio.gather(*readers)

    assert closed == 3 and sse.open_streams() == 0
    for lines, at in ended:
        # The hint, then the end of the response (not a cut connection: that raises).
        assert "retry: 1000" in lines, lines
        assert lines.index("retry: 1000") > lines.index("event: connected")
        # Each stream leaves its live loop at once, says goodbye and ends.
        assert at - started < sse.STOP_GRACE_SECONDS
