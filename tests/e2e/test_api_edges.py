"""Hostile input and abuse limits against the running app (Granian, production mode).

Checks what only the real server shows: Reflex's catch-all page behind unknown
API paths, an oversized body refused before the server has it all, and no
traceback in the log for any of it (the autouse fixture fails a test on one).
"""

from __future__ import annotations

import socket
import uuid
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import LOGIN_LIMIT_PER_ACCOUNT, AppServer, http


def _raw_http(app_server: AppServer, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send a request's head and some body bytes on a socket; return what the server
    answered (up to the end of its response or its closing the connection)."""
    url = urlsplit(app_server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed while we were still sending
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and received.rstrip().endswith(b"}"):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    return received


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("path", ["/api/nothing-here", "/api/stories/1/comments", "/api"])
def test_unknown_api_paths_answer_json_404_not_the_html_page(app_server: AppServer, method, path):
    r = http.request(method, f"{app_server.url}{path}", timeout=10)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"detail": f"no API endpoint at {path}"}
    # Known API paths and pages are untouched.
    assert http.put(f"{app_server.url}/api/stories", timeout=10).status_code == 405
    page = http.get(f"{app_server.url}/community", timeout=10, follow_redirects=True)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_declared_50_mb_body_is_413_before_it_is_sent(app_server: AppServer):
    host = urlsplit(app_server.url).netloc.encode()
    head = (b"POST /api/auth/register HTTP/1.1\r\nHost: " + host + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 52428800\r\n\r\n")
    # Only the head and 1 KiB: the answer must not wait for the other 50 MB.
    raw = _raw_http(app_server, head, [b" " * 1024])
    assert _status(raw) == 413, raw[:300]
    assert b"request body larger than 2097152 bytes" in raw


def test_chunked_body_over_the_limit_is_413(app_server: AppServer):
    host = urlsplit(app_server.url).netloc.encode()
    head = (b"POST /api/auth/token HTTP/1.1\r\nHost: " + host + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    raw = _raw_http(app_server, head, [framed] * 40)  # 2.5 MiB, never terminated
    assert _status(raw) == 413, raw[:300]
    assert b"request body larger than" in raw


@pytest.mark.parametrize("path", ["/api/auth/token", "/api/auth/register", "/api/stories"])
def test_deeply_nested_json_is_400_and_logs_no_traceback(app_server: AppServer, path):
    _, token = app_server.register()
    body = '{"username": ' + "[" * 1000 + "]" * 1000 + ', "password": "x"}'
    r = app_server.api("POST", path, token, content=body)
    assert r.status_code == 400
    assert r.json() == {"detail": "body is nested too deeply"}


def test_login_throttled_per_account_with_retry_after(app_server: AppServer):
    victim, _ = app_server.register()
    bystander, _ = app_server.register()
    url = f"{app_server.url}/api/auth/token"
    for i in range(LOGIN_LIMIT_PER_ACCOUNT - 1):  # register() logged in once
        r = http.post(url, json={"username": victim, "password": f"guess-{i}"}, timeout=10)
        assert r.status_code == 401
    r = http.post(url, json={"username": victim.upper(), "password": "password123"}, timeout=10)
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert "too many login attempts for this account" in r.json()["detail"]
    ok = http.post(url, json={"username": bystander, "password": "password123"}, timeout=10)
    assert ok.status_code == 200


def test_case_variant_username_is_409(app_server: AppServer):
    name = f"Case_{uuid.uuid4().hex[:8]}"
    app_server.register(name)
    r = http.post(f"{app_server.url}/api/auth/register",
                   json={"username": name.lower(), "password": "password123"}, timeout=10)
    assert r.status_code == 409
    assert "ignore case" in r.json()["detail"]
