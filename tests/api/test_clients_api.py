"""What API clients expect: logging out a token, `GET /api/me`, cursor pages
with `next` links, story lists without content, HEAD, the schema and the docs."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from fictures.models import Story
from tests.conftest import in_db
from tests.factories import PASSWORD, api_post, api_story, api_user, make_story, make_user

# ---------------------------------------------------------------- accounts


async def test_logging_out_revokes_only_the_token_sent(api_client):
    user = await api_user(api_client)
    login = await api_client.post("/api/auth/token", json={"username": user.username, "password": PASSWORD})
    other_token = {"Authorization": f"Bearer {login.json()['token']}"}

    response = await api_client.delete("/api/auth/token", headers=user.headers)
    assert response.status_code == 204 and response.content == b""

    gone = await api_client.get("/api/me", headers=user.headers)
    assert gone.status_code == 401 and gone.headers["WWW-Authenticate"] == "Bearer"
    again = await api_client.delete("/api/auth/token", headers=user.headers)
    assert again.status_code == 401
    assert again.json() == {"detail": "a valid bearer token is required"}
    # The account's other login goes on working.
    assert (await api_client.get("/api/me", headers=other_token)).json()["id"] == user.id


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic dXNlcjpwYXNz"])
async def test_logging_out_without_a_valid_token_is_401(api_client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await api_client.delete("/api/auth/token", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_me_is_the_bearers_account(api_client):
    user = await api_user(api_client)
    response = await api_client.get("/api/me", headers=user.headers)
    assert response.status_code == 200
    me = response.json()
    assert set(me) == {"id", "username", "created_at"}
    assert (me["id"], me["username"]) == (user.id, user.username)
    assert (await api_client.get("/api/me")).status_code == 401


# ---------------------------------------------------------------- pages

TEXT = "A long chapter. " * 40 + "The end."


def _query(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    assert not parts.scheme and not parts.netloc  # a path and query, relative to the API's host
    return {name: values[-1] for name, values in parse_qs(parts.query).items()}


async def _walk(api_client, url: str, headers=None, **params) -> list[dict]:
    """Every page from `url` on, following `next`; returns the pages' bodies."""
    pages = [(await api_client.get(url, params=params, headers=headers)).json()]
    while pages[-1]["next"] is not None:
        assert len(pages) < 50, "next never ran out"
        response = await api_client.get(pages[-1]["next"], headers=headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
    return pages


async def test_story_pages_follow_next_newest_first_without_content(api_client):
    user = await api_user(api_client)
    genre = "literary"
    mine = [await api_story(api_client, user, genre=genre, content=TEXT) for _ in range(5)]
    await api_story(api_client, user, genre=genre, status="draft")

    first = (await api_client.get("/api/stories", params={"genre": genre, "limit": 2})).json()
    assert [s["id"] for s in first["items"]] == [mine[4]["id"], mine[3]["id"]]
    assert _query(first["next"]) == {"genre": genre, "limit": "2", "before": str(mine[3]["id"])}
    for item in first["items"]:
        assert "content" not in item and item["summary"] == "Who did it?"

    pages = await _walk(api_client, "/api/stories", genre=genre, limit=2)
    listed = [s["id"] for page in pages for s in page["items"]]
    assert len(listed) == len(set(listed))  # no story twice
    assert [i for i in listed if i in {s["id"] for s in mine}] == [s["id"] for s in reversed(mine)]
    assert {s["genre"] for page in pages for s in page["items"]} == {genre}
    everything = (await api_client.get("/api/stories", params={"genre": genre, "limit": 100})).json()
    if everything["next"] is None:
        assert [s["id"] for s in everything["items"]] == listed
    # The story itself has the content.
    full = (await api_client.get(f"/api/stories/{mine[0]['id']}")).json()
    assert full["content"] == TEXT


async def test_a_page_that_ends_the_list_has_no_next(api_client):
    response = await api_client.get("/api/stories", params={"limit": 100})
    body = response.json()
    if len(body["items"]) < 100:
        assert body["next"] is None
    author = await api_user(api_client)
    story = await api_story(api_client, author)
    posts = [await api_post(api_client, author, story["id"]) for _ in range(2)]
    exact = (await api_client.get(f"/api/stories/{story['id']}/posts", params={"limit": 2})).json()
    assert [p["id"] for p in exact["items"]] == [p["id"] for p in reversed(posts)]
    assert exact["next"] is None  # exactly a page: no empty page after it


async def test_a_cursor_story_deleted_meanwhile_is_404(api_client):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    await api_client.delete(f"/api/stories/{story['id']}", headers=user.headers)
    never_published = await api_story(api_client, user, status="draft")
    for before in (story["id"], never_published["id"], 2147483647):
        response = await api_client.get("/api/stories", params={"before": before})
        assert response.status_code == 404
        assert response.json() == {
            "detail": f"story {before} not found (the before= cursor): list from the first page again"
        }


async def test_an_unpublished_cursor_story_still_marks_its_place(api_client):
    user = await api_user(api_client)
    older, cursor = await api_story(api_client, user), await api_story(api_client, user)
    await api_client.put(f"/api/stories/{cursor['id']}/visibility", json={"status": "draft"}, headers=user.headers)
    page = (await api_client.get("/api/stories", params={"before": cursor["id"], "limit": 100})).json()
    ids = [s["id"] for s in page["items"]]
    assert older["id"] in ids and cursor["id"] not in ids


async def test_stories_published_at_the_same_instant_are_paged_by_id(api_client):
    """The cursor is (published_at, id): ties neither repeat nor skip a story."""

    def arrange(session) -> list[int]:
        author = make_user(session)
        rows = [make_story(session, author, genre="historical") for _ in range(4)]
        instant = max(r.published_at for r in rows) + timedelta(days=3650)
        for row in rows:
            row.published_at = instant  # the newest of all, and all at once
            session.add(row)
        session.commit()
        return [r.id for r in rows]

    ids = await in_db(arrange)
    pages = [(await api_client.get("/api/stories", params={"limit": 3})).json()]
    pages.append((await api_client.get(pages[0]["next"])).json())
    listed = [s["id"] for page in pages for s in page["items"]][:4]
    assert listed == sorted(ids, reverse=True)

    def tidy(session) -> None:
        for story_id in ids:
            session.delete(session.get(Story, story_id))
        session.commit()

    await in_db(tidy)


async def test_post_pages(api_client):
    author = await api_user(api_client)
    story = await api_story(api_client, author)
    posts = [await api_post(api_client, author, story["id"]) for _ in range(5)]
    url = f"/api/stories/{story['id']}/posts"

    pages = await _walk(api_client, url, limit=2)
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert [p["id"] for page in pages for p in page["items"]] == [p["id"] for p in reversed(posts)]
    assert _query(pages[0]["next"]) == {"limit": "2", "before": str(posts[3]["id"])}
    # Without a limit: 50 a page, so a story's posts so far come in one page, as before.
    everything = (await api_client.get(url)).json()
    assert len(everything["items"]) == 5 and everything["next"] is None
    # A cursor that is no post at all still reads as "older than this id".
    assert (await api_client.get(url, params={"before": 1})).json() == {"items": [], "next": None}


@pytest.mark.parametrize(
    ("params", "loc"),
    [({"before": 0}, ["before"]), ({"before": "x"}, ["before"]), ({"before": 2**31}, ["before"]),
     ({"limit": 101}, ["limit"])],
)
async def test_bad_page_parameters_are_422(api_client, params, loc):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    for url in ("/api/stories", f"/api/stories/{story['id']}/posts", "/api/notifications"):
        response = await api_client.get(url, params=params, headers=user.headers)
        assert response.status_code == 422, (url, response.text)
        assert loc in [err["loc"] for err in response.json()["detail"]]
        assert all(set(err) == {"loc", "msg"} for err in response.json()["detail"])


async def test_notification_pages(api_client):
    author, reader = await api_user(api_client), await api_user(api_client)
    story = await api_story(api_client, author)
    for _ in range(3):
        await api_post(api_client, reader, story["id"])
    pages = await _walk(api_client, "/api/notifications", headers=author.headers, limit=2)
    assert [len(p["items"]) for p in pages] == [2, 1]
    ids = [n["id"] for page in pages for n in page["items"]]
    assert ids == sorted(ids, reverse=True)
    assert {page["unread"] for page in pages} == {3}  # the count is of them all, on every page


# ---------------------------------------------------------------- HTTP


async def test_head_answers_like_get_on_every_readable_route(api_client):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    for url in ("/api/stories", f"/api/stories/{story['id']}", "/api/health/live", "/api/push/key",
                "/api/openapi.json"):
        response = await api_client.head(url)
        assert response.status_code == 200, url
    assert (await api_client.head("/api/me")).status_code == 401


async def test_405_lists_every_method_of_the_path(api_client):
    response = await api_client.put("/api/stories/1")
    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PATCH", "DELETE"}
    response = await api_client.get("/api/auth/token")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"POST", "DELETE"}


