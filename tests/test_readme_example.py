"""The README's example live pages are real code: they build and behave as documented."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> list[str]:
    text = README.read_text()
    section = text.split("## Adding a live page", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_live_page_example_works():
    code = _examples()[0]
    assert len(code.strip().splitlines()) <= 22
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    state_cls = namespace["TickerState"]

    from fictures.live import _handled_channels

    assert _handled_channels(state_cls) == {"story:published"}
    # The handler is a plain method, not an event the browser could call.
    assert "on_story_published" not in state_cls.event_handlers
    assert "live_start" in state_cls.event_handlers
    component = namespace["ticker"]()
    assert "live-indicator" in str(component)


async def test_readme_live_room_example_works():
    code = _examples()[1]
    assert len(code.strip().splitlines()) <= 22
    namespace: dict = {"__name__": "readme_room_example"}
    exec(compile(code, "README.md", "exec"), namespace)
    room_cls, state_cls = namespace["QuoteRoom"], namespace["QuoteState"]

    from fictures import rooms

    assert state_cls.live_rooms == (room_cls,)
    assert room_cls.event_handlers.keys() <= {"setvar"}  # a room has no handlers
    await rooms.publish(room_cls, "quote-of-the-day", quote="Call me Ishmael.")
    assert rooms.current("quote-of-the-day", "quote") == "Call me Ishmael."
    # The page reads the room value (a hydrate reads the same store).
    assert "quote" in str(namespace["quote"]())
