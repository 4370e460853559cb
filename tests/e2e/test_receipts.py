"""Read receipts ("Read by N") and "new since your last visit", in real browsers."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import AppServer, wait_live

# Tall enough for the navigation bar only: no story card is in view.
NAVBAR_ONLY = {"width": 1280, "height": 120}


def _title(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"


def _read_by(page: Page, story_id: int | None = None):
    """The "Read by N" of the story page, or of one row of /writing."""
    if story_id is None:
        return page.locator("#read-count")
    return page.locator(f"#my-story-{story_id} .read-count")


@contextlib.contextmanager
def _browsers(browser: Browser, app_server: AppServer) -> Iterator:
    """`open_(path, token=None, viewport=None)`: a tab in a browser profile of its own."""
    contexts = []

    def open_(path: str, token: str | None = None, viewport: dict | None = None) -> Page:
        context = browser.new_context(base_url=app_server.url, viewport=viewport or {"width": 1280, "height": 720})
        if token:
            context.add_init_script(f"window.localStorage.setItem('fictures_token', {token!r});")
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(path)
        return page

    try:
        yield open_
    finally:
        for context in contexts:
            context.close()


def test_read_by_rises_live_for_the_author_and_counts_each_browser_once(app_server: AppServer, new_page):
    _, token = app_server.register()
    story = app_server.create_story(token, _title("Read Me"))
    draft = app_server.create_story(token, _title("Not Yet"), status="draft")
    path = f"/community/story/{story['id']}"

    writing = new_page("/writing", token=token)
    wait_live(writing)
    expect(_read_by(writing, story["id"])).to_have_text("Read by 0")
    expect(writing.locator(f"#my-story-{draft['id']}")).to_be_visible()
    expect(_read_by(writing, draft["id"])).to_have_count(0)  # drafts have no readers
    # The author opening their own story is not a reader.
    own = new_page(path, token=token)
    wait_live(own)
    expect(_read_by(own)).to_have_text("Read by 0")

    # A reader who is not logged in: counted once for this browser.
    first = new_page(path)
    expect(_read_by(first)).to_have_text("Read by 1")
    expect(_read_by(own)).to_have_text("Read by 1")
    expect(_read_by(writing, story["id"])).to_have_text("Read by 1")
    browser_id = first.evaluate("window.localStorage.getItem('fictures_browser_id')")
    assert browser_id and len(browser_id) == 32, browser_id
    first.reload()
    second_tab = first.context.new_page()  # the same browser, another tab
    second_tab.goto(path)
    for tab in (first, second_tab):
        expect(_read_by(tab)).to_have_text("Read by 1")
    assert second_tab.evaluate("window.localStorage.getItem('fictures_browser_id')") == browser_id

    # Another browser is another reader; so is an account (whatever browser it uses).
    new_page(path)
    expect(_read_by(own)).to_have_text("Read by 2")
    expect(_read_by(writing, story["id"])).to_have_text("Read by 2")
    _, reader_token = app_server.register()
    reader = new_page(path, token=reader_token)
    expect(_read_by(reader)).to_have_text("Read by 3")
    reader.reload()
    own.reload()
    wait_live(own)
    new_page(path)  # one more browser: had a reload counted, this would be 5
    for view in (_read_by(own), _read_by(writing, story["id"]), _read_by(reader)):
        expect(view).to_have_text("Read by 4")
    # The API agrees.
    assert app_server.api("GET", f"/api/stories/{story['id']}/reads").json()["reads"] == 4
    # A draft's page, opened by its author, counts nobody and shows no count.
    own.goto(f"/community/story/{draft['id']}")
    expect(own.locator("#story-title")).to_have_text(draft["title"])
    expect(_read_by(own)).to_have_count(0)
    assert app_server.api("GET", f"/api/stories/{draft['id']}/reads", token).json()["reads"] == 0


def test_a_read_while_redis_is_down_reaches_the_author_once_it_is_back(app_server: AppServer, new_page):
    """The read is in the database; its signal was lost. The author's page
    catches up (polling while live updates are down, a recount after the resubscribe)."""
    _, token = app_server.register()
    story = app_server.create_story(token, _title("Read in the Dark"))
    writing = new_page("/writing", token=token)
    wait_live(writing)
    expect(_read_by(writing, story["id"])).to_have_text("Read by 0")
    app_server.redis.stop()
    try:
        expect(writing.locator("#live-indicator")).to_have_attribute("data-status", "reconnecting", timeout=10_000)
        reader = new_page(f"/community/story/{story['id']}")
        expect(_read_by(reader)).to_have_text("Read by 1")
    finally:
        app_server.redis.start()
    wait_live(writing)
    expect(_read_by(writing, story["id"])).to_have_text("Read by 1")
    app_server.wait_for_log(r"Read counts recounted for \d+ story rooms and [1-9]\d* writer rooms")


def _log_in(page: Page, username: str, password: str = "password123") -> None:
    page.goto("/login")
    page.locator("#username").fill(username)
    page.locator("#password").fill(password)
    page.locator("#submit").click()
    page.wait_for_url("**/writing")


def _show_only(page: Page, selector: str) -> None:
    """Make the viewport as tall as one card and scroll it to that card: in view,
    while its neighbours are not."""
    card = page.locator(selector)
    box = card.bounding_box()
    assert box is not None, selector
    page.set_viewport_size({"width": NAVBAR_ONLY["width"], "height": int(box["height"]) + 20})
    card.evaluate("(el) => el.scrollIntoView({block: 'center'})")


def test_new_since_last_visit_banner_and_badges_cleared_once_seen(app_server: AppServer, browser: Browser):
    username, token = app_server.register()
    _, author_token = app_server.register()
    app_server.create_story(author_token, _title("Old News"), summary="Published before the visit.")
    with _browsers(browser, app_server) as open_:
        # The first visit: nothing is new since a previous one.
        first = open_("/community", token=token)
        wait_live(first)
        expect(first.locator("#story-list")).to_be_visible()
        expect(first.locator("#visit-new-banner")).to_have_count(0)
        first.close()

        # While the reader is away, three stories are published.
        away = [app_server.create_story(author_token, _title(f"While Away {i}")) for i in range(3)]
        newest, middle, oldest = (f"#story-{s['id']}" for s in reversed(away))

        # Logging in again begins a new visit. (A viewport that shows no card yet.)
        page = open_("/login", viewport=NAVBAR_ONLY)
        _log_in(page, username)
        page.goto("/community")
        wait_live(page)
        expect(page.locator("#visit-new-count")).to_have_text("3 new stories since your last visit")
        for card in (newest, middle, oldest):
            expect(page.locator(card).locator(".new-badge")).to_be_visible()
            expect(page.locator(card)).not_to_be_in_viewport()

        # A card in view is seen after a second: its badge clears, the others stay.
        _show_only(page, newest)
        shown = time.monotonic()
        expect(page.locator(newest).locator(".new-badge")).to_have_count(0, timeout=5_000)
        assert time.monotonic() - shown > 0.8, "cleared before it had been in view for a second"
        expect(page.locator("#visit-new-count")).to_have_text("2 new stories since your last visit")
        for card in (middle, oldest):
            expect(page.locator(card).locator(".new-badge")).to_be_visible()

        # It stays seen after a reload, and in another browser of the account.
        page.set_viewport_size(NAVBAR_ONLY)
        page.reload()
        other = open_("/community", token=token, viewport=NAVBAR_ONLY)
        for tab in (page, other):
            wait_live(tab)
            expect(tab.locator("#visit-new-count")).to_have_text("2 new stories since your last visit")
            expect(tab.locator(newest)).to_be_attached()
            expect(tab.locator(newest).locator(".new-badge")).to_have_count(0)
            expect(tab.locator(middle).locator(".new-badge")).to_be_visible()

        # Seen in one browser, cleared live in the other.
        _show_only(other, middle)
        expect(other.locator(middle).locator(".new-badge")).to_have_count(0, timeout=5_000)
        expect(page.locator(middle).locator(".new-badge")).to_have_count(0)
        expect(page.locator("#visit-new-count")).to_have_text("1 new story since your last visit")
        other.close()



def test_arrivals_seen_during_a_visit_are_not_new_at_the_next(app_server: AppServer, browser: Browser):
    username, token = app_server.register()
    _, author_token = app_server.register()
    with _browsers(browser, app_server) as open_:
        page = open_("/community", token=token, viewport=NAVBAR_ONLY)
        wait_live(page)
        seen, unseen = (app_server.create_story(author_token, _title(t)) for t in ("Seen Live", "Missed"))
        seen_card, unseen_card = f"#story-{seen['id']}", f"#story-{unseen['id']}"
        # Arrivals come with their badge and the live banner, as for everyone.
        expect(page.locator("#new-stories-count")).to_have_text("2 new stories published")
        for card in (seen_card, unseen_card):
            expect(page.locator(card).locator(".new-badge")).to_be_visible()
        # Seen, an arrival's badge clears, and the live banner counts what is left.
        _show_only(page, seen_card)
        expect(page.locator(seen_card).locator(".new-badge")).to_have_count(0, timeout=5_000)
        expect(page.locator("#new-stories-count")).to_have_text("1 new story published")
        expect(page.locator(unseen_card).locator(".new-badge")).to_be_visible()
        expect(page.locator("#visit-new-banner")).to_have_count(0)  # the first visit

        # The next visit (logging in again, in another browser): only the arrival
        # that was never seen is new since the last one.
        page.close()
        page = open_("/login", viewport=NAVBAR_ONLY)
        _log_in(page, username)
        page.goto("/community")
        wait_live(page)
        expect(page.locator("#visit-new-count")).to_have_text("1 new story since your last visit")
        expect(page.locator(unseen_card).locator(".new-badge")).to_be_visible()
        expect(page.locator(seen_card)).to_be_attached()
        expect(page.locator(seen_card).locator(".new-badge")).to_have_count(0)
        expect(page.locator("#new-stories-banner")).to_have_count(0)


def test_readers_who_are_not_logged_in_see_no_visit_banner(app_server: AppServer, new_page):
    _, token = app_server.register()
    reader = new_page("/community")
    wait_live(reader)
    title = _title("For Everyone")
    app_server.create_story(token, title)
    card = reader.locator(".story-card", has_text=title)
    expect(card.locator(".new-badge")).to_be_visible()
    expect(reader.locator("#new-stories-count")).to_have_text("1 new story published")
    expect(reader.locator("#visit-new-banner")).to_have_count(0)
    # (Their arrivals keep the badge while in view: test_live_community's first test.)
