"""Web Push: VAPID keys, users' push subscriptions, and the worker that sends pushes.

- **Keys.** Pushes are signed with a VAPID key (`FICTURES_VAPID_PRIVATE_KEY`). In
  development and tests, without one, a key is generated once and kept in
  `FICTURES_VAPID_KEY_FILE` (created atomically, mode 0600), so subscriptions
  survive restarts and every worker uses the same key. In production Web Push
  stays off until the key is set. The private key is never logged.
- **Subscriptions** (`PushSubscription`) belong to the user who saved them; an
  endpoint saved again (the same browser, logged in as someone else) moves to
  the new user. Endpoints must be on a known push service (see
  `models.push_endpoint_problem`): the worker POSTs to them.
- **The worker** (a lifespan task per process) reads the private event stream
  through a Redis consumer group, so each `NotificationCreated` is handled by
  one process only, and one that dies before acknowledging an entry has it
  claimed by another after `CLAIM_IDLE_SECONDS`. A user with an open tab
  anywhere (fictures.online) gets no push: the tab shows the notification.
  Transient failures (network, 429, 5xx) are retried with exponential backoff
  (Retry-After honoured); a subscription the push service says is gone (404,
  410) is deleted.

Logs name a push service by its host only: an endpoint is a capability, and
the keys are secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
import requests
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid, Vapid01, b64urlencode
from pywebpush import WebPushException, webpush
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from fictures import db, metrics, online
from fictures.errors import NotFound
from fictures.events.schema import MalformedEvent, NotificationCreated, parse_event
from fictures.models import PushSubscription, PushSubscriptionIn, User, utcnow
from fictures.settings import redis_url, settings

logger = logging.getLogger(__name__)

# A user keeps at most this many subscriptions (browsers); the oldest go first.
MAX_SUBSCRIPTIONS_PER_USER = 10
# A pending stream entry idle this long belongs to a consumer that died: claimed.
CLAIM_IDLE_SECONDS = 600
_REQUEST_TIMEOUT = 10
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def service_host(endpoint: str) -> str:
    """What a log may say about an endpoint: its push service's host."""
    return urlsplit(endpoint).hostname or "?"


# ------------------------------------------------------------------ VAPID keys


def _load_key(text: str) -> Vapid01:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        return Vapid.from_pem(text.encode())
    return Vapid.from_string(text)


def _key_file() -> Vapid01:
    path = Path(settings.vapid_key_file)
    if not path.exists():
        fresh = Vapid()
        fresh.generate_keys()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".vapid-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(fresh.private_pem())
            # Atomic and never overwrites: of several workers starting at once,
            # the first one's key wins and the others read it.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
                logger.info("Generated a development VAPID key in %s", path)
        finally:
            os.unlink(tmp)
    return _load_key(path.read_text())


@cache
def vapid() -> Vapid01 | None:
    """The key that signs pushes, or None while Web Push is off (production without a key)."""
    if settings.vapid_private_key:
        return _load_key(settings.vapid_private_key)
    if settings.env == "production":
        logger.warning("Web Push is off: set FICTURES_VAPID_PRIVATE_KEY to turn it on")
        return None
    return _key_file()


def public_key() -> str | None:
    """The application server key browsers subscribe with (base64url), or None."""
    key = vapid()
    if key is None:
        return None
    raw = key.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64urlencode(raw)


# ------------------------------------------------------------------ subscriptions


def subscribe(*, session: Session, user: User, data: PushSubscriptionIn) -> PushSubscription:
    """Save (or move to `user`) a browser's subscription."""
    try:
        return _subscribe(session, user, data)
    except IntegrityError:
        # The same endpoint saved at the same moment by another request (the
        # unique index stopped the second insert): it exists now, update it.
        session.rollback()
        return _subscribe(session, user, data)


def _subscribe(session: Session, user: User, data: PushSubscriptionIn) -> PushSubscription:
    row = session.exec(
        select(PushSubscription).where(PushSubscription.endpoint == data.endpoint)
    ).first()
    if row is None:
        row = PushSubscription(user_id=user.id, endpoint=data.endpoint,
                               p256dh=data.keys.p256dh, auth=data.keys.auth)
    else:
        row.user_id, row.p256dh, row.auth, row.created_at = (
            user.id, data.keys.p256dh, data.keys.auth, utcnow()
        )
    session.add(row)
    session.flush()
    kept = select(PushSubscription.id).where(PushSubscription.user_id == user.id).order_by(
        col(PushSubscription.created_at).desc(), col(PushSubscription.id).desc()
    )
    ids = list(session.exec(kept))
    if len(ids) > MAX_SUBSCRIPTIONS_PER_USER:
        session.exec(delete(PushSubscription).where(
            col(PushSubscription.id).in_(ids[MAX_SUBSCRIPTIONS_PER_USER:])
        ))
    session.commit()
    session.refresh(row)
    logger.info("User %s subscribed to pushes via %s", user.id, service_host(row.endpoint))
    return row


