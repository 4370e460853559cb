"""POST /api/auth/register and /api/auth/token."""

import asyncio

import pytest

from tests.factories import PASSWORD, api_story, api_user, story_body, unique


async def test_register_returns_the_account_without_secrets(api_client):
    username = unique()
    response = await api_client.post(
        "/api/auth/register", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "username": username}
    assert isinstance(body["id"], int) and body["id"] > 0


async def test_register_taken_username_is_409(api_client):
    user = await api_user(api_client)
    response = await api_client.post(
        "/api/auth/register", json={"username": user.username, "password": "another-password"}
    )
    assert response.status_code == 409
    assert user.username in response.json()["detail"]


async def test_concurrent_registrations_of_one_name_create_exactly_one_account(api_client):
    credentials = {"username": unique(), "password": PASSWORD}
    responses = await asyncio.gather(
        *(api_client.post("/api/auth/register", json=credentials) for _ in range(6))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 409, 409, 409, 409, 409], [r.text for r in responses]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"username": "ab", "password": PASSWORD}, "username"),
        ({"username": "has space", "password": PASSWORD}, "username"),
        ({"username": "x" * 33, "password": PASSWORD}, "username"),
        ({"username": unique(), "password": "short"}, "password"),
        ({"username": unique()}, "password"),
        ({"username": unique(), "password": PASSWORD, "admin": True}, "admin"),
    ],
)
async def test_register_invalid_fields_are_422_with_readable_detail(api_client, payload, field):
    response = await api_client.post("/api/auth/register", json=payload)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    assert all(set(err) == {"loc", "msg"} for err in detail)
    assert [field] in [err["loc"] for err in detail]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"', b"\xff\xfe"])
async def test_register_malformed_body_is_400(api_client, raw):
    response = await api_client.post(
        "/api/auth/register", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "body must be a JSON object"}