# ---------------------------------------------------------------- the schema and the docs


async def test_the_schema_documents_every_operation_and_the_error_shapes(api_client):
    response = await api_client.get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    components = schema["components"]
    assert components["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "A token from `POST /api/auth/token`, sent as `Authorization: Bearer <token>`.",
    }
    assert components["schemas"]["Error"]["properties"] == {"detail": {"title": "Detail", "type": "string"}}
    problems = components["schemas"]["ValidationErrors"]["properties"]["detail"]
    assert problems["items"] == {"$ref": "#/components/schemas/FieldProblem"}
    assert "HTTPValidationError" not in components["schemas"]  # FastAPI's own 422 shape is never answered
    operations = {(m.upper(), p): op for p, ops in schema["paths"].items() for m, op in ops.items()}
    assert {("DELETE", "/api/auth/token"), ("GET", "/api/me"), ("GET", "/api/community/events"),
            ("GET", "/api/metrics"), ("GET", "/api/health/ready")} <= set(operations)
    for (method, path), op in operations.items():
        for status, answer in op["responses"].items():
            sentence = status.startswith("4") and (status != "422" or path == "/api/community/events")
            if sentence:
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            elif status == "422":
                assert answer["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ValidationErrors"}, (method, path)
    # Bodies are documented with the models that parse them.
    create = operations[("POST", "/api/stories")]["requestBody"]["content"]["application/json"]["schema"]
    assert create == {"$ref": "#/components/schemas/StoryCreate"}
    assert components["schemas"]["StoryCreate"]["additionalProperties"] is False
    # Lists carry summaries: no content.
    assert "content" not in components["schemas"]["StorySummary"]["properties"]
    assert "content" in components["schemas"]["StoryPublic"]["properties"]


async def test_the_docs_page(api_client):
    response = await api_client.get("/api/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "swagger-ui" in response.text and "/api/openapi.json" in response.text
    missing = await api_client.get("/api/docs/oauth2-redirect")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no API endpoint at /api/docs/oauth2-redirect"}


async def test_the_schema_states_the_username_rule_the_server_applies(api_client):
    schema = (await api_client.get("/api/openapi.json")).json()["components"]["schemas"]
    for model in ("Credentials", "Login"):
        assert schema[model]["properties"]["username"]["pattern"] == "^[A-Za-z0-9_]{3,32}$"
    response = await api_client.post("/api/auth/register", json={"username": "no-dash", "password": PASSWORD})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["username"], "msg": "Value error, 3–32 letters, digits or underscores"}]
