"""Every change made through the API is announced on the real Redis channels.

A listener subscribes to the channels on the session's Redis before the change
and waits (with a deadline) for the matching event.
"""

from datetime import datetime

from fictures.events.schema import PRIVATE_CHANNEL, PUBLIC_CHANNELS
from tests.conftest import unsent_outbox_rows, wait_until
from tests.factories import api_post, api_story, api_user, unique


def assert_envelope(event: dict) -> None:
    assert isinstance(event["id"], int) and event["id"] >= 1
    stamp = datetime.fromisoformat(event["timestamp"])
    assert stamp.tzinfo is not None  # an instant, not a wall-clock time


async def test_publishing_a_story_emits_story_published(api_client, relay_running, listen):
    user = await api_user(api_client)
    async with listen("story:published") as events:
        story = await api_story(api_client, user, genre="horror")
        event = await events.next("story:published", lambda e: e["storyId"] == story["id"])
    assert_envelope(event)
    assert event == {
        "id": event["id"],
        "timestamp": event["timestamp"],
        "storyId": story["id"],
        "title": story["title"],
        "authorId": user.id,
        "genre": "horror",
        # The card a reader's page shows, carried so the fan-out reads no database.
        "author": user.username,
        "excerpt": story["summary"],
        "publishedAt": event["publishedAt"],
    }
    assert datetime.fromisoformat(event["publishedAt"]) == datetime.fromisoformat(story["published_at"])


async def test_a_story_and_its_posts_through_their_lives(api_client, relay_running, listen):
    author = await api_user(api_client)
    reader = await api_user(api_client)
    async with listen(*PUBLIC_CHANNELS, PRIVATE_CHANNEL) as events:
        story = await api_story(api_client, author, genre="mystery")
        sid = story["id"]
        mine = lambda e: e["storyId"] == sid  # noqa: E731

        published = await events.next("story:published", mine)

        await api_client.patch(
            f"/api/stories/{sid}", json={"title": "Retitled", "genre": None}, headers=author.headers
        )
        updated = await events.next("story:updated", mine)
        assert (updated["title"], updated["genre"], updated["status"]) == (
            "Retitled", None, "published",
        )

        post = await api_post(api_client, reader, sid, title="First!", type="question")
        created = await events.next("post:created", mine)
        assert created == {
            "id": created["id"],
            "timestamp": created["timestamp"],
            "postId": post["id"],
            "storyId": sid,
            "authorId": reader.id,
            "title": "First!",
            "type": "question",
            # The card a reader's page shows.
            "author": reader.username,
            "excerpt": post["body"],
            "storyTitle": "Retitled",
            "createdAt": created["createdAt"],
        }

        await api_client.patch(
            f"/api/posts/{post['id']}", json={"body": "Edited"}, headers=reader.headers
        )
        post_updated = await events.next("post:updated", mine)
        assert (post_updated["postId"], post_updated["storyId"]) == (post["id"], sid)

        await api_client.delete(f"/api/posts/{post['id']}", headers=reader.headers)
        post_deleted = await events.next("post:deleted", mine)
        assert (post_deleted["postId"], post_deleted["storyId"]) == (post["id"], sid)

        await api_client.put(
            f"/api/stories/{sid}/visibility", json={"status": "draft"}, headers=author.headers
        )
        unpublished = await events.next(
            "story:updated", lambda e: mine(e) and e["status"] == "draft"
        )
        assert (unpublished["title"], unpublished["genre"]) == ("Retitled", None)
        private = await events.next(PRIVATE_CHANNEL, mine)
        assert (private["userId"], private["action"]) == (author.id, "updated")

        await api_client.put(
            f"/api/stories/{sid}/visibility", json={"status": "published"}, headers=author.headers
        )
        republished = await events.next(
            "story:published", lambda e: mine(e) and e["id"] > published["id"]
        )
        assert (republished["title"], republished["authorId"]) == ("Retitled", author.id)

        removed = await api_client.delete(f"/api/stories/{sid}", headers=author.headers)
        assert removed.status_code == 204
        deleted = await events.next("story:deleted", mine)
        assert set(deleted) == {"id", "timestamp", "storyId"}

    public = [
        published, updated, created, post_updated, post_deleted, unpublished, republished,
        deleted,
    ]
    for event in [*public, private]:
        assert_envelope(event)
    ids = [e["id"] for e in public]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    # Published in id order on the wire too, each sequence (public, private) in its own.
    for channels in (PUBLIC_CHANNELS, (PRIVATE_CHANNEL,)):
        wire = [r.id for r in events.on(*channels)]
        assert wire == sorted(wire), (channels, wire)
    # Unpublishing announced the public change first, then the author's private one.
    order = [(r.channel, r.id) for r in events.received]
    assert order.index(("story:updated", unpublished["id"])) < order.index(
        (PRIVATE_CHANNEL, private["id"])
    )


