"""Presence and typing in real Chromium tabs, served by two workers sharing Redis.

Tabs that must be served by different workers are opened until they are (each
tab's worker is read from the server log), so every count and line here
crosses processes through Redis.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import AppServer, FlakyNetwork, open_on, tab_token, wait_live, worker_of
from tests.e2e.raw_socket import RawTab

JOIN_MS = 2_000  # a tab joining shows in the others within 2 s
LEAVE_MS = 15_000  # a tab closed, crashed or cut drops out within 15 s
TYPING_MS = 1_000  # a typer shows within 1 s


@pytest.fixture(scope="module")
def app_server(two_worker_app: AppServer) -> AppServer:
    """Two workers (shared with the other two-worker module: conftest.two_worker_app)."""
    return two_worker_app


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


def _story(app_server: AppServer, status: str = "published") -> int:
    _, token = app_server.register()
    return app_server.create_story(token, _name("Presence story"), status=status)["id"]


def readers(page: Page, id_: str = "story-readers"):
    return page.locator(f"#{id_}")


def test_story_readers_join_and_leave_across_workers_users_once_names_in_popover(
    app_server: AppServer, new_page
):
    story = _story(app_server)
    path = f"/community/story/{story}"
    ada, ada_token = app_server.register(_name("ada"))
    guest = open_on(app_server, new_page, path)
    expect(readers(guest)).to_have_text("1 reading now", timeout=JOIN_MS)
    first_worker = worker_of(app_server, guest)

    ada_tab = open_on(app_server, new_page, path, token=ada_token, avoid=first_worker)
    expect(readers(guest)).to_have_text("2 reading now", timeout=JOIN_MS)
    expect(readers(ada_tab)).to_have_text("2 reading now", timeout=JOIN_MS)

    # ada's second tab, on the first worker: ada still counts once.
    ada_again = open_on(app_server, new_page, path, token=ada_token, want=first_worker)
    expect(readers(ada_again)).to_have_text("2 reading now", timeout=JOIN_MS)
    expect(readers(guest)).to_have_text("2 reading now")

    # Logged-in readers by name, anonymous ones counted.
    readers(guest).click()
    names = guest.locator("#story-readers-names")
    expect(names.locator(".reader-name")).to_have_text([ada])
    expect(names.locator(".reader-guests")).to_have_text("1 guest")
    # The REST API says the same.
    assert app_server.api("GET", f"/api/stories/{story}/presence").json() == {"count": 2, "users": [ada]}

    # One of ada's tabs closes: she is still reading in the other. Proof that the
    # close was handled: a tab opened afterwards on the same worker is counted on
    # top of her (that worker writes the two changes in order).
    ada_worker, ada_tab_token = worker_of(app_server, ada_tab), tab_token(ada_tab)
    ada_tab.close()
    app_server.wait_for_log(rf"Live tab left \({ada_tab_token[:8]}\)")
    probe = open_on(app_server, new_page, path, want=ada_worker)
    expect(readers(guest)).to_have_text("3 reading now", timeout=JOIN_MS)
    probe.close()
    expect(readers(guest)).to_have_text("2 reading now", timeout=LEAVE_MS)
    # Her last tab closes: she is gone, on the other worker too.
    ada_again.close()
    expect(readers(guest)).to_have_text("1 reading now", timeout=LEAVE_MS)
    expect(names.locator(".reader-name")).to_have_count(0)


def test_a_cut_websocket_and_a_silent_connection_drop_out_within_15_s(app_server: AppServer, new_page):
    story = _story(app_server)
    path = f"/community/story/{story}"
    watcher = open_on(app_server, new_page, path)
    watcher_worker = worker_of(app_server, watcher)

    # A tab whose websocket is cut (the network refuses its reconnects).
    context_page = new_page("/community")  # a fresh tab; its websocket routed through the test
    network = FlakyNetwork(context_page)
    context_page.goto(path)
    wait_live(context_page)
    expect(readers(watcher)).to_have_text("2 reading now", timeout=JOIN_MS)
    cut_at = time.monotonic()
    network.cut()
    expect(readers(watcher)).to_have_text("1 reading now", timeout=LEAVE_MS)
    print(f"cut websocket: dropped out after {time.monotonic() - cut_at:.1f} s")

    # A connection that goes silent without closing (a dead network: no FIN, no
    # pong) on the other worker: its socket stays open, yet it stops counting.
    raw = RawTab(app_server.url, path)
    try:
        assert raw.opening["pingInterval"] == 5_000  # FICTURES_SOCKET_PING_SECONDS
        raw.hydrated()
        expect(readers(watcher)).to_have_text("2 reading now", timeout=JOIN_MS)
        silent_at = time.monotonic()
        raw.hold_pongs()
        expect(readers(watcher)).to_have_text("1 reading now", timeout=LEAVE_MS)
        print(f"silent connection: dropped out after {time.monotonic() - silent_at:.1f} s "
              f"(watcher on worker {watcher_worker})")
        assert not raw.closed  # the server still holds the socket; presence did not wait for it
        app_server.wait_for_log(r"stopped answering pings; not counted as reading")
        # The network comes back (the ping it missed is answered): it counts again.
        raw.release_pongs()
        expect(readers(watcher)).to_have_text("2 reading now", timeout=LEAVE_MS)
    finally:
        raw.close()
    expect(readers(watcher)).to_have_text("1 reading now", timeout=LEAVE_MS)


def test_community_readers_online(app_server: AppServer, new_page):
    basil, basil_token = app_server.register(_name("basil"))
    first = open_on(app_server, new_page, "/community")
    count = re.compile(r"(\d+) readers? online")
    expect(readers(first, "community-readers")).to_have_text(count, timeout=JOIN_MS)
    before = int(count.fullmatch(readers(first, "community-readers").inner_text()).group(1))
    second = open_on(app_server, new_page, "/community", token=basil_token,
                     avoid=worker_of(app_server, first))
    expect(readers(first, "community-readers")).to_have_text(f"{before + 1} readers online", timeout=JOIN_MS)
    readers(first, "community-readers").click()
    expect(first.locator("#community-readers-names .reader-name", has_text=basil)).to_have_count(1)
    second.close()
    expect(readers(first, "community-readers")).to_have_text(
        f"{before} readers online" if before > 1 else "1 reader online", timeout=LEAVE_MS
    )


def test_drafts_have_no_presence(app_server: AppServer, new_page):
    _, token = app_server.register()
    draft = app_server.create_story(token, _name("Draft"), status="draft")["id"]
    own = wait_live(new_page(f"/community/story/{draft}", token=token))
    expect(own.locator("#story-title")).to_be_visible()
    stranger = wait_live(new_page(f"/community/story/{draft}"))
    expect(stranger.locator("#story-not-found")).to_be_visible()
    expect(readers(own)).to_have_count(0)
    assert app_server.api("GET", f"/api/stories/{draft}/presence", token).status_code == 404
    # Published (and the pages reloaded): both tabs are in its room.
    app_server.api("PUT", f"/api/stories/{draft}/visibility", token, json={"status": "published"})
    for page in (own, stranger):
        page.reload()
        wait_live(page)
    expect(readers(own)).to_have_text("2 reading now", timeout=JOIN_MS)
    assert app_server.api("GET", f"/api/stories/{draft}/presence").json()["count"] == 2
    # Back to a draft: both tabs leave its room at once (they reload the story on
    # the live event), and the count is gone with it.
    app_server.api("PUT", f"/api/stories/{draft}/visibility", token, json={"status": "draft"})
    expect(stranger.locator("#story-not-found")).to_be_visible(timeout=5_000)
    expect(own.get_by_text("Draft (only you see it)")).to_be_visible(timeout=5_000)
    expect(readers(own)).to_have_count(0)
    assert app_server.api("GET", f"/api/stories/{draft}/presence").status_code == 404
    # Nobody is left in the room in Redis either (published again, it starts from 0).
    app_server.api("PUT", f"/api/stories/{draft}/visibility", token, json={"status": "published"})
    deadline = time.monotonic() + 5
    while (count := app_server.api("GET", f"/api/stories/{draft}/presence").json()["count"]) and \
            time.monotonic() < deadline:
        own.wait_for_timeout(100)
    assert count == 0


def _typists(app_server: AppServer, new_page, path: str, count: int) -> tuple[list[str], list[Page]]:
    names = sorted(_name(p) for p in ("ada", "basil", "cleo")[:count])
    tabs = []
    for i, name in enumerate(names):
        _, token = app_server.register(name)
        avoid = worker_of(app_server, tabs[-1]) if tabs and i % 2 else None
        tabs.append(open_on(app_server, new_page, path, token=token, avoid=avoid))
        expect(tabs[-1].locator("#post-title")).to_be_visible()
    return names, tabs


def line(page: Page):
    return page.locator("#typing-line")


def test_typing_lines_for_one_two_and_three_typers(app_server: AppServer, new_page):
    path = f"/community/story/{_story(app_server)}"
    reader = open_on(app_server, new_page, path)
    (ada, basil, _), (ada_tab, basil_tab, cleo_tab) = _typists(app_server, new_page, path, 3)

    ada_tab.locator("#post-title").fill("A")
    expect(line(reader)).to_have_text(f"{ada} is writing a post…", timeout=TYPING_MS)
    expect(line(basil_tab)).to_have_text(f"{ada} is writing a post…", timeout=TYPING_MS)
    expect(line(ada_tab)).to_have_count(0)  # the typer's own tab does not show itself

    basil_tab.locator("#post-body").fill("B")
    expect(line(reader)).to_have_text(f"{ada} and {basil} are writing posts…", timeout=TYPING_MS)
    expect(line(ada_tab)).to_have_text(f"{basil} is writing a post…", timeout=TYPING_MS)
    expect(line(cleo_tab)).to_have_text(f"{ada} and {basil} are writing posts…", timeout=TYPING_MS)

    cleo_tab.locator("#post-title").fill("C")
    expect(line(reader)).to_have_text("3 people are writing posts…", timeout=TYPING_MS)
    expect(line(cleo_tab)).to_have_text(f"{ada} and {basil} are writing posts…", timeout=TYPING_MS)


def test_the_typing_line_clears_5_s_after_typing_stops(app_server: AppServer, new_page):
    path = f"/community/story/{_story(app_server)}"
    reader = open_on(app_server, new_page, path)
    (ada,), (ada_tab,) = _typists(app_server, new_page, path, 1)
    ada_tab.locator("#post-title").fill("Once")
    typed_at = time.monotonic()
    expect(line(reader)).to_have_text(f"{ada} is writing a post…", timeout=TYPING_MS)
    line(reader).wait_for(state="hidden", timeout=10_000)  # polls every frame: a precise time
    cleared = time.monotonic() - typed_at
    print(f"typing line cleared {cleared:.2f} s after the last keystroke")
    assert 4.5 <= cleared <= 6.5, cleared


def test_the_typing_line_clears_on_submit_and_when_the_typer_leaves(app_server: AppServer, new_page):
    path = f"/community/story/{_story(app_server)}"
    reader = open_on(app_server, new_page, path)
    (ada, basil), (ada_tab, basil_tab) = _typists(app_server, new_page, path, 2)

    ada_tab.locator("#post-title").fill("Loved it")
    ada_tab.locator("#post-body").fill("The ending!")
    expect(line(reader)).to_have_text(f"{ada} is writing a post…", timeout=TYPING_MS)
    submitted_at = time.monotonic()
    ada_tab.locator("#post-submit").click()
    line(reader).wait_for(state="hidden", timeout=3_000)
    print(f"typing line cleared {time.monotonic() - submitted_at:.2f} s after submit")
    expect(reader.locator("#story-posts")).to_contain_text("Loved it")

    basil_tab.locator("#post-title").fill("Hmm")
    expect(line(reader)).to_have_text(f"{basil} is writing a post…", timeout=TYPING_MS)
    left_at = time.monotonic()
    basil_tab.goto("/community")
    line(reader).wait_for(state="hidden", timeout=3_000)
    print(f"typing line cleared {time.monotonic() - left_at:.2f} s after the typer left")


def test_typing_reports_are_throttled_at_the_server_and_anonymous_ones_ignored(
    app_server: AppServer, new_page
):
    """A hostile tab sends typing reports as fast as it can: one signal goes out
    per interval; an anonymous tab's reports send nothing."""
    import json

    import redis

    from fictures.pages.story import StoryState

    path = f"/community/story/{_story(app_server)}"
    watcher = open_on(app_server, new_page, path)
    ada, token = app_server.register(_name("ada"))
    typist, anonymous = RawTab(app_server.url, path, auth_token=token), RawTab(app_server.url, path)
    client = redis.Redis.from_url(app_server.redis.url, decode_responses=True)
    channel = app_server.stream_key + ":signals"
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel)
    try:
        typist.hydrated()
        anonymous.hydrated()
        expect(readers(watcher)).to_have_text("3 reading now", timeout=JOIN_MS)
        typing, post_type = (f"{StoryState.get_full_name()}.{m}" for m in ("post_typing", "set_post_type"))
        started = time.monotonic()
        for _ in range(30):
            anonymous.send(typing)
            typist.send(typing)
        # A tab's events run in order: once this answer is back, the burst is done.
        typist.send(post_type, {"value": "question"})
        typist.wait_for(lambda _: "question" in typist.delta_values("post_type"), what="the burst done")
        burst = time.monotonic() - started
        expect(line(watcher)).to_have_text(f"{ada} is writing a post…", timeout=TYPING_MS)
        client.publish(channel, json.dumps({"kind": "test-end"}))
        heard, deadline = [], time.monotonic() + 10
        while not heard or heard[-1]["kind"] != "test-end":
            assert time.monotonic() < deadline, "the end marker never came back"
            # None for the subscribe confirmation (ignored) or nothing yet.
            if (message := listener.get_message(timeout=1)) is not None:
                heard.append(json.loads(message["data"]))
        typing_signals = [d for d in heard if d["kind"] == "typing"]
        print(f"60 reports in {burst:.2f} s: {len(typing_signals)} typing signal(s) {typing_signals}")
        # One per 1.5 s window at most (the browser's 2 s less jitter slack); the
        # anonymous tab sent none.
        assert 1 <= len(typing_signals) <= 1 + int(burst / 1.5)
        assert all(d["user"] == ada for d in typing_signals)
    finally:
        listener.close()
        client.close()
        typist.close()
        anonymous.close()
