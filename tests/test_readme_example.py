"""The README's example live page is real code: it builds and behaves as documented."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text.split("## Adding a live page", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_live_page_example_works():
    code = _example()
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
