"""The page frame: the header's navigation, account links, theme toggle; the main landmark.

Wide screens show every navbar action in the bar. Below 768 px (styles.css) the bar
keeps the brand, the page's live indicator, the bell and the theme toggle, and
everything else (the page links, logging in or out, the account's settings) is
in one menu behind a button (Radix dropdown menu: aria-expanded, arrow keys,
Escape). Each element exists once in the DOM, so ids stay unique: the wide
bar's copies are hidden (display: none) on phones, and the menu's items, with
ids of their own (`menu-…`), are only rendered while it is open.
"""

from __future__ import annotations

import reflex as rx

from fictures.components.bell import (
    NotificationAnnouncer,
    bell,
    menu_opened,
    notification_menu_items,
)
from fictures.state import SessionState


def _wide_only(*children: rx.Component) -> rx.Component:
    """Shown from the width where the bar holds everything (assets/styles.css: .nav-wide)."""
    return rx.el.div(*children, class_name="nav-wide")


def _narrow_only(*children: rx.Component) -> rx.Component:
    """Shown below it (.nav-narrow)."""
    return rx.el.div(*children, class_name="nav-narrow")


def _nav_link(text: str, href: str, id: str) -> rx.Component:
    return rx.link(text, href=href, weight="medium", underline="hover", id=id)


def _logout_events() -> list:
    # This browser stops receiving the user's pushes (best effort).
    return [rx.call_script("window.fxNotify && fxNotify.forget()"), SessionState.logout]


def theme_toggle() -> rx.Component:
    """Light or dark theme (remembered by the browser); named for what it does."""
    return rx.icon_button(
        rx.color_mode_cond(light=rx.icon("moon", size=16), dark=rx.icon("sun", size=16)),
        on_click=rx.toggle_color_mode,
        variant="ghost",
        color_scheme="gray",
        size="2",
        id="dark-mode",
        aria_label=rx.color_mode_cond(light="Switch to dark theme", dark="Switch to light theme"),
    )


def _wide_account() -> rx.Component:
    return rx.cond(
        SessionState.logged_in,
        rx.hstack(
            rx.menu.root(
                rx.menu.trigger(
                    rx.button(
                        rx.text(SessionState.username, id="nav-username", weight="medium",
                                class_name="nav-username"),
                        rx.icon("chevron-down", size=14),
                        variant="ghost", size="2", id="account-menu",
                    ),
                ),
                rx.menu.content(*notification_menu_items(), align="end"),
                on_open_change=menu_opened(),
            ),
            rx.button("Log out", on_click=_logout_events(), variant="soft", size="1", id="logout"),
            align="center",
            spacing="3",
        ),
        rx.hstack(
            _nav_link("Log in", "/login", "nav-login"),
            _nav_link("Register", "/register", "nav-register"),
            align="center",
            spacing="4",
        ),
    )


def _menu_link(text: str, href: str, id: str) -> rx.Component:
    # Navigates in the page (no reload), by click, Enter or Space.
    return rx.menu.item(text, on_click=rx.redirect(href), id=id)


def _narrow_menu() -> rx.Component:
    """The phone menu: page links and account actions, behind one button."""
    return _narrow_only(
        rx.menu.root(
            rx.menu.trigger(
                rx.icon_button(
                    rx.icon("menu", size=18),
                    variant="ghost", color_scheme="gray", size="2",
                    id="nav-menu", aria_label="Menu",
                ),
            ),
            rx.menu.content(
                _menu_link("Community", "/community", "menu-community"),
                _menu_link("Writing", "/writing", "menu-writing"),
                rx.menu.separator(),
                rx.cond(
                    SessionState.logged_in,
                    rx.fragment(
                        rx.menu.item("Signed in as ", SessionState.username, disabled=True, id="menu-username"),
                        *notification_menu_items(id_prefix="menu-"),
                        rx.menu.item("Log out", on_click=_logout_events(), id="menu-logout"),
                    ),
                    rx.fragment(
                        _menu_link("Log in", "/login", "menu-login"),
                        _menu_link("Register", "/register", "menu-register"),
                    ),
                ),
                align="end",
                id="nav-menu-content",
            ),
            on_open_change=menu_opened(),
        ),
    )


def navbar(extra: rx.Component | None = None) -> rx.Component:
    return rx.el.header(
        rx.el.nav(
            rx.hstack(
                # The brand, not a heading: each page's own title is its one h1.
                rx.link(rx.text("Fictures", size="5", weight="bold", as_="span"), href="/community",
                        underline="none", id="nav-home"),
                _wide_only(
                    rx.hstack(
                        _nav_link("Community", "/community", "nav-community"),
                        _nav_link("Writing", "/writing", "nav-writing"),
                        align="center",
                        spacing="5",
                    ),
                ),
                align="center",
                spacing="5",
                min_width="0",
            ),
            rx.spacer(),
            rx.hstack(
                extra or rx.fragment(),
                rx.cond(SessionState.logged_in, rx.fragment(bell(), NotificationAnnouncer.create())),
                _wide_only(_wide_account()),
                theme_toggle(),
                _narrow_menu(),
                align="center",
                spacing="3",
            ),
            display="flex",
            align_items="center",
            gap="0.75em",
            width="100%",
            aria_label="Main",
        ),
        padding_y="0.8em",
        padding_x=rx.breakpoints(initial="0.75em", sm="1.2em"),
        border_bottom=f"1px solid {rx.color('gray', 5)}",
        width="100%",
    )


def page(*children: rx.Component, extra: rx.Component | None = None) -> rx.Component:
    return rx.box(
        navbar(extra),
        rx.el.main(
            rx.container(
                rx.vstack(*children, spacing="5", width="100%"),
                size="3",
                padding_y="1.5em",
                padding_x=rx.breakpoints(initial="0.75em", sm="1em"),
            ),
            id="main",
        ),
        width="100%",
    )


def loading() -> rx.Component:
    return rx.center(rx.spinner(size="3"), padding="3em", width="100%", role="status", aria_label="Loading")
