"""/api/stories: create, list, read, edit, visibility, delete."""

from datetime import datetime

import pytest

from tests.factories import api_post, api_story, api_user, story_body, unique


async def test_create_returns_the_public_story(api_client):
    user = await api_user(api_client)
    body = story_body(genre="horror")
    response = await api_client.post("/api/stories", json=body, headers=user.headers)
    assert response.status_code == 201
    story = response.json()
    assert {k: story[k] for k in ("title", "genre", "summary", "content", "status")} == {
        k: body[k] for k in ("title", "genre", "summary", "content", "status")
    }
    assert story["author_id"] == user.id
    assert story["author"] == user.username
    assert isinstance(story["id"], int)
    for stamp in ("created_at", "updated_at", "published_at"):
        datetime.fromisoformat(story[stamp])


async def test_create_defaults_to_a_draft(api_client):
    user = await api_user(api_client)
    response = await api_client.post("/api/stories", json={"title": "Mine"}, headers=user.headers)
    assert response.status_code == 201
    story = response.json()
    assert story["status"] == "draft"
    assert story["published_at"] is None
    assert story["genre"] is None


async def test_title_of_200_characters_is_accepted(api_client):
    user = await api_user(api_client)
    story = await api_story(api_client, user, title="t" * 200)
    assert story["title"] == "t" * 200


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"title": ""}, ["title"]),
        ({"title": "   "}, ["title"]),
        ({"title": "t" * 201}, ["title"]),
        ({"title": None}, ["title"]),
        ({"genre": "cooking"}, ["genre"]),
        ({"summary": "s" * 1001}, ["summary"]),
        ({"status": "secret"}, ["status"]),
        ({"author_id": 1}, ["author_id"]),
    ],
)
async def test_create_invalid_fields_are_422(api_client, fields, loc):
    user = await api_user(api_client)
    response = await api_client.post(
        "/api/stories", json=story_body(**fields), headers=user.headers
    )
    assert response.status_code == 422, response.text
    assert loc in [err["loc"] for err in response.json()["detail"]]


async def test_create_missing_title_is_422(api_client):
    user = await api_user(api_client)
    response = await api_client.post("/api/stories", json={"genre": "other"}, headers=user.headers)
    assert response.status_code == 422
    assert ["title"] in [err["loc"] for err in response.json()["detail"]]


async def test_create_malformed_json_is_400(api_client):
    user = await api_user(api_client)
    response = await api_client.post(
        "/api/stories",
        content=b'{"title": "unterminated',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json() == {"detail": "body must be a JSON object"}


async def test_unauthenticated_request_is_401_before_its_body_is_judged(api_client):
    response = await api_client.post("/api/stories", content=b"{broken")
    assert response.status_code == 401


# ---------------------------------------------------------------- listing


async def test_list_shows_published_stories_and_never_drafts(api_client):
    user = await api_user(api_client)
    published = await api_story(api_client, user)
    draft = await api_story(api_client, user, status="draft")
    # Owners do not see their drafts here either: this is the public list.
    for headers in ({}, user.headers):
        response = await api_client.get("/api/stories", params={"limit": 100}, headers=headers)
        assert response.status_code == 200
        items = response.json()["items"]
        ids = [s["id"] for s in items]
        assert published["id"] in ids
        assert draft["id"] not in ids
        assert {s["status"] for s in items} == {"published"}
    listed = next(s for s in items if s["id"] == published["id"])
    assert listed["author"] == user.username


async def test_list_newest_first(api_client):
    user = await api_user(api_client)
    first = await api_story(api_client, user)
    second = await api_story(api_client, user)
    ids = [s["id"] for s in (await api_client.get("/api/stories")).json()["items"]]
    assert ids.index(second["id"]) < ids.index(first["id"])


async def test_list_filters_by_genre(api_client):
    user = await api_user(api_client)
    horror = await api_story(api_client, user, genre="horror")
    romance = await api_story(api_client, user, genre="romance")
    response = await api_client.get("/api/stories", params={"genre": "horror", "limit": 100})
    items = response.json()["items"]
    assert horror["id"] in [s["id"] for s in items]
    assert romance["id"] not in [s["id"] for s in items]
    assert {s["genre"] for s in items} == {"horror"}


async def test_list_limit(api_client):
    user = await api_user(api_client)
    for _ in range(3):
        await api_story(api_client, user)
    response = await api_client.get("/api/stories", params={"limit": 2})
    assert response.status_code == 200
    assert len(response.json()["items"]) == 2


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 0}, ["limit"]),
        ({"limit": 101}, ["limit"]),
        ({"limit": "many"}, ["limit"]),
        ({"genre": "cooking"}, ["genre"]),
    ],
)
async def test_list_invalid_query_is_422(api_client, params, loc):
    response = await api_client.get("/api/stories", params=params)
    assert response.status_code == 422
    assert loc in [err["loc"] for err in response.json()["detail"]]