async def test_token_is_a_bearer_that_authorizes_writes(api_client):
    user = await api_user(api_client)
    response = await api_client.post(
        "/api/auth/token", json={"username": user.username, "password": PASSWORD}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["token"] != user.token  # each login is its own token
    created = await api_client.post(
        "/api/stories", json=story_body(), headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert created.status_code == 201
    assert created.json()["author_id"] == user.id


@pytest.mark.parametrize("wrong", ["password", "username"])
async def test_token_with_wrong_credentials_is_401(api_client, wrong):
    user = await api_user(api_client)
    credentials = {"username": user.username, "password": PASSWORD}
    credentials[wrong] = "not-the-right-one" if wrong == "password" else unique()
    response = await api_client.post("/api/auth/token", json=credentials)
    assert response.status_code == 401
    assert response.json() == {"detail": "wrong username or password"}
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_token_malformed_body_is_400(api_client):
    response = await api_client.post("/api/auth/token", content=b"username=a&password=b")
    assert response.status_code == 400


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not-a-real-token"],
)
async def test_writes_without_a_valid_bearer_are_401(api_client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await api_client.post("/api/stories", json=story_body(), headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "detail" in response.json()


async def test_scheme_is_case_insensitive(api_client):
    user = await api_user(api_client)
    response = await api_client.post(
        "/api/stories", json=story_body(), headers={"Authorization": f"bearer {user.token}"}
    )
    assert response.status_code == 201


async def test_every_write_endpoint_requires_a_bearer(api_client):
    owner = await api_user(api_client)
    story = await api_story(api_client, owner)
    post = (
        await api_client.post(
            f"/api/stories/{story['id']}/posts",
            json={"title": "t", "body": "b"},
            headers=owner.headers,
        )
    ).json()
    writes = [
        ("POST", "/api/stories", story_body()),
        ("PATCH", f"/api/stories/{story['id']}", {"title": "New"}),
        ("PUT", f"/api/stories/{story['id']}/visibility", {"status": "draft"}),
        ("DELETE", f"/api/stories/{story['id']}", None),
        ("POST", f"/api/stories/{story['id']}/posts", {"title": "t", "body": "b"}),
        ("PATCH", f"/api/posts/{post['id']}", {"title": "New"}),
        ("DELETE", f"/api/posts/{post['id']}", None),
    ]
    for method, url, body in writes:
        response = await api_client.request(method, url, json=body)
        assert response.status_code == 401, (method, url, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
    # Nothing changed.
    still = await api_client.get(f"/api/stories/{story['id']}")
    assert still.json()["title"] == story["title"]
    assert still.json()["status"] == "published"


# ---------------------------------------------------------------- passwords and usernames


async def test_password_whitespace_is_part_of_the_password(api_client):
    """The report: "abcdefgh  " logged in as "abcdefgh" (both were stripped)."""
    username = unique()
    registered = await api_client.post(
        "/api/auth/register", json={"username": username, "password": "abcdefgh"}
    )
    assert registered.status_code == 201
    for variant in ("abcdefgh  ", "  abcdefgh", "abcdefgh\t"):
        response = await api_client.post(
            "/api/auth/token", json={"username": username, "password": variant}
        )
        assert response.status_code == 401, variant
    spaced = unique()
    await api_client.post("/api/auth/register", json={"username": spaced, "password": " pass word "})
    ok = await api_client.post("/api/auth/token", json={"username": spaced, "password": " pass word "})
    assert ok.status_code == 200
    trimmed = await api_client.post("/api/auth/token", json={"username": spaced, "password": "pass word"})
    assert trimmed.status_code == 401


async def test_register_refuses_a_password_of_only_spaces(api_client):
    response = await api_client.post(
        "/api/auth/register", json={"username": unique(), "password": " " * 12}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == [{"loc": ["password"], "msg": "Value error, must not be only spaces"}]


@pytest.mark.parametrize("password", ["x", "short", " "])
async def test_login_with_a_short_wrong_password_is_401(api_client, password):
    user = await api_user(api_client)
    response = await api_client.post(
        "/api/auth/token", json={"username": user.username, "password": password}
    )
    assert response.status_code == 401
    assert response.json() == {"detail": "wrong username or password"}


@pytest.mark.parametrize("password", ["", "x" * 257])
async def test_login_password_out_of_bounds_is_422(api_client, password):
    response = await api_client.post(
        "/api/auth/token", json={"username": unique(), "password": password}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["password"]


async def test_a_case_variant_of_a_taken_username_is_409(api_client):
    name = unique("Ada")
    first = await api_client.post("/api/auth/register", json={"username": name, "password": PASSWORD})
    assert first.status_code == 201
    for variant in (name.upper(), name.lower()):
        response = await api_client.post(
            "/api/auth/register", json={"username": variant, "password": PASSWORD}
        )
        assert response.status_code == 409, variant
        assert response.json() == {
            "detail": f"the username {variant!r} is taken (usernames ignore case)"
        }


async def test_concurrent_case_variants_create_exactly_one_account(api_client):
    """The check before the insert races; the unique index on lower(username) does not."""
    name = unique("Race")
    variants = [name.upper(), name.lower(), name, name.swapcase(), name.title(), name.upper()]
    responses = await asyncio.gather(
        *(api_client.post("/api/auth/register", json={"username": v, "password": PASSWORD})
          for v in variants)
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201, 409, 409, 409, 409, 409], [r.text for r in responses]


async def test_login_ignores_username_case(api_client):
    user = await api_user(api_client)
    for variant in (user.username.upper(), user.username.swapcase()):
        response = await api_client.post(
            "/api/auth/token", json={"username": variant, "password": PASSWORD}
        )
        assert response.status_code == 200, variant
        me = await api_client.post(
            "/api/stories", json=story_body(),
            headers={"Authorization": f"Bearer {response.json()['token']}"},
        )
        assert me.json()["author"] == user.username  # the account as registered
