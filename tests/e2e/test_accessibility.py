"""Accessibility: axe-core finds nothing serious or critical on the main pages, in
the light and the dark theme (the community page with its live banner and toasts
showing); every form field has a real label; the live parts are polite status
regions; the keyboard reaches everything, with a visible focus ring."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import AppServer, wait_live

THEMES = ("light", "dark")
BLOCKING = ("serious", "critical")


def _axe(page: Page, axe_script: str) -> list[dict]:
    """Run axe-core on the page as it is now; its violations, worst first."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=axe_script)
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    order = {"critical": 0, "serious": 1, "moderate": 2, "minor": 3}
    return sorted(result["violations"], key=lambda v: order.get(v["impact"], 4))


def _assert_accessible(page: Page, axe_script: str, what: str) -> None:
    blocking = [v for v in _axe(page, axe_script) if v["impact"] in BLOCKING]
    report = "\n".join(
        f"  {v['impact']} {v['id']}: {v['help']}\n"
        + "\n".join(f"      {n['target']}: {n['failureSummary'].splitlines()[-1].strip()}" for n in v["nodes"][:5])
        for v in blocking
    )
    assert not blocking, f"axe-core on {what}:\n{report}"


def _in_theme(page: Page, theme: str) -> None:
    """The page renders in `theme` (the browser's preference, which the app follows)."""
    expect(page.locator("html")).to_have_class(re.compile(rf"\b{theme}\b"))


def test_axe_itself_reports_a_nameless_button(app_server: AppServer, new_page, axe_script):
    """The checker runs and sees the page: a button with no name is a critical violation."""
    page = new_page("/login")
    expect(page.locator("#username")).to_be_visible()
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)  # hydrated and settled: React leaves the page's DOM alone from here
    page.evaluate("""() => {
        const b = document.createElement("button");
        b.id = "nameless";
        document.body.appendChild(b);
    }""")
    expect(page.locator("#nameless")).to_have_count(1)
    found = {v["id"]: v for v in _axe(page, axe_script)}
    expect(page.locator("#nameless")).to_have_count(1)
    assert "button-name" in found and found["button-name"]["impact"] == "critical", list(found)
    assert any("#nameless" in n["target"] for n in found["button-name"]["nodes"])


@pytest.mark.parametrize("theme", THEMES)
def test_community_with_live_banner_and_toasts_has_no_serious_violations(
    app_server: AppServer, new_page, axe_script, theme: str
):
    _, token = app_server.register()
    story = app_server.create_story(token, f"Already here {uuid.uuid4().hex[:6]}", genre="mystery",
                                    summary="Loaded with the page.")
    r = app_server.api("POST", f"/api/stories/{story['id']}/posts", token, json={"title": "Loaded", "body": "b"})
    assert r.status_code == 201
    # A visitor: arrivals keep their NEW badges and the banner its count.
    reader = new_page("/community", color_scheme=theme)
    _in_theme(reader, theme)
    wait_live(reader)
    titles = [f"Arrival {i} {uuid.uuid4().hex[:6]}" for i in range(2)]
    for title in titles:
        app_server.create_story(token, title, genre="fantasy", summary="Arrived while the reader was here.")
    r = app_server.api("POST", f"/api/stories/{story['id']}/posts", token, json={"title": "Live post", "body": "b"})
    assert r.status_code == 201
    expect(reader.locator("#new-stories-count")).to_have_text("2 new stories published")
    expect(reader.locator(".story-card[data-new='1']")).to_have_count(2)
    for title in titles:
        expect(reader.get_by_text(f"New story: {title}")).to_be_visible()
    # Hovering the toasts holds them (sonner pauses its timers) while axe runs.
    reader.locator("[data-sonner-toast]").first.hover()
    expect(reader.locator("[data-sonner-toast]")).to_have_count(3)
    _assert_accessible(reader, axe_script, f"/community ({theme}, banner and toasts showing)")
    expect(reader.locator("[data-sonner-toast]")).to_have_count(3)  # they were there all along

    # A member back after others published: the "since your last visit" banner too.
    username, member_token = app_server.register()
    first = new_page("/community", token=member_token, color_scheme=theme)
    wait_live(first)
    first.close()
    app_server.create_story(token, f"While away {uuid.uuid4().hex[:6]}")
    r = app_server.api("POST", "/api/auth/token", json={"username": username, "password": "password123"})
    assert r.status_code == 200, r.text  # a new login begins a new visit
    member = new_page("/community", token=r.json()["token"], color_scheme=theme,
                      viewport={"width": 1280, "height": 140})  # no card in view: none is marked seen
    wait_live(member)
    expect(member.locator("#visit-new-banner")).to_be_visible()
    expect(member.locator("#notification-bell")).to_be_visible()
    _assert_accessible(member, axe_script, f"/community ({theme}, logged in, since-last-visit banner)")


