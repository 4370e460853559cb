"""With several backend workers, each tab gets each event exactly once."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import AppServer, open_on


@pytest.fixture(scope="module")
def app_server(two_worker_app: AppServer) -> AppServer:
    """Two workers (shared with the other two-worker module: conftest.two_worker_app)."""
    return two_worker_app


def test_each_tab_gets_each_event_once_across_workers(app_server: AppServer, new_page):
    _, token = app_server.register()
    tabs = [new_page("/community") for _ in range(6)]
    for tab in tabs:
        expect(tab.locator("#live-indicator")).to_have_attribute("data-status", "live")
    titles = [f"Across Workers {uuid.uuid4().hex[:6]}" for _ in range(3)]
    for title in titles:
        app_server.create_story(token, title)
    for tab in tabs:
        for title in titles:
            expect(tab.locator(".story-card", has_text=title)).to_have_count(1)
            expect(tab.get_by_text(f"New story: {title}")).to_have_count(1)
        expect(tab.locator("#new-stories-count")).to_have_text("3 new stories published")

    log = app_server.log_since_mark()  # this test's lines (the app served the presence tests too)
    workers = set(re.findall(r"\[(\d+)\] INFO fictures.live: Live tab connected", log))
    fanned = re.findall(r"\[(\d+)\] INFO fictures.live: Fanned out story:published", log)
    print(f"tabs connected on worker pids {sorted(workers)}; fan-out lines per worker: "
          f"{ {pid: fanned.count(pid) for pid in set(fanned)} }")
    # Every worker has its own subscriber: each fans every event out once.
    assert len(set(fanned)) == 2 and all(fanned.count(pid) == len(titles) for pid in set(fanned))


def test_stream_limit_counts_across_workers(app_server: AppServer):
    """Streams from one address are counted together whichever worker serves them."""
    from tests.e2e.test_event_stream import assert_exactly_the_limit_opens

    app_server.mark_log()
    assert_exactly_the_limit_opens(app_server)
    opened = re.findall(r"\[(\d+)\] INFO fictures.api.sse: SSE stream opened", app_server.log_since_mark())
    print(f"streams opened per worker pid: { {pid: opened.count(pid) for pid in set(opened)} }")


def test_read_counts_reach_the_author_on_every_worker(app_server: AppServer, new_page):
    """A reader on one worker raises "Read by N" in the author's tabs on both:
    one story-read signal, then one frame per room on each worker."""
    _, token = app_server.register()
    story = app_server.create_story(token, f"Read Across Workers {uuid.uuid4().hex[:6]}")
    path = f"/community/story/{story['id']}"
    app_server.mark_log()
    writing = [new_page("/writing", token=token) for _ in range(3)]
    pages = [new_page(path, token=token) for _ in range(3)]
    counts = [tab.locator(f"#my-story-{story['id']} .read-count") for tab in writing]
    counts += [tab.locator("#read-count") for tab in pages]
    for tab in [*writing, *pages]:
        expect(tab.locator("#live-indicator")).to_have_attribute("data-status", "live")
    connected = set(re.findall(r"\[(\d+)\] INFO fictures.live: Live tab connected", app_server.log_since_mark()))
    if len(connected) == 1:
        # The kernel gave every tab to one worker (it picks): one more on the other.
        extra = open_on(app_server, new_page, path, token=token, avoid=connected.pop())
        counts.append(extra.locator("#read-count"))
    for count in counts:
        expect(count).to_have_text("Read by 0")
    for n in range(1, 4):
        new_page(path)  # a reader who is not logged in, in a browser of their own
        for count in counts:
            expect(count).to_have_text(f"Read by {n}")

    log = app_server.log_since_mark()
    tabs = set(re.findall(r"\[(\d+)\] INFO fictures.live: Live tab connected", log))
    shown = re.findall(r"\[(\d+)\] INFO fictures.live_receipts: Read by \d+: story " + str(story["id"]), log)
    print(f"tabs on worker pids {sorted(tabs)}; read counts shown per worker: "
          f"{ {pid: shown.count(pid) for pid in set(shown)} }")
    # The author's tabs were on both workers, and each showed every new count.
    assert len(tabs) == 2 and set(shown) == tabs


def test_notifications_reach_every_tab_of_the_user_on_every_worker(app_server: AppServer, new_page):
    """The bell of each of the author's tabs, on whichever worker serves it, any page."""
    author, author_token = app_server.register()
    story = app_server.create_story(author_token, f"Many Rooms {uuid.uuid4().hex[:6]}")
    _, reader_token = app_server.register()
    app_server.mark_log()
    tabs = [new_page(path, token=author_token) for path in ("/community", "/writing") * 3]
    for tab in tabs:
        expect(tab.locator("#nav-username")).to_have_text(author)
    r = app_server.api("POST", f"/api/stories/{story['id']}/posts", reader_token,
                       json={"title": "Knock knock", "body": "Who is there?"})
    assert r.status_code == 201, r.text
    for tab in tabs:
        expect(tab.locator("#notification-bell")).to_have_attribute("aria-label", "Notifications: 1 unread")
    tabs[0].locator("#notification-bell").click()
    tabs[0].locator("#mark-all-read").click()
    for tab in tabs:
        expect(tab.locator("#notification-bell")).to_have_attribute("aria-label", "Notifications: 0 unread")
    delivered = re.findall(
        r"\[(\d+)\] INFO fictures.bell: Delivered private:notification #\d+ to (\d+) tabs",
        app_server.log_since_mark(),
    )
    print(f"notification delivered per worker pid: {delivered}")
    # Each worker delivered to its own tabs of this user only: together, all six.
    assert sum(int(n) for _, n in delivered) == len(tabs)


def test_the_admin_page_sums_the_deliveries_of_every_worker(app_server: AppServer, new_page):
    """Each worker adds its share of an event's record; the admin page shows the sum."""
    from tests.e2e.test_admin import new_admin

    _, admin_token = new_admin(app_server)
    _, author = app_server.register()
    app_server.mark_log()
    tabs = [new_page("/community") for _ in range(6)]
    for tab in tabs:
        expect(tab.locator("#live-indicator")).to_have_attribute("data-status", "live")
    title = f"Counted Everywhere {uuid.uuid4().hex[:6]}"
    app_server.create_story(author, title)
    for tab in tabs:
        expect(tab.locator(".story-card", has_text=title)).to_have_count(1)
    fanned = re.findall(
        r"\[(\d+)\] INFO fictures.live: Fanned out story:published #(\d+) to (\d+) tabs", app_server.log_since_mark()
    )
    per_worker = {pid: int(n) for pid, _, n in fanned}
    (event_id,) = {event_id for _, event_id, _ in fanned}
    print(f"tabs reached per worker pid: {per_worker}")
    assert sum(per_worker.values()) == 6

    admin = new_page("/admin", token=admin_token)
    row = admin.locator("#recent-events .event-record").filter(has_text=re.compile(rf"^{event_id}story:published"))
    expect(row.locator("td").nth(3)).to_have_text("6")  # the broadcast reached 6 tabs, on both workers
    # Readers connected now: the six tabs and the admin's, whichever worker holds them.
    expect(admin.locator("#readers-now")).to_have_text(re.compile(r"^([7-9]|\d\d+) tabs, "), timeout=15_000)
