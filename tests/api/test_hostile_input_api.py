"""Hostile input: deeply nested JSON, oversized bodies, unknown API paths.

Each answers a clear 4xx ``{"detail": ...}`` and logs no error.
"""

from __future__ import annotations

import json
import logging

import pytest

from fictures.api import build
from fictures.settings import settings
from tests.factories import api_post, api_story, api_user


def _nested(depth: int, opener: str = "[", closer: str = "]") -> bytes:
    return ('{"username": ' + opener * depth + closer * depth + ', "password": "x"}').encode()


def _deep_dict(depth: int) -> bytes:
    return ('{"title": ' + '{"a": ' * depth + "1" + "}" * depth + "}").encode()


@pytest.fixture
async def targets(api_client):
    """Every endpoint that parses a JSON body, with what it needs to get that far."""
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    post = await api_post(api_client, user, story["id"])
    auth = user.headers
    return [
        ("POST", "/api/auth/token", {}),
        ("POST", "/api/auth/register", {}),
        ("POST", "/api/stories", auth),
        ("PATCH", f"/api/stories/{story['id']}", auth),
        ("PUT", f"/api/stories/{story['id']}/visibility", auth),
        ("POST", f"/api/stories/{story['id']}/posts", auth),
        ("PATCH", f"/api/posts/{post['id']}", auth),
    ]


@pytest.mark.parametrize("body", [_nested(1_000), _nested(100_000), _deep_dict(5_000)],
                         ids=["list-1000", "list-100000", "object-5000"])
async def test_deeply_nested_json_is_400_without_an_error_logged(api_client, targets, body, caplog):
    with caplog.at_level(logging.WARNING):
        for method, url, headers in targets:
            response = await api_client.request(method, url, content=body, headers=headers)
            assert response.status_code == 400, (method, url, response.text)
            assert response.json() == {"detail": "body is nested too deeply"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_moderately_nested_json_is_a_plain_validation_error(api_client):
    response = await api_client.post("/api/auth/token", content=_nested(500))
    assert response.status_code == 422
    assert response.json()["detail"][0] == {"loc": ["username"], "msg": "Input should be a valid string"}


# ---------------------------------------------------------------- body size


async def _call(app, *, headers: list[tuple[bytes, bytes]], chunks: list[bytes]):
    """Drive the ASGI app directly: returns (status, body, chunks the app read)."""
    sent: list[dict] = []
    read = 0

    async def receive() -> dict:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/auth/register", "raw_path": b"/api/auth/register",
        "query_string": b"", "root_path": "", "headers": [(b"host", b"fictures.test"), *headers],
        "client": ("127.0.0.1", 40000), "server": ("fictures.test", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), read


async def test_declared_oversized_body_is_413_before_any_of_it_is_read(database):
    fifty_mb = str(50 * 1024 * 1024).encode()
    status, body, read = await _call(
        build(), headers=[(b"content-length", fifty_mb)], chunks=[b"x" * 65536] * 800
    )
    assert status == 413
    assert body == {"detail": f"request body larger than {settings.max_body_bytes} bytes"}
    assert read == 0


async def test_chunked_body_is_413_once_it_passes_the_limit(database):
    chunk = b"x" * 65536
    needed = settings.max_body_bytes // len(chunk) + 1  # the first chunk past the limit
    status, body, read = await _call(build(), headers=[], chunks=[chunk] * (needed + 100))
    assert status == 413
    assert "larger than" in body["detail"]
    assert read == needed  # stopped reading there


async def test_lying_content_length_is_caught_while_reading(database):
    chunk = b"x" * 65536
    status, _, read = await _call(
        build(), headers=[(b"content-length", b"100")], chunks=[chunk] * 100
    )
    assert status == 413
    assert read < 100


async def test_bodies_up_to_the_limit_are_read(api_client, monkeypatch):
    monkeypatch.setattr(settings, "max_body_bytes", 4096)
    padded = json.dumps({"username": "x", "password": "y" * 3000}).encode()
    assert len(padded) < 4096
    response = await api_client.post("/api/auth/token", content=padded)
    assert response.status_code == 422  # read and validated (the password is too long)
    too_big = json.dumps({"username": "x", "password": "y" * 5000}).encode()
    response = await api_client.post("/api/auth/token", content=too_big)
    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 4096 bytes"}


# ---------------------------------------------------------------- unknown paths


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/api", "/api/", "/api/nope", "/api/stories/1/comments", "/api/auth"])
async def test_unknown_api_paths_are_json_404(api_client, method, path):
    response = await api_client.request(method, path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": f"no API endpoint at {path}"}