@pytest.mark.parametrize("theme", THEMES)
def test_story_writing_and_login_pages_have_no_serious_violations(
    app_server: AppServer, new_page, axe_script, theme: str
):
    _, token = app_server.register()
    story = app_server.create_story(token, f"Read me {uuid.uuid4().hex[:6]}", genre="romance",
                                    summary="A summary.", content="Once upon a time.")
    r = app_server.api("POST", f"/api/stories/{story['id']}/posts", token, json={"title": "A post", "body": "b"})
    assert r.status_code == 201
    app_server.create_story(token, f"Unfinished {uuid.uuid4().hex[:6]}", status="draft")

    member = new_page(f"/community/story/{story['id']}", token=token, color_scheme=theme)
    _in_theme(member, theme)
    wait_live(member)
    expect(member.locator("#post-title")).to_be_visible()
    expect(member.locator("#story-posts .post-card")).to_have_count(1)
    _assert_accessible(member, axe_script, f"a story page ({theme}, logged in)")

    member.goto("/writing")
    wait_live(member)
    expect(member.locator("#my-stories .rt-Card")).to_have_count(2)
    _assert_accessible(member, axe_script, f"/writing ({theme})")

    # Errors shown inline are part of the page too.
    member.locator("#save-draft").click()
    expect(member.locator("#error-title")).to_be_visible()
    _assert_accessible(member, axe_script, f"/writing with a form error ({theme})")

    visitor = new_page("/login", color_scheme=theme)
    _in_theme(visitor, theme)
    expect(visitor.locator("#username")).to_be_visible()
    _assert_accessible(visitor, axe_script, f"/login ({theme})")
    visitor.locator("#submit").click()
    expect(visitor.locator("#error-username")).to_be_visible()
    _assert_accessible(visitor, axe_script, f"/login with form errors ({theme})")


def test_every_form_field_has_a_label(app_server: AppServer, new_page):
    _, token = app_server.register()
    story = app_server.create_story(token, f"Labelled {uuid.uuid4().hex[:6]}")

    page = new_page("/login")
    for name, field in (("Username", "#username"), ("Password", "#password")):
        expect(page.get_by_label(name, exact=True)).to_have_attribute("id", field[1:])
    page.get_by_text("Username", exact=True).click()  # a real <label for>: clicking it focuses the field
    expect(page.locator("#username")).to_be_focused()
    page.goto("/register")
    expect(page.get_by_label("Username", exact=True)).to_have_attribute("id", "username")
    expect(page.get_by_label("Password", exact=True)).to_have_attribute("id", "password")

    page = new_page("/writing", token=token)
    for name, field in (("Title", "story-title-input"), ("Genre", "story-genre-input"),
                        ("Summary", "story-summary-input"), ("Story", "story-content-input")):
        expect(page.get_by_label(name, exact=True)).to_have_attribute("id", field)
    # The genre select (a Radix button) is named by its label and opens from it.
    expect(page.get_by_role("combobox", name="Genre")).to_have_attribute("id", "story-genre-input")

    page.goto(f"/community/story/{story['id']}")
    for name, field in (("Kind of post", "post-type"), ("Title", "post-title"), ("Post", "post-body")):
        expect(page.get_by_label(name, exact=True)).to_have_attribute("id", field)

    page.goto("/community")
    expect(page.get_by_role("combobox", name="Genre")).to_have_attribute("id", "genre-filter")


