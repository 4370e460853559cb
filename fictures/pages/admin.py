"""/admin: delivery analytics, live, for users with the admin role.

The role is checked in the database on every load and every event this page
sends (a role revoked with `python -m fictures.admin revoke` takes effect at
the next event, or at the next analytics tick for a tab already watching). A
visitor is sent to /login, a member to /community; neither joins the admin
room nor reads its values (see fictures.analytics.room).

Every value on the page is a room value of `AdminRoom`, published every
`analytics_seconds` while an admin watches (fictures.analytics.service);
nothing here runs per reader.
"""

from __future__ import annotations

from typing import Any

import reflex as rx

from fictures import rooms, toasts
from fictures.analytics.room import ADMIN_ROOM, AdminRoom, EventRow, watchers
from fictures.analytics.service import AnalyticsService, channel_key
from fictures.components.layout import loading, page
from fictures.components.live import live_indicator
from fictures.events.schema import PUBLIC_CHANNELS
from fictures.live import LiveState, TabHub
from fictures.models import User, UserRole
from fictures.state import SessionState

# Fixed colours (not theme tokens): the browser test finds each series by its colour.
CHANNEL_COLORS = {
    "story:published": "#30a46c",
    "story:updated": "#0090ff",
    "story:deleted": "#e5484d",
    "post:created": "#8e4ec6",
    "post:updated": "#f76b15",
    "post:deleted": "#8d8d8d",
}
TABS_COLOR = "#0090ff"
SSE_COLOR = "#e54666"
P50_COLOR = "#30a46c"
P99_COLOR = "#f76b15"
STORIES_COLOR = "#8e4ec6"


class AdminState(LiveState, rx.State):
    """The admin page's tab state: only whether the page may show. The data is
    the admin room's (AdminRoom), never this state's."""

    live_rooms = rooms.of(AdminRoom)

    allowed: bool = False

    async def _admin(self) -> User | None:
        """This tab's user, if the database says it is an admin right now."""
        session = await self.get_state(SessionState)
        user = await session._current_user()
        return user if user is not None and user.role == UserRole.admin.value else None

    async def _refuse(self) -> None:
        """Out of the watchers and the admin room (if it was in them)."""
        self.allowed = False
        token = self.router.session.client_token
        if watchers.forget(token) is not None and TabHub._current is not None:
            await TabHub._current.enter(token, self.router.session.session_id, [])

    async def _send_away(self, *, toast: bool = False) -> Any:
        """Refused: a visitor to the login page, a member to the community."""
        await self._refuse()
        session = await self.get_state(SessionState)
        if session.user_id <= 0:
            return rx.redirect("/login")
        if not toast:
            return rx.redirect("/community")
        return [rx.redirect("/community"), toasts.warning("The admin page is for admins only")]

    def _admin_refused(self) -> Any:
        """Run in the tab by the analytics task when its user lost the role."""
        self.allowed = False
        return rx.redirect("/community")

    def _live_room_names(self) -> list[str]:
        # Only a tab the server checked names the admin room, so only it joins.
        return [ADMIN_ROOM] if watchers.listed(self.router.session.client_token) else []

    def live_reload(self) -> Any:
        return AdminState.load

    @rx.event
    async def live_start(self):
        user = await self._admin()
        if user is None:
            await self._refuse()
            return None  # `load` (next in on_load) redirects
        session = self.router.session
        watchers.admit(session.client_token, session.session_id, user.id, type(self))
        return await LiveState.live_start(self)

    @rx.event
    async def live_poll(self, _value: Any = None):
        # (A refused tab never went live, so its indicator polls: it is sent away here too.)
        if await self._admin() is None:
            return await self._send_away()
        return LiveState.live_poll(self, _value)

    @rx.event
    async def live_toggle_pause(self):
        if await self._admin() is None:
            return await self._send_away()
        return await LiveState.live_toggle_pause(self)

    @rx.event
    async def load(self):
        """Show the page to an admin (with the room's current values); send anyone else away."""
        user = await self._admin()
        if user is None:
            return await self._send_away(toast=True)
        self.allowed = True
        service = AnalyticsService.current()
        if service is not None and watchers.listed(self.router.session.client_token):
            await service.publish(welcome=self.router.session.session_id)
        return None


# -- the dashboard ------------------------------------------------------------------


def _panel(
    title: str, chart: rx.Component, panel_id: str, note: str = "", *,
    now: Any = None, now_id: str | None = None,
) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.hstack(
                rx.heading(title, size="3"),
                rx.spacer(),
                rx.text(note, size="1", color_scheme="gray"),
                width="100%",
                align="center",
            ),
            rx.text(now, size="2", weight="medium", id=now_id) if now is not None else rx.fragment(),
            chart,
            width="100%",
        ),
        id=panel_id,
        width="100%",
    )


