"""Readiness follows the process's Redis subscription, as a load balancer sees it."""

from __future__ import annotations

import time

from tests.e2e.conftest import AppServer, http


def _ready(app_server: AppServer) -> int:
    return http.get(f"{app_server.url}/api/health/ready", timeout=5).status_code


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_ready_turns_503_while_redis_is_down_and_200_when_it_is_back(app_server: AppServer):
    assert http.get(f"{app_server.url}/api/health/live", timeout=5).status_code == 200
    _wait_for(lambda: _ready(app_server) == 200, 15, "ready")
    app_server.redis.stop()
    try:
        _wait_for(lambda: _ready(app_server) == 503, 15, "503 while Redis is down")
        body = http.get(f"{app_server.url}/api/health/ready", timeout=5).json()
        assert "Redis subscription down" in body["reasons"]
        assert http.get(f"{app_server.url}/api/health/live", timeout=5).status_code == 200
    finally:
        app_server.redis.start()
    _wait_for(lambda: _ready(app_server) == 200, 20, "ready again after Redis is back")
