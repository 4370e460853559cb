"""REST for notifications and Web Push subscriptions: each user sees and changes their own only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fictures import db, notifications, push, ratelimit
from fictures.api.deps import bearer_token, parse, path_id, require_user
from fictures.api.rest import route
from fictures.models import PushEndpoint, PushSubscriptionIn

T = TypeVar("T")


class NotificationQuery(BaseModel):
    """`GET /api/notifications` query string."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(notifications.PAGE_SIZE, ge=1, le=notifications.MAX_PAGE_SIZE)


async def _in_db(work: Callable[[Session], T]) -> T:
    def run() -> T:
        with db.session() as session:
            return work(session)

    return await run_in_threadpool(run)


def _listing(session: Session, user_id: int, limit: int) -> dict[str, Any]:
    snap = notifications.snapshot(session=session, user_id=user_id, limit=limit)
    return {
        "unread": snap.unread,
        "items": [
            {
                "id": c.id, "kind": c.kind, "storyId": c.story_id, "postId": c.post_id or None,
                "actor": c.actor, "title": c.title, "storyTitle": c.story_title,
                "createdAt": c.created_at, "read": c.read,
            }
            for c in snap.items
        ],
    }


async def list_notifications(request: Request) -> Response:
    query = NotificationQuery.model_validate(dict(request.query_params))
    bearer = bearer_token(request)

    def work(session: Session) -> dict[str, Any]:
        user = require_user(session, bearer)
        return _listing(session, user.id, query.limit)

    return JSONResponse(await _in_db(work))


async def mark_read(request: Request) -> Response:
    notification_id = path_id(request, "notification_id", "notification")
    bearer = bearer_token(request)

    def work(session: Session) -> dict[str, Any]:
        user = require_user(session, bearer)
        notifications.mark_read(session=session, user=user, notification_id=notification_id)
        return {"unread": notifications.unread_count(session=session, user_id=user.id)}

    return JSONResponse(await _in_db(work))


async def mark_all_read(request: Request) -> Response:
    bearer = bearer_token(request)

    def work(session: Session) -> dict[str, Any]:
        user = require_user(session, bearer)
        marked = notifications.mark_all_read(session=session, user=user)
        return {"marked": marked, "unread": notifications.unread_count(session=session, user_id=user.id)}

    return JSONResponse(await _in_db(work))


async def push_key(request: Request) -> Response:
    key = await run_in_threadpool(push.public_key)
    return JSONResponse({"enabled": key is not None, "publicKey": key})


async def subscribe(request: Request) -> Response:
    bearer, body = bearer_token(request), await request.body()

    def user_and_data(session: Session):
        user = require_user(session, bearer)
        session.expunge(user)
        return user, parse(PushSubscriptionIn, body)

    user, data = await _in_db(user_and_data)
    await ratelimit.check_push_subscribe(user.id)

    def work(session: Session) -> dict[str, Any]:
        row = push.subscribe(session=session, user=user, data=data)
        return {"id": row.id}

    return JSONResponse(await _in_db(work), status_code=201)


async def unsubscribe(request: Request) -> Response:
    bearer, body = bearer_token(request), await request.body()

    def work(session: Session) -> None:
        user = require_user(session, bearer)
        push.unsubscribe(session=session, user=user, endpoint=parse(PushEndpoint, body).endpoint)

    await _in_db(work)
    return Response(status_code=204)


routes = [
    route("/api/notifications", GET=list_notifications),
    route("/api/notifications/read", POST=mark_all_read),
    route("/api/notifications/{notification_id}/read", POST=mark_read),
    route("/api/push/key", GET=push_key),
    route("/api/push/subscriptions", POST=subscribe, DELETE=unsubscribe),
]