def _events_chart() -> rx.Component:
    return rx.recharts.bar_chart(
        rx.recharts.cartesian_grid(stroke_dasharray="3 3"),
        rx.recharts.x_axis(data_key="t"),
        rx.recharts.y_axis(allow_decimals=False),
        rx.recharts.graphing_tooltip(),
        rx.recharts.legend(),
        *[
            rx.recharts.bar(
                data_key=channel_key(channel),
                name=channel,
                stack_id="events",
                fill=CHANNEL_COLORS[channel],
                is_animation_active=False,
                class_name=f"series-{channel_key(channel)}",
            )
            for channel in PUBLIC_CHANNELS
        ],
        data=AdminRoom.events_per_minute,
        height=260,
    )


def _line(data_key: str, name: str, color: str, *, dot: bool, curve: str = "linear") -> rx.Component:
    return rx.recharts.line(
        data_key=data_key,
        name=name,
        stroke=color,
        stroke_width=2,
        # Filled dots: a minute with deliveries shows even without its neighbours.
        dot={"r": 4, "fill": color, "stroke": color} if dot else False,
        connect_nulls=True,
        is_animation_active=False,
        type_=curve,
        class_name=f"series-{data_key}",
    )


def _readers_chart() -> rx.Component:
    return rx.recharts.line_chart(
        rx.recharts.cartesian_grid(stroke_dasharray="3 3"),
        rx.recharts.x_axis(data_key="t", min_tick_gap=40),
        rx.recharts.y_axis(allow_decimals=False),
        rx.recharts.graphing_tooltip(),
        rx.recharts.legend(),
        # Counts held until the next sample: steps, not slopes.
        _line("tabs", "browser tabs", TABS_COLOR, dot=False, curve="stepAfter"),
        _line("sse", "SSE streams", SSE_COLOR, dot=False, curve="stepAfter"),
        data=AdminRoom.readers,
        height=240,
    )


def _latency_chart() -> rx.Component:
    return rx.recharts.line_chart(
        rx.recharts.cartesian_grid(stroke_dasharray="3 3"),
        rx.recharts.x_axis(data_key="t"),
        rx.recharts.y_axis(unit=" ms"),
        rx.recharts.graphing_tooltip(),
        rx.recharts.legend(),
        _line("p50", "p50", P50_COLOR, dot=True),
        _line("p99", "p99", P99_COLOR, dot=True),
        data=AdminRoom.latency,
        height=240,
    )


def _top_stories_chart() -> rx.Component:
    return rx.cond(
        AdminRoom.top_stories.length() > 0,
        rx.recharts.bar_chart(
            rx.recharts.cartesian_grid(stroke_dasharray="3 3"),
            rx.recharts.x_axis(type_="number", allow_decimals=False),
            rx.recharts.y_axis(data_key="title", type_="category", width=180),
            rx.recharts.graphing_tooltip(),
            rx.recharts.bar(
                data_key="readers",
                name="readers",
                fill=STORIES_COLOR,
                is_animation_active=False,
                class_name="series-readers",
            ),
            data=AdminRoom.top_stories,
            layout="vertical",
            height=260,
        ),
        rx.text("Nobody is reading a story right now.", color_scheme="gray", id="no-readers"),
    )


def _event_row(row: EventRow) -> rx.Component:
    return rx.table.row(
        rx.table.cell(row.id),
        rx.table.cell(row.channel),
        rx.table.cell(row.time),
        rx.table.cell(row.tab_broadcast),
        rx.table.cell(row.tab_handler),
        rx.table.cell(row.sse),
        rx.table.cell(row.p50),
        rx.table.cell(row.p99),
        class_name="event-record",
    )


def _recent_events() -> rx.Component:
    headers = ["event", "channel", "time (UTC)", "tabs (broadcast)", "tabs (handler)", "SSE", "p50", "p99"]
    return rx.table.root(
        rx.table.header(rx.table.row(*[rx.table.column_header_cell(h) for h in headers])),
        rx.table.body(rx.foreach(AdminRoom.recent, _event_row)),
        size="1",
        width="100%",
        id="recent-events",
    )


def _dashboard() -> rx.Component:
    return rx.vstack(
        rx.hstack(
            rx.heading("Delivery analytics", size="7"),
            rx.spacer(),
            rx.text("updated ", AdminRoom.updated, " UTC", size="2", color_scheme="gray", id="admin-updated"),
            width="100%",
            align="center",
        ),
        rx.grid(
            _panel("Events per minute", _events_chart(), "chart-events", "by channel, last 30 min"),
            _panel("Readers connected", _readers_chart(), "chart-readers", "every process, last 10 min",
                   now=AdminRoom.readers_now, now_id="readers-now"),
            _panel("Delivery latency", _latency_chart(), "chart-latency", "publish to delivery, per minute"),
            _panel("Top stories by readers now", _top_stories_chart(), "chart-top-stories", "open story pages"),
            columns=rx.breakpoints(initial="1", lg="2"),
            spacing="4",
            width="100%",
            id="admin-charts",
        ),
        _panel("Recent events", _recent_events(), "panel-recent", "readers reached, summed over processes"),
        width="100%",
        spacing="4",
    )


@rx.page(
    route="/admin",
    title="Admin · Fictures",
    on_load=[SessionState.check_login, AdminState.live_start, AdminState.load],
)
def admin() -> rx.Component:
    return page(
        rx.cond(AdminState.allowed, _dashboard(), loading()),
        extra=live_indicator(AdminState),
    )
