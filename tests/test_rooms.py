"""Live rooms: values shared by every tab of a room, stored per process."""

from __future__ import annotations

import pytest
import reflex as rx

from fictures import rooms
from fictures.live import LiveState


class _ProbeRoom(rooms.Room):
    @classmethod
    def room_name(cls, router) -> str:
        return "probe"

    count = rooms.value("count", int, 0)


async def test_publish_stores_values_that_a_hydrate_reads():
    await rooms.publish(_ProbeRoom, "probe", count=3)
    assert rooms.current("probe", "count") == 3
    assert "count" in _ProbeRoom.computed_vars
    assert _ProbeRoom.event_handlers.keys() <= {"setvar"}


def test_a_page_names_its_rooms_with_rooms_of_not_a_state_var():
    class _ProbePage(LiveState, rx.State):
        live_rooms = rooms.of(_ProbeRoom)

    assert _ProbePage.live_rooms == (_ProbeRoom,)
    assert "live_rooms" not in _ProbePage.get_fields()

    with pytest.raises(TypeError, match=r"rooms\.of"):

        class _Wrong(LiveState, rx.State):
            live_rooms = (_ProbeRoom,)


def test_room_values_are_not_recomputed_for_every_event_of_every_tab():
    """Reflex recomputes a state's uncached vars for every event a tab sends (and
    loads the state for it); room values are left to the hydrate, frames and
    room entry (`rooms.refresh`), so Room states drop out of that set."""
    from fictures import reflex_compat
    from fictures.live_feed import CommunityRoom

    classes = rooms.all_room_classes()
    assert CommunityRoom in classes
    chain = [rx.State, *{cls.get_parent_state() for cls in classes}]
    saved = ({c: reflex_compat.always_dirty(c) for c in classes},
             {c: reflex_compat.always_dirty_substates(c) for c in chain})
    assert "s0" in saved[0][CommunityRoom]  # uncached: Reflex would recompute it every event
    try:
        rooms.values_by_hydrate_and_frames()
        assert all(not reflex_compat.always_dirty(c) for c in classes)
        for state_cls in chain:
            left = {state_cls.get_class_substate(n) for n in reflex_compat.always_dirty_substates(state_cls)}
            assert not left & set(classes), left
    finally:
        for c, names in saved[0].items():
            c._always_dirty_computed_vars = names
        for c, names in saved[1].items():
            c._always_dirty_substates = names
