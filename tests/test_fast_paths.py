"""The fast path ahead of the middleware (fictures.fast_paths).

`GET`/`HEAD /api/community/events` is answered there, with the API's CORS,
request id and error answers; everything else (websockets included) goes to the
app behind. Requests here are real HTTP and websocket connections to uvicorn;
the streams run on the real Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
import websockets
from starlette.responses import PlainTextResponse

from fictures import fast_paths, ratelimit
from fictures.api import build
from tests.conftest import free_port, wait_until


class Behind:
    """The app behind the fast path: answers 'behind' and records what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    async def __call__(self, scope, receive, send) -> None:
        self.seen.append((scope["type"], scope.get("method", ""), scope.get("path", "")))
        if scope["type"] == "http":
            await PlainTextResponse("behind")(scope, receive, send)
        elif scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": "behind"})
            await send({"type": "websocket.close"})


@pytest.fixture
async def served(database) -> AsyncIterator[tuple[str, Behind]]:
    behind = Behind()
    served_app = fast_paths.ahead_of(behind, cors_origins=["https://reader.example"])
    config = uvicorn.Config(served_app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await wait_until(lambda: server.started, message="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{config.port}", behind
    finally:
        server.should_exit = True
        await task


async def _first_event(response: httpx.Response) -> list[str]:
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line and lines:
            return lines
        if line:
            lines.append(line)
    return lines


async def test_the_stream_is_served_on_the_fast_path_and_nothing_else_is(served):
    url, behind = served
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with client.stream(
            "GET", fast_paths.STREAM_PATH,
            headers={"Origin": "https://reader.example", "X-Request-ID": "lane-test-0001"},
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-request-id"] == "lane-test-0001"
            # CORS as Reflex configures it for every route: the origin echoed, credentials allowed.
            assert response.headers["access-control-allow-origin"] == "https://reader.example"
            assert response.headers["access-control-allow-credentials"] == "true"
            assert (await _first_event(response))[0] == "event: connected"
        head = await client.head(fast_paths.STREAM_PATH)
        assert head.status_code == 200 and head.content == b""
        assert behind.seen == []

        # Everything else goes on to the app behind, untouched.
        for method, path in [("GET", "/api/stories"), ("POST", fast_paths.STREAM_PATH),
                             ("OPTIONS", fast_paths.STREAM_PATH), ("GET", fast_paths.STREAM_PATH + "/")]:
            answer = await client.request(method, path)
            assert answer.text == "behind", (method, path)
        assert [(m, p) for _, m, p in behind.seen] == [
            ("GET", "/api/stories"), ("POST", fast_paths.STREAM_PATH),
            ("OPTIONS", fast_paths.STREAM_PATH), ("GET", fast_paths.STREAM_PATH + "/"),
        ]


async def test_websockets_go_on_to_the_app_behind(served):
    url, behind = served
    async with websockets.connect(f"{url.replace('http://', 'ws://')}/_event/?EIO=4&transport=websocket") as socket:
        assert await socket.recv() == "behind"
    assert behind.seen == [("websocket", "", "/_event/")]


async def test_a_refusal_on_the_fast_path_is_the_apis_json_with_a_request_id(served):
    url, _ = served
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.get(fast_paths.STREAM_PATH, params={"channels": "story:exploded"})
    assert answer.status_code == 422
    assert "story:exploded" in answer.json()["detail"]
    assert len(answer.headers["x-request-id"]) >= 8


async def test_an_error_before_the_stream_starts_is_a_json_500_not_a_trace(served, monkeypatch):
    url, _ = served

    class Broken:
        async def acquire(self, ip: str, limit: int):
            raise RuntimeError("the slot store broke")

    monkeypatch.setattr(ratelimit, "stream_slots", Broken)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        answer = await client.get(fast_paths.STREAM_PATH)
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error"}
    assert "the slot store broke" not in answer.text


async def test_the_api_app_behind_the_fast_path_still_answers_its_routes(database):
    transport = httpx.ASGITransport(app=fast_paths.ahead_of(build(), cors_origins=["*"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://fictures.test") as client:
        assert (await client.get("/api/health/live")).json() == {"status": "live"}
        assert (await client.get("/api/no-such-thing")).status_code == 404
        assert (await client.delete(fast_paths.STREAM_PATH)).status_code == 405


def test_the_app_puts_the_fast_path_ahead_of_reflexs_asgi_app(monkeypatch):
    import reflex as rx

    from fictures.fictures import app

    behind = Behind()
    # Reflex's own __call__ compiles the pages; only what wraps its result is tested here.
    monkeypatch.setattr(rx.App, "__call__", lambda self: behind)
    served = app()
    assert isinstance(served, fast_paths.FastPaths) and served.app is behind
