"""The page frame: navigation, account links, dark mode toggle."""

from __future__ import annotations

import reflex as rx

from fictures.components.bell import (
    NotificationAnnouncer,
    bell,
    menu_opened,
    notification_menu_items,
)
from fictures.state import SessionState


def _nav_link(text: str, href: str) -> rx.Component:
    return rx.link(text, href=href, weight="medium", underline="none")


def navbar(extra: rx.Component | None = None) -> rx.Component:
    account = rx.cond(
        SessionState.logged_in,
        rx.hstack(
            bell(),
            NotificationAnnouncer.create(),
            rx.menu.root(
                rx.menu.trigger(
                    rx.button(
                        rx.text(SessionState.username, id="nav-username", weight="medium"),
                        rx.icon("chevron-down", size=14),
                        variant="ghost", size="2", id="account-menu",
                    ),
                ),
                rx.menu.content(*notification_menu_items(), align="end"),
                on_open_change=menu_opened(),
            ),
            rx.button(
                "Log out",
                # This browser stops receiving the user's pushes (best effort).
                on_click=[rx.call_script("window.fxNotify && fxNotify.forget()"), SessionState.logout],
                variant="soft", size="1", id="logout",
            ),
            align="center",
            spacing="3",
        ),
        rx.hstack(
            rx.link("Log in", href="/login", id="nav-login"),
            rx.link("Register", href="/register", id="nav-register"),
        ),
    )
    return rx.hstack(
        rx.hstack(
            rx.link(rx.heading("Fictures", size="5"), href="/community", underline="none"),
            _nav_link("Community", "/community"),
            _nav_link("Writing", "/writing"),
            align="center",
            spacing="5",
        ),
        rx.spacer(),
        rx.hstack(
            extra or rx.fragment(),
            account,
            rx.color_mode.button(size="1", variant="ghost", id="dark-mode"),
            align="center",
            spacing="4",
        ),
        padding_y="0.8em",
        padding_x="1.2em",
        border_bottom=f"1px solid {rx.color('gray', 5)}",
        width="100%",
        align="center",
    )


def page(*children: rx.Component, extra: rx.Component | None = None) -> rx.Component:
    return rx.box(
        navbar(extra),
        rx.container(rx.vstack(*children, spacing="5", width="100%"), size="3", padding_y="1.5em"),
        width="100%",
    )


def loading() -> rx.Component:
    return rx.center(rx.spinner(size="3"), padding="3em", width="100%")