# ---------------------------------------------------------------- reading


async def test_published_story_is_readable_by_anyone(api_client):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    response = await api_client.get(f"/api/stories/{story['id']}")
    assert response.status_code == 200
    assert response.json() == story


async def test_draft_is_readable_only_by_its_owner(api_client):
    owner = await api_user(api_client)
    other = await api_user(api_client)
    draft = await api_story(api_client, owner, status="draft")
    url = f"/api/stories/{draft['id']}"
    assert (await api_client.get(url)).status_code == 404
    assert (await api_client.get(url, headers=other.headers)).status_code == 404
    invalid = {"Authorization": "Bearer not-a-token"}
    assert (await api_client.get(url, headers=invalid)).status_code == 404
    mine = await api_client.get(url, headers=owner.headers)
    assert mine.status_code == 200
    assert mine.json()["status"] == "draft"
    # Same 404 for someone else's draft as for no story at all: no existence leak.
    missing = await api_client.get("/api/stories/2147483647")
    assert (await api_client.get(url)).json()["detail"] == f"story {draft['id']} not found"
    assert missing.json()["detail"] == "story 2147483647 not found"


@pytest.mark.parametrize("story_id", ["0", "-1", "abc", "1.5", "99999999999", "%C2%B2"])
async def test_ids_that_are_not_positive_integers_are_404(api_client, story_id):
    user = await api_user(api_client)
    for method in ("GET", "PATCH", "DELETE"):
        response = await api_client.request(
            method, f"/api/stories/{story_id}", json={"title": "x"}, headers=user.headers
        )
        assert response.status_code == 404, (method, response.text)
        assert "detail" in response.json()


async def test_unknown_route_and_method_answer_json(api_client):
    missing = await api_client.get("/api/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no API endpoint at /api/nothing-here"}
    wrong = await api_client.put("/api/stories")
    assert wrong.status_code == 405
    assert wrong.json() == {"detail": "Method Not Allowed"}
    assert set(wrong.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


# ---------------------------------------------------------------- editing


async def test_owner_edits_a_story(api_client):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    response = await api_client.patch(
        f"/api/stories/{story['id']}",
        json={"title": "Renamed", "genre": "thriller"},
        headers=user.headers,
    )
    assert response.status_code == 200
    edited = response.json()
    assert edited["title"] == "Renamed"
    assert edited["genre"] == "thriller"
    assert edited["summary"] == story["summary"]  # omitted fields are kept
    assert edited["updated_at"] >= story["updated_at"]
    assert (await api_client.get(f"/api/stories/{story['id']}")).json()["title"] == "Renamed"


async def test_genre_can_be_cleared_with_null(api_client):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    response = await api_client.patch(
        f"/api/stories/{story['id']}", json={"genre": None}, headers=user.headers
    )
    assert response.status_code == 200
    assert response.json()["genre"] is None


async def test_editing_another_authors_story_is_403(api_client):
    owner = await api_user(api_client)
    other = await api_user(api_client)
    story = await api_story(api_client, owner)
    response = await api_client.patch(
        f"/api/stories/{story['id']}", json={"title": "Mine now"}, headers=other.headers
    )
    assert response.status_code == 403
    assert (await api_client.get(f"/api/stories/{story['id']}")).json()["title"] == story["title"]


async def test_editing_a_missing_story_is_404(api_client):
    user = await api_user(api_client)
    response = await api_client.patch(
        "/api/stories/2147483647", json={"title": "x"}, headers=user.headers
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"title": ""}, ["title"]),
        ({"title": "t" * 201}, ["title"]),
        ({"title": None}, ["title"]),
        ({"summary": "s" * 1001}, ["summary"]),
        ({"genre": "cooking"}, ["genre"]),
        ({"status": "published"}, ["status"]),  # visibility has its own endpoint
    ],
)
async def test_edit_invalid_fields_are_422(api_client, fields, loc):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    response = await api_client.patch(
        f"/api/stories/{story['id']}", json=fields, headers=user.headers
    )
    assert response.status_code == 422
    assert loc in [err["loc"] for err in response.json()["detail"]]


