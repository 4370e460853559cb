"""/api/stories/{id}/posts and /api/posts/{id}."""

from datetime import datetime

import pytest

from tests.factories import api_post, api_story, api_user


async def test_reader_posts_on_a_published_story(api_client):
    author = await api_user(api_client)
    reader = await api_user(api_client)
    story = await api_story(api_client, author)
    response = await api_client.post(
        f"/api/stories/{story['id']}/posts",
        json={"title": "Chapter 3!", "body": "Best so far.", "type": "review"},
        headers=reader.headers,
    )
    assert response.status_code == 201
    post = response.json()
    assert post["story_id"] == story["id"]
    assert post["author_id"] == reader.id
    assert post["author"] == reader.username
    assert (post["title"], post["body"], post["type"]) == ("Chapter 3!", "Best so far.", "review")
    datetime.fromisoformat(post["created_at"])


async def test_post_type_defaults_to_discussion(api_client):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    response = await api_client.post(
        f"/api/stories/{story['id']}/posts", json={"title": "Hi", "body": "b"}, headers=user.headers
    )
    assert response.json()["type"] == "discussion"


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"title": "t", "body": ""}, ["body"]),
        ({"title": "t", "body": "   "}, ["body"]),
        ({"title": "", "body": "b"}, ["title"]),
        ({"title": "t" * 201, "body": "b"}, ["title"]),
        ({"title": "t", "body": "b" * 20_001}, ["body"]),
        ({"title": "t", "body": "b", "type": "rant"}, ["type"]),
        ({"body": "b"}, ["title"]),
        ({"title": "t", "body": "b", "story_id": 1}, ["story_id"]),
    ],
)
async def test_create_post_invalid_fields_are_422(api_client, fields, loc):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    response = await api_client.post(
        f"/api/stories/{story['id']}/posts", json=fields, headers=user.headers
    )
    assert response.status_code == 422
    assert loc in [err["loc"] for err in response.json()["detail"]]


async def test_create_post_malformed_json_is_400(api_client):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    response = await api_client.post(
        f"/api/stories/{story['id']}/posts", content=b"title=x", headers=user.headers
    )
    assert response.status_code == 400


async def test_no_posts_on_drafts_or_missing_stories(api_client):
    owner = await api_user(api_client)
    draft = await api_story(api_client, owner, status="draft")
    body = {"title": "t", "body": "b"}
    # Not even the owner: community posts exist only on published stories.
    for user in (owner, await api_user(api_client)):
        response = await api_client.post(
            f"/api/stories/{draft['id']}/posts", json=body, headers=user.headers
        )
        assert response.status_code == 404
    missing = await api_client.post(
        "/api/stories/2147483647/posts", json=body, headers=owner.headers
    )
    assert missing.status_code == 404


async def test_list_posts_of_a_published_story(api_client):
    author = await api_user(api_client)
    reader = await api_user(api_client)
    story = await api_story(api_client, author)
    other_story = await api_story(api_client, author)
    first = await api_post(api_client, reader, story["id"])
    second = await api_post(api_client, author, story["id"])
    await api_post(api_client, reader, other_story["id"])
    response = await api_client.get(f"/api/stories/{story['id']}/posts")
    assert response.status_code == 200
    items = response.json()["items"]
    assert sorted(p["id"] for p in items) == sorted([first["id"], second["id"]])
    by_id = {p["id"]: p for p in items}
    assert by_id[first["id"]]["author"] == reader.username
    assert by_id[second["id"]]["author"] == author.username


async def test_posts_of_an_unpublished_story_are_hidden_from_others(api_client):
    author = await api_user(api_client)
    reader = await api_user(api_client)
    story = await api_story(api_client, author)
    post = await api_post(api_client, reader, story["id"])
    await api_client.put(
        f"/api/stories/{story['id']}/visibility", json={"status": "draft"}, headers=author.headers
    )
    url = f"/api/stories/{story['id']}/posts"
    assert (await api_client.get(url)).status_code == 404
    assert (await api_client.get(url, headers=reader.headers)).status_code == 404
    own = await api_client.get(url, headers=author.headers)
    assert own.status_code == 200
    assert [p["id"] for p in own.json()["items"]] == [post["id"]]


async def test_list_posts_of_a_missing_story_is_404(api_client):
    assert (await api_client.get("/api/stories/2147483647/posts")).status_code == 404
    assert (await api_client.get("/api/stories/nope/posts")).status_code == 404


async def test_author_edits_own_post(api_client):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    post = await api_post(api_client, user, story["id"])
    response = await api_client.patch(
        f"/api/posts/{post['id']}",
        json={"body": "Edited.", "type": "question"},
        headers=user.headers,
    )
    assert response.status_code == 200
    edited = response.json()
    assert (edited["title"], edited["body"]) == (post["title"], "Edited.")
    assert edited["type"] == "question"
    listed = (await api_client.get(f"/api/stories/{story['id']}/posts")).json()["items"]
    assert listed[0]["body"] == "Edited."


async def test_editing_someone_elses_post_is_403(api_client):
    author = await api_user(api_client)
    reader = await api_user(api_client)
    story = await api_story(api_client, author)
    post = await api_post(api_client, reader, story["id"])
    # Not even the story's author may rewrite a reader's post.
    response = await api_client.patch(
        f"/api/posts/{post['id']}", json={"body": "Changed"}, headers=author.headers
    )
    assert response.status_code == 403
    listed = (await api_client.get(f"/api/stories/{story['id']}/posts")).json()["items"]
    assert listed[0]["body"] == post["body"]


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"title": None}, ["title"]),
        ({"body": ""}, ["body"]),
        ({"type": "rant"}, ["type"]),
        ({"type": None}, ["type"]),
        ({"story_id": 2}, ["story_id"]),
    ],
)
async def test_edit_post_invalid_fields_are_422(api_client, fields, loc):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    post = await api_post(api_client, user, story["id"])
    response = await api_client.patch(f"/api/posts/{post['id']}", json=fields, headers=user.headers)
    assert response.status_code == 422
    assert loc in [err["loc"] for err in response.json()["detail"]]


async def test_edit_or_delete_missing_post_is_404(api_client):
    user = await api_user(api_client)
    for url in ("/api/posts/2147483647", "/api/posts/0", "/api/posts/x"):
        patched = await api_client.patch(url, json={"body": "x"}, headers=user.headers)
        assert patched.status_code == 404
        deleted = await api_client.delete(url, headers=user.headers)
        assert deleted.status_code == 404


async def test_author_deletes_own_post(api_client):
    user = await api_user(api_client)
    story = await api_story(api_client, user)
    post = await api_post(api_client, user, story["id"])
    response = await api_client.delete(f"/api/posts/{post['id']}", headers=user.headers)
    assert response.status_code == 204
    assert (await api_client.get(f"/api/stories/{story['id']}/posts")).json()["items"] == []
    again = await api_client.delete(f"/api/posts/{post['id']}", headers=user.headers)
    assert again.status_code == 404


async def test_deleting_someone_elses_post_is_403(api_client):
    author = await api_user(api_client)
    reader = await api_user(api_client)
    story = await api_story(api_client, author)
    post = await api_post(api_client, reader, story["id"])
    response = await api_client.delete(f"/api/posts/{post['id']}", headers=author.headers)
    assert response.status_code == 403
    listed = (await api_client.get(f"/api/stories/{story['id']}/posts")).json()["items"]
    assert [p["id"] for p in listed] == [post["id"]]
