"""Phones: at 390 and 360 px every navbar action is on screen (behind the menu
button where it does not fit) and works, and no page scrolls sideways."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import AppServer, wait_hydrated, wait_live

WIDTHS = (390, 360)
# One unbroken 60-letter word: it has to wrap inside the page, not widen it.
LONG_WORD = "Unputdownable" * 4 + "Notwithstanding" * 1 + "x" * 8


def _phone(new_page, width: int, path: str = "/community", token: str | None = None) -> Page:
    return new_page(path, token=token, viewport={"width": width, "height": 780}, color_scheme="light")


def _no_sideways_scroll(page: Page, what: str) -> None:
    page.wait_for_load_state("networkidle")
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], (
        f"{what} scrolls sideways at {widths[1]} px (content is {widths[0]} px wide); too wide: "
        + str(page.evaluate("""() => [...document.querySelectorAll('body *')]
            .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 0.5)
            .slice(0, 5).map((e) => e.outerHTML.slice(0, 120))"""))
    )


def _on_screen(page: Page, selector: str) -> None:
    """Visible and wholly inside the viewport (reachable without scrolling sideways)."""
    locator = page.locator(selector)
    expect(locator).to_be_visible()
    expect(locator).to_be_in_viewport(ratio=1)


def _theme(page: Page) -> str:
    return "dark" if "dark" in (page.locator("html").get_attribute("class") or "") else "light"


def _open_menu(page: Page) -> None:
    button = page.locator("#nav-menu")
    _on_screen(page, "#nav-menu")
    expect(button).to_have_attribute("aria-expanded", "false")
    button.click()
    expect(button).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#nav-menu-content")).to_be_visible()


@pytest.mark.parametrize("width", WIDTHS)
def test_a_visitor_reaches_every_navbar_action_on_a_phone(app_server: AppServer, new_page, width: int):
    page = _phone(new_page, width)
    wait_live(page)
    # The wide bar's links are hidden; what stays in the bar is on screen.
    expect(page.locator("#nav-login")).to_be_hidden()
    expect(page.locator("#nav-community")).to_be_hidden()
    for selector in ("#nav-home", "#live-indicator", "#dark-mode", "#nav-menu"):
        _on_screen(page, selector)
    _no_sideways_scroll(page, "/community")

    # The theme toggle flips the theme, and back.
    before = _theme(page)
    page.locator("#dark-mode").click()
    expect(page.locator("html")).to_have_class(re.compile(r"\bdark\b" if before == "light" else r"\blight\b"))
    page.locator("#dark-mode").click()
    expect(page.locator("html")).to_have_class(re.compile(rf"\b{before}\b"))

    # Every action of the menu is on screen, and each one goes where it says.
    for item, path, landmark in (
        ("#menu-login", "/login", "#username"),
        ("#menu-register", "/register", "#username"),
        ("#menu-writing", "/login", "#username"),  # a visitor is asked to log in first
        ("#menu-community", "/community", "#story-list"),
    ):
        _open_menu(page)
        for other in ("#menu-community", "#menu-writing", "#menu-login", "#menu-register"):
            _on_screen(page, other)
        page.locator(item).click()
        expect(page).to_have_url(re.compile(rf"{re.escape(path)}$"))
        expect(page.locator(landmark)).to_be_visible()
        expect(page.locator("#nav-menu")).to_have_attribute("aria-expanded", "false")
        _no_sideways_scroll(page, path)


@pytest.mark.parametrize("width", WIDTHS)
def test_a_member_reaches_every_navbar_action_and_no_page_scrolls_sideways(
    app_server: AppServer, new_page, width: int
):
    username, token = app_server.register()
    story = app_server.create_story(
        token, f"{LONG_WORD} and a title long enough to wrap twice {uuid.uuid4().hex[:4]}",
        summary=f"{LONG_WORD} " * 10, content=f"{LONG_WORD} " * 30, genre="science-fiction",
    )
    r = app_server.api("POST", f"/api/stories/{story['id']}/posts", token,
                       json={"title": LONG_WORD, "body": f"{LONG_WORD} " * 5})
    assert r.status_code == 201, r.text
    app_server.create_story(token, f"{LONG_WORD} draft", status="draft")

    page = _phone(new_page, width, token=token)
    wait_live(page)
    expect(page.locator(f"#story-{story['id']}")).to_be_visible()
    for selector in ("#nav-home", "#live-indicator", "#notification-bell", "#dark-mode", "#nav-menu"):
        _on_screen(page, selector)
    expect(page.locator("#logout")).to_be_hidden()
    # Each page's own long-worded data, rendered before the width is measured.
    rendered = {
        "/community": page.locator(f"#story-{story['id']}"),
        f"/community/story/{story['id']}": page.locator("#story-posts .post-card", has_text=LONG_WORD),
        "/writing": page.get_by_text(f"{LONG_WORD} draft").first,
    }
    for path, data in rendered.items():
        page.goto(path)
        expect(page.locator("#nav-menu")).to_be_visible()
        expect(data).to_be_visible()
        _no_sideways_scroll(page, path)

    # The bell opens its list, inside the screen.
    page.locator("#notification-bell").click()
    expect(page.get_by_role("heading", name="Notifications")).to_be_visible()
    _on_screen(page, "#mark-all-read")
    page.keyboard.press("Escape")

    # The menu: who is signed in, the notification settings, Writing, Log out.
    page.goto("/community")
    _open_menu(page)
    expect(page.locator("#menu-username")).to_contain_text(username)
    for selector in ("#menu-community", "#menu-writing", "#menu-push-toggle", "#menu-desktop-toggle",
                     "#menu-logout"):
        _on_screen(page, selector)
    page.locator("#menu-writing").click()
    expect(page).to_have_url(re.compile(r"/writing$"))
    expect(page.locator(f"#my-story-{story['id']}")).to_be_visible()
    _no_sideways_scroll(page, "/writing with stories")

    _open_menu(page)
    page.locator("#menu-logout").click()
    expect(page).to_have_url(re.compile(r"/community$"))
    _open_menu(page)
    expect(page.locator("#menu-login")).to_be_visible()
    expect(page.locator("#menu-logout")).to_have_count(0)


def test_the_phone_menu_works_from_the_keyboard(app_server: AppServer, new_page):
    page = _phone(new_page, 360)
    wait_live(page)
    page.locator("#nav-menu").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#nav-menu")).to_have_attribute("aria-expanded", "true")
    # The first item has the focus; arrow keys move through the items (Radix
    # menu, past the separator); Enter picks one.
    expect(page.locator("#menu-community")).to_be_focused()
    for item in ("#menu-writing", "#menu-login"):
        page.keyboard.press("ArrowDown")
        expect(page.locator(item)).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/login$"))
    # The login page has replaced the previous one (its navbar with it: the URL
    # changes first), and is hydrated, before its menu is used.
    expect(page.locator("#username")).to_be_visible()
    wait_hydrated(page, "#nav-menu")
    # Escape closes the menu without doing anything.
    page.locator("#nav-menu").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#nav-menu-content")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#nav-menu-content")).to_have_count(0)
    expect(page.locator("#nav-menu")).to_be_focused()


def test_a_wide_screen_shows_every_action_in_the_bar(app_server: AppServer, new_page):
    page = new_page("/community", viewport={"width": 1024, "height": 700})
    wait_live(page)
    for selector in ("#nav-community", "#nav-writing", "#nav-login", "#nav-register", "#dark-mode"):
        expect(page.locator(selector)).to_be_visible()
    expect(page.locator("#nav-menu")).to_be_hidden()
    _no_sideways_scroll(page, "/community at 1024 px")
