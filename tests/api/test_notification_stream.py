"""A user's notifications on their authenticated event stream, and on nobody else's."""

from __future__ import annotations

import httpx

from fictures import notifications, posts
from fictures.api.sse import StreamFilter
from fictures.events.schema import PRIVATE_CHANNELS, PUBLIC_CHANNELS
from fictures.models import PostCreate, User
from tests.api.test_event_stream_ids import ANONYMOUS, Reader, _story, _users, event_service  # noqa: F401
from tests.conftest import in_db


def own(user_id: int) -> StreamFilter:
    """What an authenticated stream without ?channels= serves: every private channel too."""
    return StreamFilter(channels=frozenset((*PUBLIC_CHANNELS, *PRIVATE_CHANNELS)), story_id=None,
                        user_id=user_id)


async def test_notifications_stream_to_their_recipient_only(event_service):  # noqa: F811
    author, reader = await _users(2)
    story = await _story(author)
    streams = {"author": Reader(own(author)), "reader": Reader(own(reader)), "anonymous": Reader(ANONYMOUS)}
    try:
        for stream in streams.values():
            await stream.connected()
        post_id = await in_db(lambda s: posts.create_post(
            session=s, author=s.get(User, reader), story_id=story, data=PostCreate(title="Psst", body="b"),
        ).id)
        created = await streams["author"].wait_for(
            lambda f: f.event == "private:notification", "the notification"
        )
        assert (created.data["userId"], created.data["postId"], created.data["title"]) == (author, post_id, "Psst")
        await in_db(lambda s: notifications.mark_all_read(session=s, user=s.get(User, author)))
        read = await streams["author"].wait_for(
            lambda f: f.event == "private:notifications-read", "the read event"
        )
        assert read.data["notificationIds"] == [created.data["notificationId"]]
        # The post itself is public: every stream has it; the notification, only the author's.
        for stream in streams.values():
            await stream.wait_for(lambda f: f.event == "post:created", "the post")
    finally:
        for stream in streams.values():
            await stream.close()
    for name in ("reader", "anonymous"):
        assert not [f for f in streams[name].events() if f.event.startswith("private:notification")], name


async def test_private_notification_channels_need_a_token(api_client: httpx.AsyncClient):
    for channel in ("private:notification", "private:notifications-read"):
        r = await api_client.get(f"/api/community/events?channels={channel}")
        assert r.status_code == 401 and channel in r.json()["detail"]
