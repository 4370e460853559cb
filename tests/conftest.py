"""Test setup: a real Redis server and a real database, then the shared fixtures.

Settings are read once, when fictures.settings is first imported, so the
environment is prepared here before anything from fictures (or rxconfig) is:

- Redis: ``REDIS_URL`` if set, otherwise an embedded Valkey for this session.
- Database: ``TEST_DATABASE_URL`` if set (PostgreSQL gets a schema of its own
  for this session, dropped at the end), otherwise a temporary SQLite file.
- Events: a stream key unique to this session. Pub/sub channel names are
  global to a Redis server, so listeners below keep only the messages that
  are in this session's stream (see `ChannelRecorder`).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid

_SESSION = uuid.uuid4().hex[:12]
_TMP = tempfile.mkdtemp(prefix="fictures-test-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_admin(url: str, statement: str):
    """Run one statement on the PostgreSQL server at `url`; returns the server's URL."""
    import sqlalchemy as sa

    base = sa.make_url(url)
    if base.drivername in ("postgresql", "postgres"):
        base = base.set(drivername="postgresql+psycopg2")
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(statement))
    admin.dispose()
    return base


def _postgres_schema_url(url: str) -> tuple[str, str]:
    """Create a schema for this session; return the URL that uses it, and its name."""
    schema = f"fictures_test_{_SESSION}"
    base = _postgres_admin(url, f'CREATE SCHEMA "{schema}"')
    scoped = base.update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False), schema


os.environ["FICTURES_ENV"] = "test"
os.environ["FICTURES_STREAM_KEY"] = f"fictures-test-{_SESSION}:events"
# Reconnects within a second, so outage tests finish quickly.
os.environ.setdefault("FICTURES_REDIS_BACKOFF_MAX", "0.5")
# Every test client has the same address: generous limits for the suite; the
# tests of the limits set their own (tests/api/test_limits_api.py).
for _name, _limit in {
    "LOGIN_LIMIT_PER_ADDRESS": "100000/minute",
    "REGISTER_LIMIT_PER_ADDRESS": "100000/minute",
    "LOGIN_LIMIT_PER_ACCOUNT": "1000/minute",
    "POST_LIMIT_PER_USER": "1000/minute",
    "READ_LIMIT_PER_ADDRESS": "100000/minute",
}.items():
    os.environ[f"FICTURES_{_name}"] = _limit
os.environ.pop("FICTURES_EMBEDDED_REDIS_URL", None)
# Web Push: a development key for the session; the push services are local test
# servers standing in for the real ones (tests/push); retries back off quickly.
os.environ["FICTURES_VAPID_KEY_FILE"] = f"{_TMP}/vapid.pem"
os.environ.pop("FICTURES_VAPID_PRIVATE_KEY", None)
os.environ["FICTURES_PUSH_SERVICES"] = "http://127.0.0.1:*"
os.environ["FICTURES_PUSH_BACKOFF_INITIAL"] = "0.05"
os.environ["FICTURES_PUSH_SUBSCRIBE_LIMIT_PER_USER"] = "1000/minute"

_PG_SCHEMA: tuple[str, str] | None = None  # (server URL, schema) to drop at the end
if _test_db := os.environ.get("TEST_DATABASE_URL"):
    if _test_db.startswith(("postgresql", "postgres")):
        _url, _schema = _postgres_schema_url(_test_db)
        _PG_SCHEMA = (_test_db, _schema)
        os.environ["DATABASE_URL"] = _url
    else:
        os.environ["DATABASE_URL"] = _test_db
else:
    os.environ["DATABASE_URL"] = f"sqlite:///{_TMP}/fictures-test.db"

from fictures.embedded_redis import EmbeddedRedis  # reads no settings

_EMBEDDED: EmbeddedRedis | None = None
if not os.environ.get("REDIS_URL"):
    _EMBEDDED = EmbeddedRedis(port=free_port()).start()
    os.environ["REDIS_URL"] = _EMBEDDED.url

# ---------------------------------------------------------------- environment ready

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

import httpx
import pytest
import redis.asyncio as aioredis
from sqlmodel import Session, SQLModel, col, func, select

