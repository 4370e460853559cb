"""REST: each user sees and marks only their own notifications, and owns their push subscriptions."""

from __future__ import annotations

import base64
import os

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from sqlmodel import select

from fictures import push
from fictures.models import PushSubscription
from tests.conftest import in_db
from tests.factories import api_post, api_story, api_user
from tests.push_service import b64url, browser_keys


def subscription(endpoint: str | None = None) -> dict:
    _, _, keys = browser_keys()
    endpoint = endpoint or f"http://127.0.0.1:9/push/{os.urandom(8).hex()}"
    return {"endpoint": endpoint, "expirationTime": None, "keys": keys}


async def test_only_the_recipient_lists_and_marks_their_notifications(api_client: httpx.AsyncClient):
    author, reader, stranger = [await api_user(api_client) for _ in range(3)]
    story = await api_story(api_client, author)
    post = await api_post(api_client, reader, story["id"], title="First!")
    await api_post(api_client, author, story["id"])  # the author's own: no notification

    assert (await api_client.get("/api/notifications")).status_code == 401
    mine = (await api_client.get("/api/notifications", headers=author.headers)).json()
    assert mine["unread"] == 1
    [item] = mine["items"]
    assert {k: item[k] for k in ("kind", "storyId", "postId", "actor", "title", "storyTitle", "read")} == {
        "kind": "post", "storyId": story["id"], "postId": post["id"], "actor": reader.username,
        "title": "First!", "storyTitle": story["title"], "read": False,
    }
    for other in (reader, stranger):
        theirs = (await api_client.get("/api/notifications", headers=other.headers)).json()
        assert theirs == {"unread": 0, "items": [], "next": None}
        r = await api_client.post(f"/api/notifications/{item['id']}/read", headers=other.headers)
        assert r.status_code == 404 and "detail" in r.json()
        r = await api_client.post("/api/notifications/read", headers=other.headers)
        assert r.json() == {"marked": 0, "unread": 0}
    assert (await api_client.get("/api/notifications", headers=author.headers)).json()["unread"] == 1

    r = await api_client.post(f"/api/notifications/{item['id']}/read", headers=author.headers)
    assert r.status_code == 200 and r.json() == {"unread": 0}
    assert (await api_client.get("/api/notifications", headers=author.headers)).json()["items"][0]["read"]


async def test_mark_all_read_and_bad_ids(api_client: httpx.AsyncClient):
    author, reader = await api_user(api_client), await api_user(api_client)
    story = await api_story(api_client, author)
    for _ in range(3):
        await api_post(api_client, reader, story["id"])
    r = await api_client.post("/api/notifications/read", headers=author.headers)
    assert r.json() == {"marked": 3, "unread": 0}
    for bad in ("0", "-1", "abc", "99999999999", "2147483648"):
        r = await api_client.post(f"/api/notifications/{bad}/read", headers=author.headers)
        assert r.status_code == 404, bad
    r = await api_client.get("/api/notifications?limit=0", headers=author.headers)
    assert r.status_code == 422
    r = await api_client.get("/api/notifications?limit=2", headers=author.headers)
    assert len(r.json()["items"]) == 2


async def test_push_key_is_a_p256_public_key(api_client: httpx.AsyncClient):
    r = await api_client.get("/api/push/key")
    assert r.status_code == 200 and r.json()["enabled"] is True
    raw = base64.urlsafe_b64decode(r.json()["publicKey"] + "==")
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    # Generated once for the session and kept: the same key on every call.
    assert (await api_client.get("/api/push/key")).json() == r.json()
    assert push.public_key() == r.json()["publicKey"]


async def _subscriptions_of(user_id: int) -> list[str]:
    def work(session):
        return [s.endpoint for s in session.exec(
            select(PushSubscription).where(PushSubscription.user_id == user_id)
        )]

    return await in_db(work)


async def test_push_subscriptions_belong_to_their_user(api_client: httpx.AsyncClient):
    ada, bob = await api_user(api_client), await api_user(api_client)
    sub = subscription()
    assert (await api_client.post("/api/push/subscriptions", json=sub)).status_code == 401
    r = await api_client.post("/api/push/subscriptions", json=sub, headers=ada.headers)
    assert r.status_code == 201, r.text
    assert await _subscriptions_of(ada.id) == [sub["endpoint"]]

    # Bob cannot remove Ada's (nor learn whether it exists).
    r = await api_client.request("DELETE", "/api/push/subscriptions", json={"endpoint": sub["endpoint"]},
                                 headers=bob.headers)
    assert r.status_code == 404
    assert await _subscriptions_of(ada.id) == [sub["endpoint"]]

    # The same browser, logged in as Bob, saves it again: it is Bob's now.
    r = await api_client.post("/api/push/subscriptions", json=sub, headers=bob.headers)
    assert r.status_code == 201
    assert (await _subscriptions_of(ada.id), await _subscriptions_of(bob.id)) == ([], [sub["endpoint"]])

    r = await api_client.request("DELETE", "/api/push/subscriptions", json={"endpoint": sub["endpoint"]},
                                 headers=bob.headers)
    assert r.status_code == 204
    assert await _subscriptions_of(bob.id) == []


async def test_a_user_keeps_at_most_ten_subscriptions(api_client: httpx.AsyncClient):
    ada = await api_user(api_client)
    subs = [subscription() for _ in range(push.MAX_SUBSCRIPTIONS_PER_USER + 2)]
    for sub in subs:
        assert (await api_client.post("/api/push/subscriptions", json=sub, headers=ada.headers)).status_code == 201
    kept = await _subscriptions_of(ada.id)
    assert sorted(kept) == sorted(s["endpoint"] for s in subs[2:])


async def test_subscriptions_are_validated_at_the_boundary(api_client: httpx.AsyncClient):
    ada = await api_user(api_client)
    good = subscription()
    bad_bodies = [
        {**good, "endpoint": "http://10.0.0.5/internal"},  # not a push service: never POSTed to
        {**good, "endpoint": "http://localhost:6379/"},
        {**good, "endpoint": "https://fcm.googleapis.com.evil.example/x"},
        {**good, "endpoint": "http://user:pw@127.0.0.1:9/x"},
        {**good, "endpoint": "ftp://127.0.0.1:9/x"},
        {**good, "endpoint": "http://127.0.0.1:9/" + "x" * 3000},
        {**good, "endpoint": "<reflex.Var>x</reflex.Var>"},
        {**good, "keys": {"p256dh": "not base64!", "auth": good["keys"]["auth"]}},
        {**good, "keys": {"p256dh": b64url(b"\x04" + b"\x01" * 64), "auth": good["keys"]["auth"]}},
        {**good, "keys": {"p256dh": good["keys"]["p256dh"], "auth": b64url(b"short")}},
        {**good, "keys": {"p256dh": good["keys"]["p256dh"]}},
        {"endpoint": good["endpoint"]},
        {**good, "endpoint": "http://127.0.0.1:9/a\x00b"},
    ]
    for body in bad_bodies:
        r = await api_client.post("/api/push/subscriptions", json=body, headers=ada.headers)
        assert r.status_code == 422, (body, r.text)
        assert "detail" in r.json()
    for raw in (b"[]", b"not json", b""):
        r = await api_client.post("/api/push/subscriptions", content=raw, headers=ada.headers)
        assert r.status_code == 400
    r = await api_client.request("DELETE", "/api/push/subscriptions", headers=ada.headers)
    assert r.status_code == 400
    assert await _subscriptions_of(ada.id) == []
