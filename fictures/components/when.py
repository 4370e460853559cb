"""Times people can read: "3 min ago" in the reader's time zone, the full date on hover."""

from __future__ import annotations

import reflex as rx


def when(iso) -> rx.Component:
    """`iso`: a var holding an ISO 8601 timestamp (empty: nothing shown). The
    browser renders it relative to now, keeps it current, and puts the full local
    date in the element's title (hover)."""
    return rx.cond(
        iso != "",
        rx.moment(iso, from_now=True, with_title=True, title_format="LLLL", local=True, class_name="when"),
    )
