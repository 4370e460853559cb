"""Rate limits on the REST API: logins, registrations and posts (429 with Retry-After).

Every test has client addresses of its own (`client(...)`), so the limits it
sets count nothing else. Limits are counted in the session's real Redis.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from fictures.settings import settings
from tests.factories import PASSWORD, api_story, api_user, unique


def _address() -> str:
    return f"2001:db8:{uuid.uuid4().hex[:4]}::{uuid.uuid4().hex[:4]}"


@pytest.fixture
async def client(database) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """`client(address)`: an API client whose requests come from `address`."""
    from fictures.api import build

    app = build()
    made: list[httpx.AsyncClient] = []

    def make(address: str | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address or _address(), 40000))
        made.append(httpx.AsyncClient(transport=transport, base_url="http://fictures.test"))
        return made[-1]

    yield make
    for c in made:
        await c.aclose()


def _assert_429(response: httpx.Response, needle: str, window: int) -> None:
    assert response.status_code == 429, response.text
    detail = response.json()["detail"]
    assert needle in detail and "try again in" in detail, detail
    assert 1 <= int(response.headers["Retry-After"]) <= window


async def _login(c: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await c.post("/api/auth/token", json={"username": username, "password": password})


async def test_login_is_limited_per_account_and_locks_no_other(client, api_client, monkeypatch):
    monkeypatch.setattr(settings, "login_limit_per_account", "5/minute")
    victim, bystander = await api_user(api_client), await api_user(api_client)
    attacker = client()
    codes = [(await _login(attacker, victim.username, f"guess-{i}")).status_code for i in range(5)]
    assert codes == [401] * 5
    refused = await _login(attacker, victim.username, "guess-5")
    _assert_429(refused, "too many login attempts for this account", 60)
    # Every attempt counts: the right password waits too, from anywhere, in any case.
    _assert_429(await _login(client(), victim.username, PASSWORD), "this account", 60)
    _assert_429(await _login(client(), victim.username.upper(), PASSWORD), "this account", 60)
    # Another account, even from the attacker's address, is not locked.
    assert (await _login(attacker, bystander.username, PASSWORD)).status_code == 200


async def test_200_concurrent_guesses_from_200_addresses_get_5_answers(client, api_client, monkeypatch):
    """The report: 200 wrong passwords for one account were all answered 401."""
    monkeypatch.setattr(settings, "login_limit_per_account", "5/minute")
    victim = await api_user(api_client)
    responses = await asyncio.gather(
        *(_login(client(), victim.username, f"guess-{i}") for i in range(200))
    )
    codes = [r.status_code for r in responses]
    assert codes.count(401) == 5 and codes.count(429) == 195, sorted(set(codes))
    assert all("Retry-After" in r.headers for r in responses if r.status_code == 429)


async def test_login_is_limited_per_address(client, api_client, monkeypatch):
    monkeypatch.setattr(settings, "login_limit_per_address", "4/minute")
    user = await api_user(api_client)
    address = _address()
    sprayer = client(address)
    for _ in range(4):  # one guess each at many accounts (existing or not)
        assert (await _login(sprayer, unique(), "password1")).status_code == 401
    _assert_429(await _login(sprayer, user.username, PASSWORD), "from your address", 60)
    _assert_429(await _login(client(address), unique(), "password1"), "from your address", 60)
    # The account itself was not charged: its owner logs in from elsewhere.
    assert (await _login(client(), user.username, PASSWORD)).status_code == 200


async def test_invalid_login_bodies_are_not_counted(client, api_client, monkeypatch):
    monkeypatch.setattr(settings, "login_limit_per_address", "2/minute")
    user = await api_user(api_client)
    c = client()
    for _ in range(5):
        assert (await c.post("/api/auth/token", json={"username": "x"})).status_code == 422
        assert (await c.post("/api/auth/token", content=b"{")).status_code == 400
    assert (await _login(c, user.username, PASSWORD)).status_code == 200


async def test_registration_is_limited_per_address(client, monkeypatch):
    monkeypatch.setattr(settings, "register_limit_per_address", "3/hour")
    address = _address()
    c = client(address)

    async def register(on: httpx.AsyncClient) -> httpx.Response:
        return await on.post(
            "/api/auth/register", json={"username": unique(), "password": PASSWORD}
        )

    assert [(await register(c)).status_code for _ in range(3)] == [201] * 3
    _assert_429(await register(c), "too many new accounts from your address", 3600)
    assert (await register(client())).status_code == 201


async def test_posts_are_limited_per_user(client, api_client, monkeypatch):
    monkeypatch.setattr(settings, "post_limit_per_user", "3/minute")
    author, other = await api_user(api_client), await api_user(api_client)
    story = await api_story(api_client, author)
    url = f"/api/stories/{story['id']}/posts"

    async def post(user, on: httpx.AsyncClient) -> httpx.Response:
        return await on.post(url, json={"title": "t", "body": "b"}, headers=user.headers)

    assert [(await post(author, client())).status_code for _ in range(3)] == [201] * 3
    # Per user, whatever the address.
    _assert_429(await post(author, client()), "you are posting too often", 60)
    assert (await post(other, client())).status_code == 201
    # Refused before anything is written.
    listed = (await api_client.get(url)).json()["items"]
    assert sum(p["author_id"] == author.id for p in listed) == 3


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(client, monkeypatch):
    monkeypatch.setattr(settings, "login_limit_per_address", "2/minute")
    c = client()
    for i in range(2):
        forged = {"X-Forwarded-For": f"198.51.100.{i}"}
        r = await c.post("/api/auth/token", json={"username": unique(), "password": "p"},
                         headers=forged)
        assert r.status_code == 401
    r = await c.post("/api/auth/token", json={"username": unique(), "password": "p"},
                     headers={"X-Forwarded-For": "198.51.100.99"})
    _assert_429(r, "from your address", 60)


async def test_forwarded_for_counts_from_a_trusted_proxy(client, monkeypatch):
    proxy_network = f"2001:db8:{uuid.uuid4().hex[:4]}::/48"
    proxy = proxy_network.replace("::/48", "::1")
    monkeypatch.setattr(settings, "trusted_proxies", proxy_network)
    monkeypatch.setattr(settings, "login_limit_per_address", "2/minute")
    via_proxy = client(proxy)
    first, second = _address(), _address()

    async def login_as(address: str) -> httpx.Response:
        return await via_proxy.post(
            "/api/auth/token", json={"username": unique(), "password": "p"},
            # The left-most entry is whatever the client claimed: not believed.
            headers={"X-Forwarded-For": f"203.0.113.9, {address}"},
        )

    assert [(await login_as(first)).status_code for _ in range(2)] == [401, 401]
    _assert_429(await login_as(first), "from your address", 60)
    # Every client behind the proxy has its own allowance.
    assert (await login_as(second)).status_code == 401