def unsubscribe(*, session: Session, user: User, endpoint: str) -> None:
    """Forget one of `user`'s subscriptions (someone else's is a 404, like a missing one)."""
    row = session.exec(
        select(PushSubscription).where(
            PushSubscription.endpoint == endpoint, PushSubscription.user_id == user.id
        )
    ).first()
    if row is None:
        raise NotFound("no such push subscription")
    session.delete(row)
    session.commit()
    logger.info("User %s unsubscribed from pushes via %s", user.id, service_host(endpoint))


def subscriptions_of(user_id: int) -> list[PushSubscription]:
    with db.session() as s:
        rows = list(s.exec(select(PushSubscription).where(PushSubscription.user_id == user_id)))
        for row in rows:
            s.expunge(row)
        return rows


def _drop(subscription_id: int, endpoint: str) -> None:
    with db.session() as s:
        s.exec(delete(PushSubscription).where(
            PushSubscription.id == subscription_id, PushSubscription.endpoint == endpoint
        ))
        s.commit()


# ------------------------------------------------------------------ sending


def payload(event: NotificationCreated) -> dict[str, Any]:
    """What the service worker shows (assets/push-sw.js): plain text only."""
    return {
        "id": event.notification_id,
        "title": f"New post on {event.story_title}",
        "body": f"{event.actor}: {event.title}",
        "url": f"/community/story/{event.story_id}",
        "tag": f"fictures-notification-{event.notification_id}",
    }


@dataclass
class Outcome:
    delivered: int = 0
    expired: int = 0
    failed: int = 0


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def _retry_after(exc: WebPushException) -> float | None:
    try:
        return float(exc.retry_after) if exc.retry_after else None
    except ValueError:
        return None  # an HTTP date: our own backoff will do


def _send(key: Vapid01, sub: PushSubscription, body: str) -> str:
    """One attempt: "delivered" or "expired"; raises _Transient or WebPushException."""
    info = {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}}
    try:
        webpush(
            info,
            data=body,
            vapid_private_key=key,
            vapid_claims={"sub": settings.vapid_subject},  # a fresh dict: webpush fills it in
            ttl=settings.push_ttl_seconds,
            timeout=_REQUEST_TIMEOUT,
        )
    except WebPushException as exc:
        status = exc.status_code
        if status in (404, 410):
            return "expired"
        if status is None or status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}", _retry_after(exc)) from None
        raise
    except requests.RequestException as exc:
        raise _Transient(type(exc).__name__) from None
    return "delivered"


async def send_to(sub: PushSubscription, body: str, key: Vapid01) -> str:
    """Send one push, retrying transient failures: "delivered", "expired" or "failed"."""
    host = service_host(sub.endpoint)
    backoff = settings.push_backoff_initial
    for attempt in range(1, settings.push_attempts + 1):
        try:
            result = await asyncio.to_thread(_send, key, sub, body)
        except _Transient as exc:
            if attempt == settings.push_attempts:
                logger.warning("Push via %s failed %d times (%s); giving up", host, attempt, exc)
                return "failed"
            wait = min(exc.retry_after or backoff * random.uniform(0.8, 1.2), settings.push_backoff_max)
            logger.info("Push via %s failed (%s); retry %d in %.1fs", host, exc, attempt, wait)
            await asyncio.sleep(wait)
            backoff = min(backoff * 2, settings.push_backoff_max)
            continue
        except WebPushException as exc:
            logger.warning("Push via %s refused (HTTP %s); not retried", host, exc.status_code)
            return "failed"
        if result == "expired":
            await asyncio.to_thread(_drop, sub.id, sub.endpoint)
            logger.info("Push subscription via %s has expired; deleted", host)
        return result
    return "failed"


