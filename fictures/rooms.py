"""Live rooms: values every tab in a room sees the same, pushed with one frame per change.

A room is a name: `"community"`, `"story:7"`, `"user:3"`. What its tabs show in
common (the community's latest arrivals, who is reading a story, who is
typing) lives in a `Room` state: a State with no event handlers whose vars are
*room values*, read from this process's store for the tab's room. A change is

    await rooms.publish(StoryRoom, "story:7", readers=summary)

which stores the value and sends ONE Socket.IO frame (just the changed vars,
encoded once) to every socket of this process in that room: O(1) per room
whatever the number of tabs, and nothing runs per tab. A hydrate or reconnect
reads the same store, so it shows exactly what the broadcast showed.

Declaring one (see fictures.pages.story's `StoryRoom`):

    class StoryRoom(rooms.Room):
        kind = "story"                               # rooms named "story:<id>"

        @classmethod
        def room_name(cls, router) -> str | None:   # this tab's room, from its URL
            return f"story:{...}"

        readers = rooms.value("readers", Presence, Presence())

Tabs join their page's rooms in `LiveState.live_start` (a page lists its Room
classes in `live_rooms = rooms.of(StoryRoom)`) and leave them when they navigate away or disconnect.
Every process keeps its own store; each is fed the same way (the durable
events every process receives, or the ephemeral signals of fictures.signals),
so all processes show the same values.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, ClassVar

import reflex as rx

from fictures import metrics, reflex_compat

logger = logging.getLogger(__name__)

# room name -> var name -> value, for the rooms this process's tabs are in
# (and the community feed, which every process keeps).
_store: defaultdict[str, dict[str, Any]] = defaultdict(dict)
# The app whose sockets `publish` writes to (set by the TabHub while it runs).
_apps: list[rx.App] = []
# kind (a room name up to its ":", e.g. "story" for "story:7") -> its Room class.
_kinds: dict[str, type[Room]] = {}


def attach(app: rx.App | None) -> None:
    """Set (or clear) the app whose sockets `publish` writes to."""
    _apps[:] = [app] if app is not None else []


class Room(rx.State):
    """Base of states whose vars are room values. Subclasses name their room
    (`room_name`) and declare `value`s; they must not define event handlers:
    a room's values change only by `publish`."""

    # Rooms of this kind are kept in every process's store even with no tab in
    # them (the community feed is rebuilt from events, not from Redis).
    keep_without_tabs: ClassVar[bool] = False
    # The rooms this class shows: those named `kind` or `kind:<anything>`, so
    # code that only has a room's name (a signal) finds the class (`room_class`).
    kind: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            _kinds[cls.kind] = cls  # type: ignore[index]

    @classmethod
    def room_name(cls, router: Any) -> str | None:
        """The room a tab on this page reads (None: none)."""
        raise NotImplementedError

    def _room_value(self, name: str, default: Any) -> Any:
        room = type(self).room_name(self.router)
        if room is None:
            return default
        return _store.get(room, {}).get(name, default)


def value(name: str, type_: Any, default: Any) -> Any:
    """A room value of type `type_` (`default` until something is published).
    Use as a class attribute of a `Room`: `readers = rooms.value("readers", T, T())`."""

    def read(self: Room) -> Any:
        return self._room_value(name, default)

    read.__name__ = name
    read.__qualname__ = name
    read.__annotations__ = {"return": type_}
    # Uncached: the value lives in the store, not in the tab's state.
    return rx.var(read, cache=False)


class of:
    """The Room classes a live page shows: `live_rooms = rooms.of(StoryRoom)`.

    A descriptor, so Reflex does not take the setting for a state var."""

    def __init__(self, *room_classes: type[Room]):
        self.rooms = tuple(room_classes)

    def __get__(self, obj: object, owner: type | None = None) -> tuple[type[Room], ...]:
        return self.rooms


def all_room_classes() -> list[type[Room]]:
    """Every Room state (every subclass, at any depth)."""
    found, todo = [], list(Room.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def values_by_hydrate_and_frames() -> None:
    """Room values reach a browser by the hydrate, by broadcast frames and when
    its tab enters the room (`refresh`), never recomputed for its other events
    (see reflex_compat.values_only_when_asked). Called once the pages are registered."""
    reflex_compat.values_only_when_asked(all_room_classes())


async def refresh(state: Any, room_classes: Any) -> None:
    """Send the current values of `room_classes` with the delta of the event
    `state` is handling (a tab enters their rooms: it may have navigated from
    another page since its hydrate)."""
    for room_cls in room_classes:
        reflex_compat.send_values(await state.get_state(room_cls))


def room_class(room: str) -> type[Room] | None:
    """The Room class showing `room` ("story:7" -> the class whose kind is "story")."""
    return _kinds.get(room.partition(":")[0])


def current(room: str, name: str, default: Any = None) -> Any:
    return _store.get(room, {}).get(name, default)


def store(room: str, **values: Any) -> None:
    """Set room values without sending them (building the initial state)."""
    _store[room].update(values)


async def publish(room_cls: type[Room], room: str, **values: Any) -> int:
    """Store `values` for `room` and send them to every socket of this process
    in it, in one frame. Returns how many sockets it went to."""
    _store[room].update(values)
    if not _apps:
        return 0
    if reflex_compat.room_size(_apps[0], room):
        sent = await reflex_compat.emit_to_room(_apps[0], room, reflex_compat.delta_frame(room_cls, values))
        metrics.ROOM_FRAMES.labels("direct").inc(sent.direct)
        metrics.ROOM_FRAMES.labels("queued").inc(sent.sockets - sent.direct)
        return sent.sockets
    if not room_cls.keep_without_tabs:
        _store.pop(room, None)  # nobody here reads it; it is rebuilt on the next join
    return 0


def frame(room_cls: type[Room], **values: Any) -> Any:
    """The update `publish` sends (for callers that emit it themselves)."""
    return reflex_compat.delta_frame(room_cls, values)


def forget(room: str) -> None:
    """Drop a room's values (its last local tab left)."""
    _store.pop(room, None)


def rooms_with_values() -> list[str]:
    return list(_store)
