"""The admin room: what every /admin tab shows, for verified admins only.

`AdminRoom` is a live room (fictures.rooms) named "admin". Its values are the
dashboard's data; `fictures.analytics.service` publishes them every few
seconds while a tab of this process is in the room, and nothing at all
otherwise.

Two doors are guarded, both by `Watchers`, this process's list of tabs whose
user the server has checked is an admin (fictures.pages.admin adds a tab only
after checking the role in the database, on every load and event):

- the room's frames: only a listed tab's page names the room, so only its
  socket joins it (`AdminState._live_room_names`);
- the room's values in a hydrate (any tab's state is serialised whole, and the
  values are computed from this process's store): a tab that is not listed
  reads the empty defaults.

A listed tab is admitted only while its page is the admin page (the tab
hub's page rooms, updated as it navigates or disconnects), so a tab that
left, or reconnected and was not checked again, reads nothing. It leaves the
list when the page refuses it, when the periodic check finds its user is no
longer an admin, or when that check finds it gone from the page.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fictures import rooms
from fictures.live import TabHub

ADMIN_ROOM = "admin"


@dataclasses.dataclass(frozen=True)
class EventRow:
    """One event's delivery record, as the admin table shows it."""

    id: int = 0
    channel: str = ""
    time: str = ""
    tab_broadcast: int = 0
    tab_handler: int = 0
    sse: int = 0
    p50: str = ""
    p99: str = ""


@dataclasses.dataclass(frozen=True)
class Watcher:
    sid: str
    user_id: int
    state_cls: type


class Watchers:
    """Tabs of this process allowed to see admin data (client token -> watcher)."""

    def __init__(self) -> None:
        self._tabs: dict[str, Watcher] = {}

    def admit(self, token: str, sid: str, user_id: int, state_cls: type) -> None:
        self._tabs[token] = Watcher(sid, user_id, state_cls)

    def forget(self, token: str) -> Watcher | None:
        return self._tabs.pop(token, None)

    def listed(self, token: str | None) -> bool:
        """Checked as an admin by the page (so its page may name the admin room)."""
        return bool(token) and token in self._tabs

    def admits(self, token: str | None) -> bool:
        """Listed, and on the admin page right now: may read the room's values."""
        return self.listed(token) and _on_admin_page(token)

    def prune(self) -> None:
        """Forget the tabs that are no longer on the admin page."""
        for token in [t for t in self._tabs if not _on_admin_page(t)]:
            del self._tabs[token]

    def items(self) -> list[tuple[str, Watcher]]:
        return list(self._tabs.items())

    def __len__(self) -> int:
        return len(self._tabs)


def _on_admin_page(token: str | None) -> bool:
    hub = TabHub._current
    return hub is not None and ADMIN_ROOM in hub.page_rooms.get(token or "", ())


watchers = Watchers()


class AdminRoom(rooms.Room):
    """The dashboard's data (room "admin"). No event handler changes it."""

    @classmethod
    def room_name(cls, router: Any) -> str:
        return ADMIN_ROOM

    def _room_value(self, name: str, default: Any) -> Any:
        # Computed for every tab whose state is serialised: only admitted tabs
        # read the room's values; everyone else gets the empty defaults.
        if not watchers.admits(self.router.session.client_token):
            return default
        return super()._room_value(name, default)

    # Charts: a list of points each (recharts' `data`).
    events_per_minute = rooms.value("events_per_minute", list[dict[str, Any]], [])
    readers = rooms.value("readers", list[dict[str, Any]], [])
    latency = rooms.value("latency", list[dict[str, Any]], [])
    top_stories = rooms.value("top_stories", list[dict[str, Any]], [])
    recent = rooms.value("recent", list[EventRow], [])
    # The latest readers sample, in words ("7 tabs, 1 SSE stream").
    readers_now = rooms.value("readers_now", str, "")
    # "HH:MM:SS" (UTC) of the last refresh.
    updated = rooms.value("updated", str, "")