def test_the_banner_and_the_live_indicator_are_polite_status_regions(app_server: AppServer, new_page):
    _, token = app_server.register()
    reader = new_page("/community")
    wait_live(reader)
    for region in ("#new-stories-status", "#live-status"):
        expect(reader.locator(region)).to_have_attribute("role", "status")
        expect(reader.locator(region)).to_have_attribute("aria-live", "polite")
    # The banner's region is there, empty, before anything arrives, so the
    # arrival is a change a screen reader announces.
    expect(reader.locator("#new-stories-status")).to_have_text("")
    expect(reader.locator("#live-status")).to_have_text("Live")
    title = f"Announced {uuid.uuid4().hex[:6]}"
    app_server.create_story(token, title)
    expect(reader.get_by_role("status").filter(has_text="1 new story published")).to_be_visible()
    expect(reader.locator("#new-stories-status #view-now")).to_be_visible()


def _focused(page: Page) -> dict:
    return page.evaluate("""() => {
        const el = document.activeElement;
        const style = getComputedStyle(el);
        return {
            id: el.id,
            text: (el.innerText || el.getAttribute("aria-label") || "").trim().slice(0, 60),
            href: el.getAttribute("href") || "",
            inCard: !!el.closest(".story-card"),
            focusVisible: el.matches(":focus-visible"),
            outline: [style.outlineStyle, parseFloat(style.outlineWidth), style.outlineColor],
            background: getComputedStyle(document.body).backgroundColor,
        };
    }""")


def _ring_visible(focus: dict) -> bool:
    style, width, color = focus["outline"]
    return focus["focusVisible"] and style != "none" and width >= 2 and color not in ("transparent", "rgba(0, 0, 0, 0)")


@pytest.mark.parametrize("theme", THEMES)
def test_tab_reaches_view_now_and_a_card_link_with_a_visible_focus_ring(
    app_server: AppServer, new_page, theme: str
):
    _, token = app_server.register()
    app_server.create_story(token, f"Older {uuid.uuid4().hex[:6]}")
    reader = new_page("/community", color_scheme=theme)
    wait_live(reader)
    title = f"Keyboard arrival {uuid.uuid4().hex[:6]}"
    app_server.create_story(token, title)
    expect(reader.locator("#view-now")).to_be_visible()

    reader.locator("body").click(position={"x": 5, "y": 300})  # start from the page, not the address bar
    seen: list[dict] = []
    view_now = card_link = None
    for _ in range(40):
        reader.keyboard.press("Tab")
        focus = _focused(reader)
        seen.append(focus)
        if focus["id"] == "view-now":
            view_now = focus
        if focus["inCard"] and focus["href"].startswith("/community/story/"):
            card_link = focus
        if view_now and card_link:
            break
    steps = [f["id"] or f["text"] for f in seen]
    assert view_now is not None, f"Tab never reached View now: {steps}"
    assert card_link is not None, f"Tab never reached a story card's link: {steps}"
    # Every stop on the way showed where the focus was.
    assert all(_ring_visible(f) for f in seen), [(f["id"] or f["text"], f["outline"]) for f in seen
                                                 if not _ring_visible(f)]

    # The card link reached is the first card (the arrival), and Enter opens it.
    assert title in reader.locator(f"a[href='{card_link['href']}']").inner_text()
    reader.keyboard.press("Enter")
    expect(reader).to_have_url(re.compile(re.escape(card_link["href"]) + "$"))


def test_view_now_works_from_the_keyboard(app_server: AppServer, new_page):
    _, token = app_server.register()
    reader = new_page("/community")
    wait_live(reader)
    app_server.create_story(token, f"Enter key {uuid.uuid4().hex[:6]}")
    reader.locator("#view-now").focus()
    reader.keyboard.press("Enter")
    expect(reader.locator("#new-stories-banner")).to_have_count(0)
