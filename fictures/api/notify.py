"""REST for notifications and Web Push subscriptions: each user sees and changes their own only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from fictures import notifications, push, ratelimit
from fictures.api.deps import Bearer, NotificationId, body, parse, require_user
from fictures.api.rest import ApiRoute, Before, in_db, next_link, refusals
from fictures.api.schemas import (
    MarkedRead,
    NotificationItem,
    NotificationPage,
    PushKey,
    Subscribed,
    Unread,
)
from fictures.models import PushEndpoint, PushSubscriptionIn

router = APIRouter(route_class=ApiRoute)


class NotificationQuery(BaseModel):
    """`GET /api/notifications` query string."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(
        notifications.PAGE_SIZE, ge=1, le=notifications.MAX_PAGE_SIZE, description="Items per page."
    )
    before: Before = None


@router.get(
    "/api/notifications", response_model=NotificationPage, tags=["notifications"],
    summary="Your notifications, newest first, and how many are unread",
    responses=refusals(401, 422),
)
async def list_notifications(
    request: Request, token: Bearer, query: Annotated[NotificationQuery, Query()]
) -> NotificationPage:
    def work(session: Session) -> NotificationPage:
        user = require_user(session, token)
        rows = notifications.list_for(
            session=session, user_id=user.id, limit=query.limit + 1, before=query.before
        )
        page, more = rows[: query.limit], len(rows) > query.limit
        items = []
        for row in page:
            c = notifications.card(row)
            items.append(NotificationItem(
                id=c.id, kind=c.kind, story_id=c.story_id, post_id=c.post_id or None, actor=c.actor,
                title=c.title, story_title=c.story_title, created_at=c.created_at, read=c.read,
            ))
        return NotificationPage(
            unread=notifications.unread_count(session=session, user_id=user.id),
            items=items,
            next=next_link(request, page, query.limit, more),
        )

    return await in_db(work)


@router.post(
    "/api/notifications/{notification_id}/read", response_model=Unread, tags=["notifications"],
    summary="Mark one of your notifications read (anyone else's is a 404)",
    responses=refusals(401, 404),
)
async def mark_read(notification_id: NotificationId, token: Bearer) -> Unread:
    def work(session: Session) -> Unread:
        user = require_user(session, token)
        notifications.mark_read(session=session, user=user, notification_id=notification_id)
        return Unread(unread=notifications.unread_count(session=session, user_id=user.id))

    return await in_db(work)


@router.post(
    "/api/notifications/read", response_model=MarkedRead, tags=["notifications"],
    summary="Mark all your notifications read", responses=refusals(401),
)
async def mark_all_read(token: Bearer) -> MarkedRead:
    def work(session: Session) -> MarkedRead:
        user = require_user(session, token)
        marked = notifications.mark_all_read(session=session, user=user)
        return MarkedRead(marked=marked, unread=notifications.unread_count(session=session, user_id=user.id))

    return await in_db(work)


@router.get(
    "/api/push/key", response_model=PushKey, tags=["push"],
    summary="The VAPID public key browsers subscribe with",
)
async def push_key() -> PushKey:
    key = await run_in_threadpool(push.public_key)
    return PushKey(enabled=key is not None, public_key=key)


@router.post(
    "/api/push/subscriptions", status_code=201, response_model=Subscribed, tags=["push"],
    summary="Save a browser's push subscription (`PushSubscription.toJSON()`)",
    responses=refusals(401, 400, 413, 422, 429), openapi_extra=body(PushSubscriptionIn),
)
async def subscribe(request: Request, token: Bearer) -> Subscribed:
    raw = await request.body()

    def user_and_data(session: Session):
        return require_user(session, token), parse(PushSubscriptionIn, raw)

    user, data = await in_db(user_and_data)
    await ratelimit.check_push_subscribe(user.id)

    def work(session: Session) -> Subscribed:
        return Subscribed(id=push.subscribe(session=session, user=user, data=data).id)

    return await in_db(work)


@router.delete(
    "/api/push/subscriptions", status_code=204, response_class=Response, tags=["push"],
    summary="Forget one of your browsers' push subscriptions",
    responses=refusals(401, 400, 404, 413, 422), openapi_extra=body(PushEndpoint),
)
async def unsubscribe(request: Request, token: Bearer) -> Response:
    raw = await request.body()

    def work(session: Session) -> None:
        user = require_user(session, token)
        push.unsubscribe(session=session, user=user, endpoint=parse(PushEndpoint, raw).endpoint)

    await in_db(work)
    return Response(status_code=204)