async def test_edit_malformed_json_is_400(api_client):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    response = await api_client.patch(
        f"/api/stories/{story['id']}", content=b"[]", headers=user.headers
    )
    assert response.status_code == 400


# ---------------------------------------------------------------- visibility


async def test_owner_publishes_and_unpublishes(api_client):
    user = await api_user(api_client)
    draft = await api_story(api_client, user, status="draft")
    url = f"/api/stories/{draft['id']}/visibility"

    published = await api_client.put(url, json={"status": "published"}, headers=user.headers)
    assert published.status_code == 200
    assert published.json()["status"] == "published"
    assert published.json()["published_at"] is not None
    assert (await api_client.get(f"/api/stories/{draft['id']}")).status_code == 200
    listed = (await api_client.get("/api/stories", params={"limit": 100})).json()["items"]
    assert draft["id"] in [s["id"] for s in listed]

    unpublished = await api_client.put(url, json={"status": "draft"}, headers=user.headers)
    assert unpublished.status_code == 200
    assert unpublished.json()["status"] == "draft"
    assert (await api_client.get(f"/api/stories/{draft['id']}")).status_code == 404
    listed = (await api_client.get("/api/stories", params={"limit": 100})).json()["items"]
    assert draft["id"] not in [s["id"] for s in listed]


async def test_visibility_by_another_author_is_403(api_client):
    owner = await api_user(api_client)
    other = await api_user(api_client)
    story = await api_story(api_client, owner)
    response = await api_client.put(
        f"/api/stories/{story['id']}/visibility", json={"status": "draft"}, headers=other.headers
    )
    assert response.status_code == 403
    assert (await api_client.get(f"/api/stories/{story['id']}")).status_code == 200


@pytest.mark.parametrize("payload", [{"status": "hidden"}, {}, {"status": "draft", "x": 1}])
async def test_visibility_invalid_is_422(api_client, payload):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    response = await api_client.put(
        f"/api/stories/{story['id']}/visibility", json=payload, headers=user.headers
    )
    assert response.status_code == 422


async def test_visibility_of_a_missing_story_is_404(api_client):
    user = await api_user(api_client)
    response = await api_client.put(
        "/api/stories/2147483647/visibility", json={"status": "draft"}, headers=user.headers
    )
    assert response.status_code == 404


# ---------------------------------------------------------------- deleting


async def test_owner_deletes_a_story_and_its_posts(api_client):
    owner = await api_user(api_client)
    reader = await api_user(api_client)
    story = await api_story(api_client, owner)
    await api_post(api_client, reader, story["id"])
    response = await api_client.delete(f"/api/stories/{story['id']}", headers=owner.headers)
    assert response.status_code == 204
    assert response.content == b""
    assert (await api_client.get(f"/api/stories/{story['id']}")).status_code == 404
    assert (await api_client.get(f"/api/stories/{story['id']}/posts")).status_code == 404
    again = await api_client.delete(f"/api/stories/{story['id']}", headers=owner.headers)
    assert again.status_code == 404


async def test_deleting_another_authors_story_is_403(api_client):
    owner = await api_user(api_client)
    other = await api_user(api_client)
    story = await api_story(api_client, owner)
    response = await api_client.delete(f"/api/stories/{story['id']}", headers=other.headers)
    assert response.status_code == 403
    assert (await api_client.get(f"/api/stories/{story['id']}")).status_code == 200


async def test_owner_deletes_a_draft(api_client):
    user = await api_user(api_client)
    draft = await api_story(api_client, user, status="draft", title=unique("Draft"))
    response = await api_client.delete(f"/api/stories/{draft['id']}", headers=user.headers)
    assert response.status_code == 204
    gone = await api_client.get(f"/api/stories/{draft['id']}", headers=user.headers)
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("title", "nul\x00byte", "NUL"),
        ("summary", "lone \ud800 surrogate", "unicode"),
        ("content", "\udfff", "unicode"),
    ],
)
async def test_text_that_cannot_be_stored_is_422_and_nothing_is_written(api_client, field, value, needle):
    import json

    user = await api_user(api_client)
    before = (await api_client.get("/api/stories", params={"limit": 100})).json()["items"]
    body = {"title": "Fine", "status": "published", field: value}
    # JSON's \u escapes carry a lone surrogate that UTF-8 could not.
    response = await api_client.post(
        "/api/stories", content=json.dumps(body).encode(),
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert needle.lower() in response.text.lower() and field in response.text
    assert (await api_client.get("/api/stories", params={"limit": 100})).json()["items"] == before
