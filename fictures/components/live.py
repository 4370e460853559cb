"""The pieces every live page shows: the Live indicator, pause toggle, polling fallback."""

from __future__ import annotations

import reflex as rx

from fictures.reflex_compat import connection_errors
from fictures.settings import settings


def _dot(color: str, pulse: bool = False) -> rx.Component:
    return rx.box(
        class_name="live-dot live-dot-pulse" if pulse else "live-dot",
        background_color=rx.color(color, 9),
    )


def live_indicator(state) -> rx.Component:
    """Green "Live" only while this tab's websocket is up and the server's Redis
    subscription is healthy; otherwise "Reconnecting…", "Paused" or "Offline"."""
    status = rx.cond(connection_errors(), "offline", state.live_status)
    return rx.hstack(
        # A polite live region: screen readers hear "Live", "Reconnecting…" as it changes.
        rx.el.span(
            rx.match(
                status,
                ("live", rx.badge(_dot("green", pulse=True), "Live", color_scheme="green", high_contrast=True)),
                ("paused", rx.badge(_dot("gray"), "Paused", color_scheme="gray", high_contrast=True)),
                ("offline", rx.badge(_dot("red"), "Offline", color_scheme="red", high_contrast=True)),
                rx.badge(_dot("amber"), "Reconnecting…", color_scheme="amber", high_contrast=True),
            ),
            role="status",
            aria_live="polite",
            id="live-status",
            display="inline-flex",
        ),
        rx.tooltip(
            rx.icon_button(
                rx.cond(state.live_paused == "1", rx.icon("play"), rx.icon("pause")),
                on_click=state.live_toggle_pause,
                size="1",
                variant="ghost",
                id="live-pause",
                aria_label=rx.cond(state.live_paused == "1", "Resume live updates", "Pause live updates"),
            ),
            content=rx.cond(state.live_paused == "1", "Resume live updates", "Pause live updates"),
        ),
        # While live updates are unavailable the page polls the database instead.
        rx.cond(
            state.live_status == "reconnecting",
            rx.moment(
                interval=settings.poll_seconds * 1000,
                on_change=state.live_poll,
                display="none",
            ),
        ),
        id="live-indicator",
        data_status=status,
        align="center",
        spacing="1",
    )
