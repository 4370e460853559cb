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