async def test_drafts_publish_nothing_on_public_channels(api_client, relay_running, listen):
    author = await api_user(api_client)
    # Start from an empty outbox so everything announced below comes from this test.
    await wait_until(lambda: not unsent_outbox_rows(), message="the outbox to drain")
    async with listen(*PUBLIC_CHANNELS, PRIVATE_CHANNEL) as events:
        draft = await api_story(api_client, author, status="draft", title=unique("Secret"))
        did = draft["id"]
        headers = author.headers
        edited = await api_client.patch(
            f"/api/stories/{did}", json={"title": "Still secret"}, headers=headers
        )
        assert edited.status_code == 200
        assert (await api_client.delete(f"/api/stories/{did}", headers=headers)).status_code == 204

        # A published story afterwards: once its event is here, anything the
        # draft changes announced (earlier rows, same relay, in order) is here too.
        marker = await api_story(api_client, author)
        marker_event = await events.next("story:published", lambda e: e["storyId"] == marker["id"])
        wire = [(r.channel, r.id) for r in events.received]

        actions = []
        for action in ("created", "updated", "deleted"):
            private = await events.next(
                PRIVATE_CHANNEL, lambda e, a=action: e["storyId"] == did and e["action"] == a
            )
            assert private["userId"] == author.id
            assert (PRIVATE_CHANNEL, private["id"]) in wire  # before the marker
            actions.append(private)

    public = [r for r in events.on(*PUBLIC_CHANNELS) if r.id != marker_event["id"]]
    assert public == [], public
    assert [a["title"] for a in actions] == [draft["title"], "Still secret", "Still secret"]


async def test_failed_requests_announce_nothing(api_client, relay_running, listen):
    owner = await api_user(api_client)
    other = await api_user(api_client)
    story = await api_story(api_client, owner)
    await wait_until(lambda: not unsent_outbox_rows(), message="the outbox to drain")
    async with listen(*PUBLIC_CHANNELS, PRIVATE_CHANNEL) as events:
        url = f"/api/stories/{story['id']}"
        mine, theirs = owner.headers, other.headers
        rejected = [
            await api_client.patch(url, json={"title": "x"}, headers=theirs),
            await api_client.patch(url, json={"title": ""}, headers=mine),
            await api_client.delete(url, headers=theirs),
            await api_client.post("/api/stories", json={"title": "t" * 201}, headers=mine),
            await api_client.post(f"{url}/posts", json={"title": "t", "body": ""}, headers=theirs),
        ]
        assert [r.status_code for r in rejected] == [403, 422, 403, 422, 422]
        marker = await api_story(api_client, owner)
        await events.next("story:published", lambda e: e["storyId"] == marker["id"])
    assert [r.data["storyId"] for r in events.received] == [marker["id"]]


async def test_posts_of_an_unpublished_story_can_no_longer_change(
    api_client, relay_running, listen
):
    author = await api_user(api_client)
    reader = await api_user(api_client)
    story = await api_story(api_client, author)
    post = await api_post(api_client, reader, story["id"])
    hidden = await api_client.put(
        f"/api/stories/{story['id']}/visibility", json={"status": "draft"}, headers=author.headers
    )
    assert hidden.status_code == 200
    await wait_until(lambda: not unsent_outbox_rows(), message="the outbox to drain")
    async with listen(*PUBLIC_CHANNELS) as events:
        url = f"/api/posts/{post['id']}"
        edited = await api_client.patch(url, json={"body": "x"}, headers=reader.headers)
        deleted = await api_client.delete(url, headers=reader.headers)
        assert (edited.status_code, deleted.status_code) == (404, 404)
        marker = await api_story(api_client, author)
        await events.next("story:published", lambda e: e["storyId"] == marker["id"])
    assert [(r.channel, r.data["storyId"]) for r in events.received] == [
        ("story:published", marker["id"])
    ]


async def test_public_ids_have_no_gaps_where_drafts_changed(api_client, relay_running, listen):
    """Drafts have a sequence of their own: a gap in the public ids would tell every
    reader that someone, at that moment, was working on a draft."""
    author = await api_user(api_client)
    headers = author.headers
    await wait_until(lambda: not unsent_outbox_rows(), message="the outbox to drain")
    async with listen(*PUBLIC_CHANNELS, PRIVATE_CHANNEL) as events:
        first = await api_story(api_client, author)
        draft = await api_story(api_client, author, status="draft")
        await api_client.patch(f"/api/stories/{draft['id']}", json={"title": "D2"}, headers=headers)
        second = await api_story(api_client, author)
        await api_client.patch(f"/api/stories/{draft['id']}", json={"title": "D3"}, headers=headers)
        await api_client.patch(f"/api/stories/{first['id']}", json={"title": "P2"}, headers=headers)
        await api_client.delete(f"/api/stories/{draft['id']}", headers=headers)
        await api_post(api_client, author, second["id"])
        last = await events.next("post:created", lambda e: e["storyId"] == second["id"])
        deleted = await events.next(
            PRIVATE_CHANNEL, lambda e: e["storyId"] == draft["id"] and e["action"] == "deleted"
        )

    public = [r.id for r in events.on(*PUBLIC_CHANNELS)]
    assert len(public) == 4 and public[-1] == last["id"]
    assert public == list(range(public[0], public[0] + 4)), public
    private = [r.id for r in events.on(PRIVATE_CHANNEL)]
    assert len(private) == 4 and private[-1] == deleted["id"]
    assert private == list(range(private[0], private[0] + 4)), private
