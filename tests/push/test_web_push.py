"""Web Push end to end, without the internet: a post on your story, with no tab of
yours open, reaches a local HTTP server standing in for the push service,
encrypted for the subscription; decrypted with the browser's private key it is
the notification. Expired subscriptions are dropped, transient failures retried.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from sqlmodel import select

from fictures import db, push
from fictures.models import PushSubscription, PushSubscriptionIn, Story, User
from fictures.online import OnlineUsers
from fictures.settings import settings
from tests.conftest import in_db, wait_until
from tests.factories import make_post, make_story, make_user
from tests.push_service import Browser, PushService, new_browser

TAG = "<reflex.Var>x</reflex.Var>"


@pytest.fixture
def push_service() -> Iterator[PushService]:
    service = PushService()
    yield service
    service.close()


@pytest.fixture
async def online_users() -> AsyncIterator[OnlineUsers]:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield OnlineUsers(client, prefix=f"{settings.stream_key}:online-test-{uuid.uuid4().hex[:6]}")
    await client.aclose()


@pytest.fixture
async def worker(relay_running, online_users) -> AsyncIterator[push.PushWorker]:
    """The app's push worker on this session's private stream (a group of its own)."""
    the_worker = push.PushWorker(
        settings.redis_url, stream=relay_running.bus.private_stream_key,
        group=f"test-push-{uuid.uuid4().hex[:6]}", tabs=online_users,
    )
    await the_worker.ensure_group()
    task = asyncio.create_task(the_worker.run())
    yield the_worker
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await the_worker.close()


def _subscribe(user_id: int, service: PushService) -> Browser:
    browser = new_browser(service)
    with db.session() as s:
        push.subscribe(session=s, user=s.get(User, user_id),
                       data=PushSubscriptionIn.model_validate(browser.subscription))
    return browser


def _author_reader_story(story_title: str = "The Signal"):
    def work(session) -> tuple[int, int, int]:
        author, reader = make_user(session), make_user(session)
        return author.id, reader.id, make_story(session, author, title=story_title).id

    return work


async def _post(reader_id: int, story_id: int, title: str) -> int:
    def work(session):
        reader = session.get(User, reader_id)
        return make_post(session, reader, session.get(Story, story_id), title=title).id

    return await in_db(work)


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _verify_vapid(authorization: str, audience: str) -> dict:
    """The push service's check: a JWT signed by the key it names (ES256)."""
    scheme, _, params = authorization.partition(" ")
    assert scheme == "vapid"
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    assert fields["k"] == push.public_key()
    header, claims, signature = fields["t"].split(".")
    raw = _b64(signature)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), _b64(fields["k"]))
    public.verify(
        utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
        f"{header}.{claims}".encode(),
        ec.ECDSA(hashes.SHA256()),
    )
    decoded = json.loads(_b64(claims))
    assert decoded["aud"] == audience and decoded["sub"] == settings.vapid_subject
    return decoded


async def test_a_post_on_your_story_is_pushed_encrypted_to_your_browser(worker, push_service):
    author_id, reader_id, story_id = await in_db(_author_reader_story(story_title=f"Signal {TAG}"))
    browser = await asyncio.to_thread(_subscribe, author_id, push_service)
    other = await asyncio.to_thread(_subscribe, reader_id, push_service)

    title = f"Heard it {TAG}"
    post_id = await _post(reader_id, story_id, title)
    await wait_until(lambda: push_service.at(browser.path), message="the push")

    [request] = push_service.at(browser.path)
    assert request.headers["content-encoding"] == "aes128gcm"
    assert int(request.headers["ttl"]) == settings.push_ttl_seconds
    _verify_vapid(request.headers["authorization"], push_service.origin)
    message = browser.decrypt(request.body)
    assert message == {
        "id": message["id"],
        "title": f"New post on Signal {TAG}",
        "body": f"{(await in_db(lambda s: s.get(User, reader_id).username))}: {title}",
        "url": f"/community/story/{story_id}",
        "tag": f"fictures-notification-{message['id']}",
    }
    assert message["id"] > 0 and post_id > 0
    assert push_service.at(other.path) == []  # the poster is not notified of their own post


