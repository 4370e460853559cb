"""/api/stories/{id}/read and /reads: read receipts over the API, and their signal."""

import asyncio
import contextlib

from fictures import db, visits
from fictures.settings import settings
from fictures.signals import Signals
from tests.conftest import wait_until
from tests.factories import api_story, api_user


async def _read(client, user, story_id):
    return await client.put(f"/api/stories/{story_id}/read", headers=user.headers)


async def test_each_account_counts_once_and_the_author_never(api_client):
    author, reader, other = [await api_user(api_client) for _ in range(3)]
    story = await api_story(api_client, author)
    first = await _read(api_client, reader, story["id"])
    assert first.status_code == 200
    assert first.json() == {"story_id": story["id"], "reads": 1, "counted": True}
    assert (await _read(api_client, reader, story["id"])).json() == {
        "story_id": story["id"], "reads": 1, "counted": False,
    }
    assert (await _read(api_client, author, story["id"])).json()["counted"] is False
    assert (await _read(api_client, other, story["id"])).json()["reads"] == 2
    listed = await api_client.get(f"/api/stories/{story['id']}/reads")
    assert listed.status_code == 200
    assert listed.json() == {"story_id": story["id"], "reads": 2}


async def test_drafts_are_never_counted_and_stay_hidden(api_client):
    author, reader = await api_user(api_client), await api_user(api_client)
    draft = await api_story(api_client, author, status="draft")
    for response in (
        await _read(api_client, reader, draft["id"]),
        await api_client.get(f"/api/stories/{draft['id']}/reads", headers=reader.headers),
        await api_client.get(f"/api/stories/{draft['id']}/reads"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": f"story {draft['id']} not found"}
    # Its author sees it, uncounted.
    own = await _read(api_client, author, draft["id"])
    assert own.json() == {"story_id": draft["id"], "reads": 0, "counted": False}
    assert (await api_client.get(f"/api/stories/{draft['id']}/reads", headers=author.headers)).json()["reads"] == 0


async def test_bad_requests_are_4xx_with_a_detail(api_client):
    reader = await api_user(api_client)
    story = await api_story(api_client, reader)
    anonymous = await api_client.put(f"/api/stories/{story['id']}/read")
    assert anonymous.status_code == 401 and "detail" in anonymous.json()
    for bad in ("0", "-1", "abc", str(2**31), "99999999999"):
        for response in (
            await api_client.put(f"/api/stories/{bad}/read", headers=reader.headers),
            await api_client.get(f"/api/stories/{bad}/reads"),
        ):
            assert response.status_code == 404, (bad, response.text)
            assert "detail" in response.json()
    assert (await api_client.post(f"/api/stories/{story['id']}/read", headers=reader.headers)).status_code == 405


async def test_a_new_reader_is_announced_once_on_the_signal_lane(api_client):
    author, reader = await api_user(api_client), await api_user(api_client)
    story = await api_story(api_client, author)
    listener = Signals(settings.redis_url, channel=f"{settings.stream_key}:signals")
    heard: list[tuple[str, dict]] = []

    async def on_read(data: dict) -> None:
        heard.append(("read", data))

    async def on_seen(data: dict) -> None:
        heard.append(("seen", data))

    listener.on("story-read", on_read)
    listener.on("story-seen", on_seen)
    task = asyncio.create_task(listener.run())
    try:
        await wait_until(lambda: listener.healthy, message="subscribed")
        await _read(api_client, reader, story["id"])
        await _read(api_client, reader, story["id"])  # not new: nothing announced
        marker = await api_story(api_client, author)
        await _read(api_client, reader, marker["id"])
        await wait_until(lambda: len(heard) >= 4, message="both reads and both seen")
        mine = [(kind, data) for kind, data in heard if data.get("story_id") == story["id"]]
        assert mine == [
            ("read", {"story_id": story["id"], "author_id": author.id, "reads": 1}),
            ("seen", {"user_id": reader.id, "story_id": story["id"]}),
        ]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await listener.close()


async def test_reading_a_story_marks_it_seen_for_the_account(api_client):
    author, reader = await api_user(api_client), await api_user(api_client)
    story = await api_story(api_client, author)
    await _read(api_client, reader, story["id"])
    await _read(api_client, author, story["id"])
    with db.session() as s:
        assert visits.seen_ids(session=s, user_id=reader.id) == {story["id"]}
        assert visits.seen_ids(session=s, user_id=author.id) == set()