from fictures import db
from fictures.events.bus import EventBus
from fictures.events.fanout import Fanout, Subscription
from fictures.events.outbox import OutboxRelay
from fictures.events.schema import CommunityEvent, is_private_channel
from fictures.models import OutboxEvent
from fictures.settings import settings

EVENT_TIMEOUT = 5.0
T = TypeVar("T")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _EMBEDDED is not None:
        _EMBEDDED.stop()
    else:
        # A shared server: remove this session's stream, sequence and dedupe keys.
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        try:
            keys = list(client.scan_iter(match=f"{os.environ['FICTURES_STREAM_KEY']}*"))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()
    if _PG_SCHEMA is not None:
        from reflex.model import get_engine

        get_engine().dispose()
        server, schema = _PG_SCHEMA
        _postgres_admin(server, f'DROP SCHEMA "{schema}" CASCADE')
    shutil.rmtree(_TMP, ignore_errors=True)


# ---------------------------------------------------------------- waiting


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = EVENT_TIMEOUT,
    interval: float = 0.02,
    message: str = "condition",
) -> None:
    """Poll `condition` (sync or async) until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- database


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[None]:
    """The schema, created once per session (the one place that creates it)."""
    from reflex.model import get_engine

    import fictures.models  # noqa: F401  (registers every table)

    SQLModel.metadata.create_all(get_engine())
    yield


@pytest.fixture
def db_session(database: None) -> Iterator[Session]:
    with db.session() as session:
        yield session


async def in_db(work: Callable[[Session], T]) -> T:
    """Run `work` with its own session in a worker thread, keeping the event loop free.

    Return plain values: ORM objects are expired once the session closes.
    """

    def run() -> T:
        with db.session() as session:
            return work(session)

    return await asyncio.to_thread(run)


def unsent_outbox_rows() -> list[OutboxEvent]:
    with db.session() as s:
        return list(s.exec(select(OutboxEvent).where(OutboxEvent.sent_at.is_(None))))


def outbox_mark() -> int:
    """The newest outbox row's id: pass it to `outbox_since` to see what came after."""
    with db.session() as s:
        return s.exec(select(func.max(OutboxEvent.id))).one() or 0


def outbox_since(mark: int) -> list[OutboxEvent]:
    with db.session() as s:
        query = select(OutboxEvent).where(OutboxEvent.id > mark).order_by(col(OutboxEvent.id))
        return list(s.exec(query))


def recorded_since(mark: int) -> list[tuple[str, dict[str, Any]]]:
    """(channel, payload) of every event recorded in the outbox after `mark`."""
    return [(row.channel, json.loads(row.payload)) for row in outbox_since(mark)]


# ---------------------------------------------------------------- Redis


def make_bus(url: str | None = None) -> EventBus:
    return EventBus(
        url or settings.redis_url, stream_key=settings.stream_key, maxlen=settings.stream_maxlen
    )


@pytest.fixture
async def bus() -> AsyncIterator[EventBus]:
    """An EventBus on the session's Redis and stream, closed after the test."""
    the_bus = make_bus()
    yield the_bus
    await the_bus.close()


@dataclass
class Running:
    bus: EventBus
    relay: OutboxRelay
    fanout: Fanout
    tasks: list[asyncio.Task] = field(default_factory=list)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.bus.close()


@contextlib.asynccontextmanager
async def run_event_service(the_bus: EventBus) -> AsyncIterator[Running]:
    """A fresh outbox relay and fan-out on `the_bus`, running in this event loop."""
    running = Running(bus=the_bus, relay=OutboxRelay(the_bus), fanout=Fanout(the_bus))
    running.tasks = [
        asyncio.create_task(running.fanout.run(), name="test-fanout"),
        asyncio.create_task(running.relay.run(), name="test-outbox-relay"),
    ]
    try:
        await running.fanout.wait_started()
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def relay_running(database: None) -> AsyncIterator[Running]:
    """The event service (relay + fan-out) on its own bus, as the app runs it."""
    async with run_event_service(make_bus()) as running:
        yield running


@dataclass
class Received:
    channel: str
    data: dict[str, Any]

    @property
    def id(self) -> int:
        return self.data["id"]