async def test_expired_subscriptions_are_deleted(worker, push_service):
    author_id, reader_id, story_id = await in_db(_author_reader_story())
    gone, missing, fine = [await asyncio.to_thread(_subscribe, author_id, push_service) for _ in range(3)]
    push_service.statuses[gone.path] = deque([(410, {})])
    push_service.statuses[missing.path] = deque([(404, {})])

    await _post(reader_id, story_id, "Anyone there?")

    def remaining(session):
        return sorted(s.endpoint for s in session.exec(
            select(PushSubscription).where(PushSubscription.user_id == author_id)
        ))

    async def only_the_live_one_left() -> bool:
        return await in_db(remaining) == [fine.endpoint]

    await wait_until(only_the_live_one_left, message="expired subscriptions to be deleted")
    assert fine.decrypt(push_service.at(fine.path)[0].body)["body"].endswith(": Anyone there?")
    assert len(push_service.at(gone.path)) == len(push_service.at(missing.path)) == 1  # not retried


async def test_transient_failures_are_retried_with_backoff(worker, push_service, caplog):
    author_id, reader_id, story_id = await in_db(_author_reader_story())
    browser = await asyncio.to_thread(_subscribe, author_id, push_service)
    push_service.statuses[browser.path] = deque([(503, {}), (429, {"Retry-After": "0"}), (201, {})])
    caplog.set_level(logging.INFO, logger="fictures.push")

    await _post(reader_id, story_id, "Third time lucky")
    await wait_until(lambda: len(push_service.at(browser.path)) == 3, message="three attempts")
    # Each attempt is a complete push; the last one got through.
    for request in push_service.at(browser.path):
        assert browser.decrypt(request.body)["body"].endswith(": Third time lucky")
    await wait_until(lambda: "1 delivered, 0 expired, 0 failed" in caplog.text, message="the outcome")
    assert "retry 1" in caplog.text and "retry 2" in caplog.text
    # Logs name the service's host, never the endpoint or the keys.
    assert browser.path not in caplog.text


async def test_no_push_while_the_user_has_a_tab_open(worker, push_service, online_users, caplog):
    author_id, reader_id, story_id = await in_db(_author_reader_story())
    browser = await asyncio.to_thread(_subscribe, author_id, push_service)
    caplog.set_level(logging.INFO, logger="fictures.push")
    online_users.enter("tab-token-1", author_id)
    await online_users.flush()

    await _post(reader_id, story_id, "You are here")
    await wait_until(lambda: f"user {author_id} has a tab open" in caplog.text, message="the skip")
    assert push_service.at(browser.path) == []

    # The tab closes: the next one is pushed.
    online_users.leave("tab-token-1")
    await online_users.flush()
    await _post(reader_id, story_id, "Now you are not")
    await wait_until(lambda: push_service.at(browser.path), message="the push")
    assert browser.decrypt(push_service.at(browser.path)[0].body)["body"].endswith(": Now you are not")


async def test_each_notification_is_pushed_once_by_several_workers(relay_running, online_users, push_service):
    """Every process runs a worker; the consumer group gives each entry to one of them."""
    group = f"test-push-{uuid.uuid4().hex[:6]}"
    workers = [
        push.PushWorker(settings.redis_url, stream=relay_running.bus.private_stream_key, group=group,
                        tabs=online_users)
        for _ in range(3)
    ]
    await workers[0].ensure_group()
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        author_id, reader_id, story_id = await in_db(_author_reader_story())
        browser = await asyncio.to_thread(_subscribe, author_id, push_service)
        for i in range(6):
            await _post(reader_id, story_id, f"Post {i}")
        await wait_until(lambda: len(push_service.at(browser.path)) >= 6, message="six pushes")
        bodies = sorted(browser.decrypt(r.body)["body"].rpartition(": ")[2] for r in push_service.at(browser.path))
        assert bodies == [f"Post {i}" for i in range(6)]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in workers:
            await w.close()