async def push_notification(event: NotificationCreated, key: Vapid01) -> Outcome:
    """Push `event` to every browser its recipient subscribed."""
    outcome = Outcome()
    subs = await asyncio.to_thread(subscriptions_of, event.user_id)
    if not subs:
        return outcome
    body = json.dumps(payload(event))
    for result in await asyncio.gather(*(send_to(sub, body, key) for sub in subs)):
        setattr(outcome, result, getattr(outcome, result) + 1)
        metrics.PUSHES.labels(result).inc()
    logger.info(
        "Pushed notification #%s to user %s: %d delivered, %d expired, %d failed",
        event.notification_id, event.user_id, outcome.delivered, outcome.expired, outcome.failed,
    )
    return outcome


class PushWorker:
    """Reads the private event stream as one consumer of a group shared by every
    process, and pushes each notification whose recipient has no open tab."""

    def __init__(self, url: str, *, stream: str, group: str = "fictures-push",
                 tabs: online.OnlineUsers | None = None, concurrency: int = 32):
        self.stream = stream
        self.group = group
        self.consumer = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=2, socket_timeout=10
        )
        self.tabs = tabs
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task] = set()
        self._warned = False

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()

    async def ensure_group(self, start: str = "$") -> None:
        """Create the consumer group if it does not exist (at `start`: "$" now, "0" all)."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        """Until cancelled; a Redis outage is waited out with capped backoff."""
        key = vapid()
        if key is None:
            return
        backoff = settings.redis_backoff_initial
        start = "$"  # the first start: history before the group is not pushed
        while True:
            try:
                await self.ensure_group(start)
                if self._warned:
                    logger.info("Push worker reconnected to Redis")
                self._warned = False
                await self._claim_abandoned(key)
                while True:
                    got = await self.redis.xreadgroup(
                        self.group, self.consumer, {self.stream: ">"}, count=50, block=1000
                    )
                    for _, entries in got or ():
                        for entry in entries:
                            await self._take(entry, key)
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    logger.exception("Push worker: unexpected answer from Redis; retrying")
                    await asyncio.sleep(settings.redis_backoff_max)
                    continue
                # Redis lost its data (a restart without persistence): the stream
                # was created again since, so everything in it is new.
                logger.warning("Push worker's consumer group is gone; created again")
                start = "0"
            except _REDIS_DOWN as exc:
                if not self._warned:
                    self._warned = True
                    logger.warning("Push worker cannot reach Redis (%s); retrying", exc)
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, settings.redis_backoff_max)
                continue
            except Exception:
                # A bug, not an outage: say so, and keep the worker alive.
                logger.exception("Push worker failed; restarting it")
                await asyncio.sleep(settings.redis_backoff_max)
                continue
            backoff = settings.redis_backoff_initial

    async def _claim_abandoned(self, key: Vapid01) -> None:
        cursor = "0-0"
        while True:
            cursor, entries, *_ = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, CLAIM_IDLE_SECONDS * 1000,
                start_id=cursor, count=100,
            )
            for entry in entries:
                await self._take(entry, key)
            if cursor == "0-0":
                return

    async def _take(self, entry: tuple[str, dict[str, str]], key: Vapid01) -> None:
        entry_id, fields = entry
        event = None
        if fields.get("channel") == NotificationCreated.channel:
            try:
                event = parse_event(fields["channel"], fields.get("data", ""))
            except MalformedEvent as exc:
                logger.warning("Skipped a malformed notification in the stream: %s", exc)
        if not isinstance(event, NotificationCreated):
            await self.redis.xack(self.stream, self.group, entry_id)
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(entry_id, event, key))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("Pushing a notification failed", exc_info=exc)

    async def _handle(self, entry_id: str, event: NotificationCreated, key: Vapid01) -> None:
        if self.tabs is not None and await self.tabs.tabs(event.user_id) > 0:
            metrics.PUSHES.labels("skipped").inc()
            logger.info("No push for notification #%s: user %s has a tab open",
                        event.notification_id, event.user_id)
        else:
            await push_notification(event, key)
        with contextlib.suppress(*_REDIS_DOWN):
            # Unacknowledged (Redis down): claimed again later; a repeat shows
            # once in the browser (same notification tag).
            await self.redis.xack(self.stream, self.group, entry_id)


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """The process's push worker (nothing runs while Web Push is off)."""
    if await asyncio.to_thread(vapid) is None:
        yield
        return
    worker = PushWorker(redis_url(), stream=f"{settings.stream_key}:private", tabs=online.tracker())
    task = asyncio.create_task(worker.run(), name="fictures-push")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()