class ChannelRecorder:
    """Messages PUBLISHed on some channels, as the real Redis delivered them.

    Only messages that are in this session's streams (same id, channel and bytes;
    private events in the private stream) are kept, so other apps or test runs on
    the same server cannot interfere.
    """

    def __init__(self, the_bus: EventBus, channels: tuple[str, ...]):
        self.bus = the_bus
        self.channels = channels
        self.received: list[Received] = []
        self.foreign = 0
        self._new = asyncio.Condition()
        self._pubsub: aioredis.client.PubSub | None = None
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Self:
        # Not bus.pubsub(): that one hides the subscribe confirmations waited for here.
        self._pubsub = self.bus.redis.pubsub()
        await self._pubsub.subscribe(*self.channels)
        confirmed = 0
        while confirmed < len(self.channels):
            message = await self._pubsub.get_message(timeout=EVENT_TIMEOUT)
            assert message is not None, "no subscribe confirmation from Redis"
            confirmed += message["type"] == "subscribe"
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self._pubsub is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._pubsub.aclose()

    async def _read(self) -> None:
        assert self._pubsub is not None
        async for message in self._pubsub.listen():
            if message["type"] != "message":
                continue
            received = await self._ours(message["channel"], message["data"])
            async with self._new:
                if received is None:
                    self.foreign += 1
                else:
                    self.received.append(received)
                self._new.notify_all()

    async def _ours(self, channel: str, raw: str) -> Received | None:
        try:
            data = json.loads(raw)
            event_id = int(data["id"])
        except (ValueError, KeyError, TypeError):
            return None
        stream, _ = self.bus.keys(private=is_private_channel(channel))
        entries = await self.bus.redis.xrange(stream, min=f"{event_id}-0", max=f"{event_id}-0")
        fields = entries[0][1] if entries else {}
        if (fields.get("channel"), fields.get("data")) != (channel, raw):
            return None
        return Received(channel, data)

    def on(self, *channels: str) -> list[Received]:
        return [r for r in self.received if r.channel in channels]

    async def next(
        self,
        channel: str,
        where: Callable[[dict[str, Any]], bool] = lambda data: True,
        *,
        timeout: float = EVENT_TIMEOUT,
    ) -> dict[str, Any]:
        """The first message on `channel` matching `where` (already received or next)."""

        def find() -> dict[str, Any] | None:
            return next(
                (r.data for r in self.received if r.channel == channel and where(r.data)), None
            )

        async with self._new:
            try:
                await asyncio.wait_for(self._new.wait_for(find), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"no matching event on {channel} within {timeout}s; "
                    f"got {[(r.channel, r.data) for r in self.received]}"
                ) from None
            found = find()
            assert found is not None
            return found


async def next_event(
    sub: Subscription,
    where: Callable[[CommunityEvent], bool] = lambda event: True,
    *,
    timeout: float = EVENT_TIMEOUT,
) -> CommunityEvent:
    """The next event a fan-out subscriber gets that matches `where` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            event = await asyncio.wait_for(sub.get(), max(remaining, 0))
        except TimeoutError:
            raise AssertionError(f"no matching event within {timeout}s") from None
        assert event is not None, f"subscription closed (overflowed={sub.overflowed})"
        if where(event):
            return event


@pytest.fixture
def listen(bus: EventBus) -> Callable[..., ChannelRecorder]:
    """``async with listen("story:published", ...) as rec: ... await rec.next(channel)``."""

    def factory(*channels: str, on_bus: EventBus | None = None) -> ChannelRecorder:
        return ChannelRecorder(on_bus or bus, channels)

    return factory


@pytest.fixture
def embedded_redis() -> Iterator[Callable[..., EmbeddedRedis]]:
    """Start dedicated Valkey servers (for outage tests); all are stopped afterwards."""
    started: list[EmbeddedRedis] = []

    def start(port: int | None = None) -> EmbeddedRedis:
        # Started from this (the main) thread: the server is tied to its parent thread.
        server = EmbeddedRedis(port=port or free_port()).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# ---------------------------------------------------------------- API


@pytest.fixture
async def api_client(database: None) -> AsyncIterator[httpx.AsyncClient]:
    from fictures import fast_paths
    from fictures.api import build

    # As the app serves it: the event stream ahead of the API's middleware.
    transport = httpx.ASGITransport(app=fast_paths.ahead_of(build()))
    async with httpx.AsyncClient(transport=transport, base_url="http://fictures.test") as client:
        yield client
