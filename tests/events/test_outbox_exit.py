"""A process that stops sends its outbox first: a row committed while its relay
waited for the next sweep goes out before the event service stops."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlmodel import delete

from fictures.events import outbox, service
from fictures.events.outbox import OutboxRelay
from fictures.events.schema import StoryDeleted
from fictures.models import OutboxEvent
from fictures.settings import settings
from tests.conftest import free_port, in_db, make_bus, unsent_outbox_rows, wait_until


async def _record_without_kick(story_id: int) -> None:
    """A change committed by another process: nothing wakes this process's relay."""
    def work(session) -> None:
        outbox.record(session, StoryDeleted(story_id=story_id))
        session.commit()
    await in_db(work)


async def test_the_event_service_flushes_the_outbox_when_it_stops(database, monkeypatch, caplog):
    monkeypatch.setattr(settings, "outbox_sweep_seconds", 60.0)
    caplog.set_level(logging.INFO, logger="fictures.events.service")
    try:
        async with service.lifespan():
            await wait_until(lambda: service.fanout().healthy, message="the fan-out")
            await wait_until(lambda: not unsent_outbox_rows(), message="earlier rows to be sent")
            await _record_without_kick(880_001)
            await asyncio.sleep(0.3)
            assert len(unsent_outbox_rows()) == 1  # the relay sleeps until its next sweep
        assert unsent_outbox_rows() == []
        assert "Outbox flushed: 1 rows sent to Redis before exit" in caplog.text
    finally:
        await in_db(_drop_unsent)


async def test_without_redis_the_rows_wait_for_another_relay(database, monkeypatch, caplog):
    dead = make_bus(f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setattr(service, "relay", lambda: OutboxRelay(dead))
    await _record_without_kick(880_002)
    try:
        started = time.monotonic()
        assert await service.flush_outbox() is None
        assert time.monotonic() - started < service.FLUSH_SECONDS + 1
        assert len(unsent_outbox_rows()) == 1
        assert "Outbox not flushed before exit" in caplog.text
    finally:
        await dead.close()
        await in_db(_drop_unsent)


def _drop_unsent(session) -> None:
    session.exec(delete(OutboxEvent).where(OutboxEvent.sent_at.is_(None)))
    session.commit()
