"""/api/health/live and /api/health/ready, against the real Redis and database."""

from __future__ import annotations

import asyncio

from fictures.events import outbox, service
from fictures.events.schema import StoryDeleted
from fictures.settings import settings
from tests.conftest import in_db, wait_until


async def test_live_answers_while_the_process_does(api_client):
    r = await api_client.get("/api/health/live")
    assert r.status_code == 200 and r.json() == {"status": "live"}


async def test_ready_needs_the_redis_subscription_and_a_short_backlog(api_client, monkeypatch):
    r = await api_client.get("/api/health/ready")
    assert r.status_code == 503
    assert "Redis subscription down" in r.json()["reasons"]

    fanout = service.fanout()
    task = asyncio.create_task(fanout.run())
    try:
        await wait_until(lambda: fanout.healthy, message="the subscription")
        r = await api_client.get("/api/health/ready")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready"}

        # An unsent outbox row over the threshold: not ready.
        monkeypatch.setattr(settings, "ready_max_backlog", 0)
        await in_db(lambda s: (outbox.record(s, StoryDeleted(story_id=999_999)), s.commit()))
        r = await api_client.get("/api/health/ready")
        assert r.status_code == 503
        assert [reason for reason in r.json()["reasons"] if reason.startswith("outbox backlog ")]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await in_db(_drop_unsent)


def _drop_unsent(session) -> None:
    from sqlmodel import delete

    from fictures.models import OutboxEvent

    session.exec(delete(OutboxEvent).where(OutboxEvent.sent_at.is_(None)))
    session.commit()


async def test_ready_is_503_once_the_process_got_its_stop_signal(api_client, monkeypatch):
    from fictures import shutdown

    monkeypatch.setattr(shutdown._process, "since", 1.0)
    r = await api_client.get("/api/health/ready")
    assert r.status_code == 503
    assert r.json() == {"status": "unavailable", "reasons": ["shutting down"]}
    assert (await api_client.get("/api/health/live")).status_code == 200
