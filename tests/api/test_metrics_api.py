"""/api/metrics is for operators: a bearer token, or this host only."""

from __future__ import annotations

import httpx
import pytest

from fictures.api import build
from fictures.settings import settings


def _client(peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build(), client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://fictures.test")


@pytest.mark.parametrize(("peer", "headers", "status"), [
    ("127.0.0.1", {}, 200),
    ("::1", {}, 200),
    ("203.0.113.7", {}, 403),
    ("10.0.0.2", {}, 403),
    # Relayed by a proxy on this host: the client is not local.
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.7"}, 403),
])
async def test_without_a_token_only_local_clients_read_metrics(database, peer, headers, status):
    async with _client(peer) as client:
        r = await client.get("/api/metrics", headers=headers)
    assert r.status_code == status, r.text
    if status == 200:
        assert "fictures_events_published_total" in r.text
    else:
        assert "FICTURES_METRICS_TOKEN" in r.json()["detail"]


async def test_with_a_token_every_client_needs_it(database, monkeypatch):
    monkeypatch.setattr(settings, "metrics_token", "scrape-me-0123456789")
    async with _client("203.0.113.7") as remote, _client("127.0.0.1") as local:
        assert (await remote.get("/api/metrics")).status_code == 401
        assert (await local.get("/api/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
        r = await remote.get("/api/metrics", headers={"Authorization": "Bearer scrape-me-0123456789"})
    assert r.status_code == 200
    assert "fictures_sse_clients" in r.text
