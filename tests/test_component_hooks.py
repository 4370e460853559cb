"""Hooks written by hand share one scope per page: their names must not collide.

Reflex hoists every component's hooks into the page's function and drops
identical lines, so two components declaring `const fxSeen = useRef(null);`
silently shared one ref (the bell's and the seen tracker's), and /community crashed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

FICTURES = Path(__file__).resolve().parents[1] / "fictures"
_DECLARATION = re.compile(r"\bconst (fx\w+) =")


def test_every_hand_written_hook_name_is_declared_in_one_place():
    places: defaultdict[str, list[str]] = defaultdict(list)
    for path in sorted(FICTURES.rglob("*.py")):
        for name in _DECLARATION.findall(path.read_text()):
            places[name].append(path.name)
    shared = {name: files for name, files in places.items() if len(files) > 1}
    assert places, "no hand-written hooks found: the pattern no longer matches"
    assert shared == {}
