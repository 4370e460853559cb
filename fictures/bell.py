"""The navbar's notification bell: its state, and its live delivery to a user's tabs.

Every page checks the login on load (`SessionState`), which loads the bell
(`refresh`) and files the tab under its user in the process's `TabHub`. A
`NotificationCreated` or `NotificationsRead` event, private to one user, then
costs a loop over that user's tabs on this process, and nothing for anyone
else's: one query for the user's bell (count and newest items) and one
`run_in_tab` per tab, whatever page it is on (live or not, e.g. /writing).

Marking read is allowed for the recipient only (the domain checks it); each
change is an event, so the user's other tabs follow. After a logout (or a
login as someone else) the tab's state is reset, the hub forgets the tab, and
`owner_id` keeps a delivery already on its way from landing in the wrong bell.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import reflex as rx
from starlette.concurrency import run_in_threadpool

from fictures import db, live, notifications
from fictures.errors import NotFound
from fictures.events.schema import CommunityEvent, NotificationCreated, NotificationsRead
from fictures.models import RowId, User
from fictures.notifications import NotificationCard, Snapshot, snapshot_for
from fictures.state import SessionState

logger = logging.getLogger(__name__)

PushStatus = Literal["on", "off", "denied", "unsupported", "unavailable", "error"]
DesktopStatus = Literal["on", "off", "denied", "unsupported", "error"]


def _mark_read(user: User, notification_id: int) -> int | None:
    """The notification's story, once marked read; None if it is not the user's."""
    with db.session() as s:
        try:
            row = notifications.mark_read(session=s, user=user, notification_id=notification_id)
        except NotFound:
            return None
        return row.story_id


def _mark_all_read(user: User) -> None:
    with db.session() as s:
        notifications.mark_all_read(session=s, user=user)


class NotificationState(rx.State):
    """The bell of this tab's user. Only `mark_read`, `mark_all_read`,
    `open_notification`, `set_push_status` and `set_desktop_status` are browser
    events (the last two only change what the account menu says)."""

    # Whose bell this is (0: nobody's): deliveries for anyone else are ignored.
    owner_id: int = 0
    unread: int = 0
    items: list[NotificationCard] = []
    # The newest notification that arrived live in this tab; never set by a
    # load, so the browser raises a toast (and, while the page is hidden and the
    # reader opted in, a system notification) only for real arrivals.
    arrived: NotificationCard = NotificationCard()
    # This browser's Web Push subscription and its opt-in to system notifications
    # while the page is hidden, as its script (assets/notify.js) reports them.
    push_status: str = ""
    desktop_status: str = ""

    @rx.var
    def bell_label(self) -> str:
        return f"Notifications: {self.unread} unread"

    def _show(self, snap: Snapshot) -> None:
        self.unread = snap.unread
        self.items = list(snap.items)

    async def _refresh(self, user_id: int) -> None:
        """Load the bell of `user_id` (0: empty it). Called by every login check."""
        self.owner_id = user_id
        self._show(await run_in_threadpool(snapshot_for, user_id))

    def _receive(self, user_id: int, snap: Snapshot, arrived: NotificationCard | None) -> None:
        if user_id != self.owner_id:
            return  # logged out, or in as someone else, since the delivery started
        self._show(snap)
        if arrived is not None:
            self.arrived = arrived

    async def _user(self) -> User | None:
        user = await (await self.get_state(SessionState))._current_user()
        if user is None or user.id != self.owner_id:
            return None
        return user

    @rx.event
    async def mark_read(self, notification_id: RowId):
        if (user := await self._user()) is None:
            return
        await run_in_threadpool(_mark_read, user, notification_id)
        self._show(await run_in_threadpool(snapshot_for, user.id))

    @rx.event
    async def mark_all_read(self):
        if (user := await self._user()) is None:
            return
        await run_in_threadpool(_mark_all_read, user)
        self._show(await run_in_threadpool(snapshot_for, user.id))

    @rx.event
    async def open_notification(self, notification_id: RowId):
        """Mark it read and go to its story."""
        if (user := await self._user()) is None:
            return None
        story_id = await run_in_threadpool(_mark_read, user, notification_id)
        self._show(await run_in_threadpool(snapshot_for, user.id))
        if story_id is None:
            return None
        return rx.redirect(f"/community/story/{int(story_id)}")

    @rx.event
    def set_push_status(self, status: PushStatus):
        self.push_status = status

    @rx.event
    def set_desktop_status(self, status: DesktopStatus):
        self.desktop_status = status


async def _deliver(hub: live.TabHub, event: CommunityEvent) -> int:
    """A user's notification changed: show it in each of their tabs on this process."""
    assert isinstance(event, NotificationCreated | NotificationsRead)
    user_id = event.user_id
    tokens = hub.tabs_of_user(user_id)
    if not tokens:
        return 0
    snap = await asyncio.to_thread(snapshot_for, user_id)
    arrived = notifications.card_from_event(event) if isinstance(event, NotificationCreated) else None
    for token in tokens:
        hub.run_in_tab(token, NotificationState, lambda s: s._receive(user_id, snap, arrived))
    logger.info("Delivered %s #%s to %d tabs of user %s", event.channel, event.id, len(tokens), user_id)
    return len(tokens)


live.on_private(NotificationCreated.channel, _deliver)
live.on_private(NotificationsRead.channel, _deliver)


async def on_login_checked(session: SessionState, token: str, user_id: int) -> None:
    """Every page's login check: file the tab under its user, load the bell."""
    hub = live.TabHub._current
    if hub is not None:
        hub.set_user(token, user_id)
    bell = await session.get_state(NotificationState)
    await bell._refresh(user_id)
