"""The navbar's notification bell, the account menu's notification toggles, and
the browser hook that announces a notification arriving in this tab."""

from __future__ import annotations

import reflex as rx
from reflex.vars import Var, VarData

from fictures import reflex_compat
from fictures.bell import NotificationState


def _item(card) -> rx.Component:
    unread = ~card.read
    return rx.hstack(
        rx.box(
            rx.text(card.title, weight=rx.cond(unread, "bold", "regular"), size="2",
                    class_name="notification-title"),
            rx.text(
                "on ", rx.text.span(card.story_title, class_name="notification-story"),
                " by ", card.actor, " · ",
                rx.moment(date=card.created_at, from_now=True, class_name="notification-time"),
                size="1", color_scheme="gray",
            ),
            on_click=NotificationState.open_notification(card.id),
            cursor="pointer",
            flex_grow="1",
            class_name="notification-open",
        ),
        rx.cond(
            unread,
            rx.icon_button(
                rx.icon("check", size=14), size="1", variant="ghost",
                on_click=NotificationState.mark_read(card.id),
                class_name="notification-mark-read",
                aria_label="Mark read",
            ),
        ),
        id="notification-" + card.id.to_string(),
        class_name="notification-item",
        data_read=rx.cond(unread, "0", "1"),
        align="start",
        width="100%",
        padding="0.4em",
        border_radius="6px",
        background_color=rx.cond(unread, rx.color("accent", 3), "transparent"),
    )


def bell() -> rx.Component:
    """The bell with the unread count; opens the list (newest first)."""
    count = NotificationState.unread
    listing = rx.vstack(
        rx.hstack(
            rx.heading("Notifications", size="3"),
            rx.spacer(),
            rx.button("Mark all read", size="1", variant="soft",
                      on_click=NotificationState.mark_all_read, id="mark-all-read",
                      disabled=count == 0),
            width="100%",
            align="center",
        ),
        rx.cond(
            NotificationState.items.length() == 0,
            rx.text("No notifications yet.", size="2", color_scheme="gray"),
            rx.vstack(rx.foreach(NotificationState.items, _item), spacing="1",
                      width="100%", id="notification-list"),
        ),
        width="22em",
        max_width="calc(100vw - 3em)",
        max_height="60vh",
        overflow_y="auto",
    )
    # The trigger is the button itself (it gets aria-expanded); the count badge
    # sits beside it, hidden from screen readers, which read the button's label.
    return rx.box(
        rx.popover.root(
            rx.popover.trigger(
                rx.icon_button(
                    rx.icon("bell", size=18),
                    variant="ghost",
                    size="2",
                    id="notification-bell",
                    aria_label=NotificationState.bell_label,
                ),
            ),
            rx.popover.content(listing, align="end"),
        ),
        rx.cond(
            count > 0,
            rx.badge(count, color_scheme="red", variant="solid", radius="full",
                     id="notification-count", position="absolute", top="-6px",
                     right="-8px", size="1", aria_hidden="true", pointer_events="none"),
        ),
        position="relative",
        display="flex",
    )


_PUSH_LABELS = (
    ("on", "Turn off push notifications"),
    ("denied", "Push notifications blocked by the browser"),
    ("unsupported", "Push notifications unsupported here"),
    ("unavailable", "Push notifications unavailable"),
    ("error", "Push notifications failed: try again"),
)
_DESKTOP_LABELS = (
    ("on", "Turn off alerts while the page is hidden"),
    ("denied", "Alerts blocked by the browser"),
    ("unsupported", "Alerts unsupported here"),
    ("error", "Alerts failed: try again"),
)


def notification_menu_items(id_prefix: str = "") -> list[rx.Component]:
    """The account menu's toggles (ids `push-toggle`, `desktop-toggle`, after
    `id_prefix`). The browser asks for permission only from these clicks."""
    return [
        rx.menu.item(
            rx.match(NotificationState.push_status, *_PUSH_LABELS, "Turn on push notifications"),
            on_click=rx.call_script(
                "window.fxNotify ? fxNotify.pushToggle() : 'unsupported'",
                callback=NotificationState.set_push_status,
            ),
            # The menu stays open, showing the new setting.
            on_select=rx.prevent_default,
            id=f"{id_prefix}push-toggle",
            data_status=NotificationState.push_status,
        ),
        rx.menu.item(
            rx.match(NotificationState.desktop_status, *_DESKTOP_LABELS,
                     "Alert me while the page is hidden"),
            on_click=rx.call_script(
                "window.fxNotify ? fxNotify.desktopToggle() : 'unsupported'",
                callback=NotificationState.set_desktop_status,
            ),
            # The menu stays open, showing the new setting.
            on_select=rx.prevent_default,
            id=f"{id_prefix}desktop-toggle",
            data_status=NotificationState.desktop_status,
        ),
    ]


def menu_opened() -> list:
    """What opening the account menu runs: read this browser's current settings."""
    return [
        rx.call_script("window.fxNotify ? fxNotify.pushStatus() : 'unsupported'",
                       callback=NotificationState.set_push_status),
        rx.call_script("window.fxNotify ? fxNotify.desktopStatus() : 'unsupported'",
                       callback=NotificationState.set_desktop_status),
    ]


class NotificationAnnouncer(rx.Fragment):
    """The browser half of a live notification: when `arrived` changes after the
    page hydrated, a toast, and (hidden page, opted in) a system notification.
    The texts are state data, put together in JavaScript: never Reflex markup."""

    def add_hooks(self) -> list[str | Var]:
        arrived = NotificationState.arrived
        hydrated = rx.State.is_hydrated
        effect = Var(
            _js_expr=f"""() => {{
  const card = {arrived!s};
  if (!{hydrated!s}) return;
  if (fxBellSeen.current === null || !card.id || card.id === fxBellSeen.current) {{
    fxBellSeen.current = card.id;
    return;
  }}
  fxBellSeen.current = card.id;
  fxBellToast?.info("New post on " + card.story_title + ": " + card.title, {{
    description: "by " + card.actor,
    action: {{label: "Open", onClick: () => window.location.assign("/community/story/" + card.story_id)}},
  }});
  window.fxNotify?.announce(card);
}}""",
            _var_data=VarData.merge(arrived._get_all_var_data(), hydrated._get_all_var_data()),
        )
        return [
            Var(f"const fxBellToast = {reflex_compat.toast_ref};"),
            Var(
                "const fxBellSeen = useRef(null);",
                _var_data=VarData(imports={"react": [rx.ImportVar(tag="useRef")]}),
            ),
            Var(
                _js_expr=f"useEffect({effect!s});",
                _var_data=VarData.merge(
                    effect._get_all_var_data(),
                    VarData(imports={"react": [rx.ImportVar(tag="useEffect")]}),
                ),
            ),
        ]
