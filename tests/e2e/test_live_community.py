"""Readers see what authors do, live, in another browser."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

from playwright.sync_api import expect

from fictures.live_feed import SLOTS, CommunityRoom
from tests.e2e.conftest import POLL_SECONDS, AppServer, FlakyNetwork, http, wait_live
from tests.e2e.raw_socket import RawTab


def _title(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"


# Every toast that appears from now on, once each, however short its life
# (a loaded machine may be slower than a toast's few seconds).
RECORD_TOASTS = """() => {
  window.fxToasts = [];
  const seen = new WeakSet();
  const look = () => document.querySelectorAll("[data-sonner-toast]").forEach((t) => {
    if (seen.has(t) || !t.innerText.trim()) return;
    seen.add(t);
    window.fxToasts.push(t.innerText.replace(/\\s+/g, " ").trim());
  });
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def _toasts_seen(page) -> list[str]:
    """The toasts recorded, but Reflex's own "Cannot connect to server" while the
    connection was cut."""
    return [t for t in page.evaluate("window.fxToasts") if not t.startswith("Cannot connect to server")]


def _back_online(reader, network) -> None:
    """Record the toasts from now on, bring the network back, wait for Live."""
    reader.evaluate(RECORD_TOASTS)
    network.restore()
    wait_live(reader)


def _toasts_after_catch_up(reader) -> list[str]:
    """The toasts once the first has shown and a second more passed (nothing else follows it)."""
    reader.wait_for_function("window.fxToasts.some((t) => !t.startsWith('Cannot connect'))")
    reader.wait_for_timeout(1_000)
    return _toasts_seen(reader)


@contextlib.contextmanager
def _reader_gone_offline(app_server: AppServer, browser, path: str, before=None):
    """A reader on `path`, Live, then cut off from the server until it shows
    Offline: yields (page, network); `network.restore()` brings it back."""
    context = browser.new_context(base_url=app_server.url)
    try:
        reader = context.new_page()
        network = FlakyNetwork(reader)
        reader.goto(path)
        wait_live(reader)
        if before is not None:
            before(reader)
        network.cut()
        expect(reader.locator("#live-indicator")).to_have_attribute("data-status", "offline", timeout=15_000)
        yield reader, network
    finally:
        context.close()


def test_published_story_arrives_live_with_toast_banner_badge_and_view_now(app_server: AppServer, new_page):
    _, token = app_server.register()
    # Enough stories that the reader has to scroll.
    for i in range(8):
        app_server.create_story(token, _title(f"Older story {i}"), summary="Filler " * 40)
    reader = new_page("/community")
    wait_live(reader)
    author = new_page("/writing", token=token)
    expect(author.locator("#story-title-input")).to_be_visible()

    first, second = _title("The Lighthouse Keeper"), _title("Salt and Iron")
    for title in (first, second):
        author.locator("#story-title-input").fill(title)
        author.locator("#story-summary-input").fill("A keeper, a storm, a letter.")
        started = time.monotonic()
        author.locator("#save-publish").click()
        card = reader.locator(".story-card", has_text=title)
        # wait_for polls on animation frames: a precise arrival time.
        card.locator(".new-badge").wait_for(state="visible", timeout=1_000)
        elapsed = time.monotonic() - started
        print(f"publish-to-reader latency for {title!r}: {elapsed * 1000:.0f} ms "
              f"(click at {time.strftime('%H:%M:%S', time.localtime(time.time() - elapsed))}"
              f".{int((time.time() - elapsed) % 1 * 1000):03d})")
        expect(reader.get_by_text(f"New story: {title}")).to_be_visible(timeout=1_000)
        author.locator("#new-story").click()

    expect(reader.locator("#new-stories-count")).to_have_text("2 new stories published")
    # The newest arrival is shown first (highest on the page), and both carry the
    # NEW badge; older stories don't.
    tops = sorted(
        (card.bounding_box()["y"], card.inner_text()) for card in reader.locator(".story-card").all()
    )
    assert second in tops[0][1] and first in tops[1][1], [t for _, t in tops[:3]]
    # ...in the DOM in that order too (screen readers and keyboard focus follow the DOM).
    in_dom = reader.locator(".story-card").all_inner_texts()
    assert second in in_dom[0] and first in in_dom[1], in_dom[:3]
    expect(reader.locator(".story-card[data-new='1']")).to_have_count(2)

    reader.mouse.wheel(0, 5000)
    expect(reader.locator(".story-card", has_text=second)).not_to_be_in_viewport()
    reader.locator("#view-now").click()
    expect(reader.locator(".story-card", has_text=second)).to_be_in_viewport()
    expect(reader.locator("#new-stories-banner")).to_have_count(0)


def test_post_on_story_page_toasts_in_another_tab(app_server: AppServer, new_page):
    _, author_token = app_server.register()
    story = app_server.create_story(author_token, _title("Under the Bridge"))
    _, commenter_token = app_server.register()
    watcher = new_page(f"/community/story/{story['id']}")
    wait_live(watcher)
    community = new_page("/community")
    wait_live(community)
    writer = new_page(f"/community/story/{story['id']}", token=commenter_token)
    wait_live(writer)

    post_title = _title("Loved the ending")
    writer.locator("#post-title").fill(post_title)
    writer.locator("#post-body").fill("The bridge scene stayed with me.")
    writer.locator("#post-submit").click()

    expect(watcher.get_by_text(f"New discussion: {post_title}")).to_be_visible(timeout=2_000)
    expect(watcher.locator("#story-posts")).to_contain_text(post_title)
    expect(community.get_by_text(f"New discussion: {post_title}")).to_be_visible(timeout=2_000)
    expect(community.locator("#recent-posts")).to_contain_text(post_title)


def test_unpublished_story_disappears_from_reader(app_server: AppServer, new_page):
    _, token = app_server.register()
    title = _title("Paper Moons")
    story = app_server.create_story(token, title)
    reader = new_page("/community")
    wait_live(reader)
    expect(reader.locator(f"#story-{story['id']}")).to_be_visible()

    author = new_page("/writing", token=token)
    row = author.locator(f"#my-story-{story['id']}")
    row.locator(".toggle-visibility").click()
    author.locator(".confirm-unpublish").click()  # it asks first
    expect(row).to_contain_text("draft")

    expect(reader.locator(f"#story-{story['id']}")).to_have_count(0, timeout=2_000)
    # And it is not shown again after a reload.
    reader.reload()
    wait_live(reader)
    expect(reader.get_by_text(title)).to_have_count(0)


def test_updated_and_deleted_stories_change_in_place(app_server: AppServer, new_page):
    _, token = app_server.register()
    story = app_server.create_story(token, _title("First Draft of Spring"))
    reader = new_page("/community")
    wait_live(reader)
    card = reader.locator(f"#story-{story['id']}")
    expect(card).to_be_visible()

    new_title = _title("Spring, Revised")
    assert app_server.api("PATCH", f"/api/stories/{story['id']}", token, json={"title": new_title}).status_code == 200
    expect(card).to_contain_text(new_title, timeout=2_000)

    assert app_server.api("DELETE", f"/api/stories/{story['id']}", token).status_code == 204
    expect(card).to_have_count(0, timeout=2_000)


def test_live_indicator_follows_redis_outage_and_polling_fills_the_gap(app_server: AppServer, new_page):
    _, token = app_server.register()
    reader = new_page("/community")
    wait_live(reader)

    app_server.redis.stop()
    expect(reader.locator("#live-indicator")).to_have_attribute("data-status", "reconnecting", timeout=10_000)
    expect(reader.locator("#live-indicator")).to_contain_text("Reconnecting")

    # Redis is down, yet publishing works (the outbox keeps the event) and the
    # reader's page, polling the database, shows the story.
    title = _title("Written During the Outage")
    app_server.create_story(token, title)
    expect(reader.locator(".story-card", has_text=title)).to_be_visible(timeout=(POLL_SECONDS + 5) * 1000)

    app_server.redis.start()
    wait_live(reader)
    expect(reader.locator("#live-indicator")).to_contain_text("Live")
    # The delayed event, relayed once Redis is back, reaches the tab and does not
    # duplicate the story.
    app_server.wait_for_log(r"Fanned out story:published #\d+ to [1-9]")
    expect(reader.locator(".story-card", has_text=title)).to_have_count(1)


def test_pause_and_resume_live_updates_is_remembered(app_server: AppServer, new_page):
    _, token = app_server.register()
    reader = new_page("/community")
    wait_live(reader)
    reader.locator("#live-pause").click()
    expect(reader.locator("#live-indicator")).to_have_attribute("data-status", "paused")

    title = _title("Quiet Hours")
    app_server.create_story(token, title)
    # The event went out; the paused tab is not in the broadcast room.
    app_server.wait_for_log(r"Fanned out story:published #\d+")
    expect(reader.get_by_text(f"New story: {title}")).to_have_count(0)
    expect(reader.locator(".story-card", has_text=title)).to_have_count(0)

    reader.reload()
    expect(reader.locator("#live-indicator")).to_have_attribute("data-status", "paused")
    reader.locator("#live-pause").click()
    wait_live(reader)
    expect(reader.locator(".story-card", has_text=title)).to_be_visible()


def test_tab_catches_up_after_losing_its_connection_with_one_summary_toast(app_server: AppServer, browser):
    _, token = app_server.register()
    with _reader_gone_offline(app_server, browser, "/community") as (reader, network):

        titles = [_title("Missed While Asleep"), _title("Also Missed"), _title("Missed Too")]
        stories = [app_server.create_story(token, title) for title in titles]
        r = app_server.api("POST", f"/api/stories/{stories[0]['id']}/posts", token,
                           json={"title": _title("Missed Post"), "body": "b"})
        assert r.status_code == 201, r.text
        app_server.wait_for_log(r"Fanned out (story:published|post:created) #\d+", count=4)
        expect(reader.get_by_text(titles[0])).to_have_count(0)

        _back_online(reader, network)
        # Every arrival is on the page, NEW, once; the banner counts them...
        for title in titles:
            expect(reader.locator(".story-card", has_text=title).locator(".new-badge")).to_be_visible()
            expect(reader.locator(".story-card", has_text=title)).to_have_count(1)
        expect(reader.locator("#new-stories-count")).to_have_text("3 new stories published")
        expect(reader.locator("#recent-posts")).to_contain_text("Missed Post")
        # ...and ONE toast says what happened, naming the newest stories.
        [summary] = _toasts_after_catch_up(reader)
        assert "3 new stories and 1 new post while you were away" in summary, summary
        assert f"{titles[2]}, {titles[1]}, {titles[0]}" in summary, summary

        # Live again: the next arrival has a toast of its own.
        after = _title("Back Online")
        app_server.create_story(token, after)
        expect(reader.get_by_text(f"New story: {after}")).to_be_visible()
        expect(reader.locator("#new-stories-count")).to_have_text("4 new stories published")


def test_a_tab_cut_off_before_its_first_load_finished_still_sums_up_what_it_missed(
    app_server: AppServer, browser
):
    """Live, but the frame that ends the first load (`is_hydrated` true) never
    arrives: the network drops right there. Back online, the arrivals it missed
    still make one summary toast (the tab counts from what it had shown)."""
    _, token = app_server.register()
    shown = app_server.create_story(token, _title("Shown Before The Drop"))
    context = browser.new_context(base_url=app_server.url)
    try:
        reader = context.new_page()
        network = FlakyNetwork(reader, cut_before=r'"is_hydrated_rx_state_":\s*true')
        reader.goto("/community")
        expect(reader.locator(".story-card", has_text=shown["title"])).to_be_visible()
        expect(reader.locator("#live-indicator")).to_have_attribute("data-status", "offline", timeout=15_000)
        assert network.cut_before is None  # the drop came where the first load would have ended

        titles = [_title("Missed Early"), _title("Missed Early Too")]
        stories = [app_server.create_story(token, title) for title in titles]
        r = app_server.api("POST", f"/api/stories/{stories[0]['id']}/posts", token,
                           json={"title": _title("Missed Early Post"), "body": "b"})
        assert r.status_code == 201, r.text
        app_server.wait_for_log(r"Fanned out (story:published|post:created) #\d+", count=3)

        _back_online(reader, network)
        for title in titles:
            expect(reader.locator(".story-card", has_text=title).locator(".new-badge")).to_be_visible()
        [summary] = _toasts_after_catch_up(reader)
        assert "2 new stories and 1 new post while you were away" in summary, summary
        assert f"{titles[1]}, {titles[0]}" in summary, summary
        assert shown["title"] not in summary, summary
    finally:
        context.close()


def test_a_tab_away_for_more_arrivals_than_the_slots_hold_gets_every_one_back_new(
    app_server: AppServer, browser
):
    """The broadcast slots hold the latest 20 arrivals; a tab that missed more
    (a long drop, or a move to another instance) shows every one NEW on
    reconnect, counted by the banner and the summary toast, once each."""
    _, token = app_server.register()
    older = _title("Before The Drop")
    app_server.create_story(token, older)

    def shows_older(page) -> None:
        expect(page.locator(".story-card", has_text=older)).to_be_visible()

    with _reader_gone_offline(app_server, browser, "/community", before=shows_older) as (reader, network):
        missed = SLOTS + 7
        run = uuid.uuid4().hex[:6]
        titles = [f"Gone {run} {i:02d}" for i in range(missed)]
        for title in titles:
            app_server.create_story(token, title)
        app_server.wait_for_log(r"Fanned out story:published #\d+", count=missed + 1)

        _back_online(reader, network)
        for title in titles:
            card = reader.locator(".story-card", has_text=title)
            expect(card).to_have_count(1)
            expect(card.locator(".new-badge")).to_be_visible()
        # Newest first, the slots' arrivals above the missed ones in the list.
        in_dom = [t for t in reader.locator(".story-card").all_inner_texts() if f"Gone {run} " in t]
        assert [next(x for x in titles if x in t) for t in in_dom] == titles[::-1], in_dom
        expect(reader.locator(".story-card", has_text=older).locator(".new-badge")).to_have_count(0)
        expect(reader.locator("#new-stories-count")).to_have_text(f"{missed} new stories published")
        [summary] = _toasts_after_catch_up(reader)
        assert f"{missed} new stories while you were away" in summary, summary
        assert f"{titles[-1]}, {titles[-2]}, {titles[-3]} and {missed - 3} more" in summary, summary

        # "View now" counts them all as viewed; the next arrival counts alone.
        reader.locator("#view-now").click()
        expect(reader.locator("#new-stories-banner")).to_have_count(0)
        after = _title("Back Online")
        app_server.create_story(token, after)
        expect(reader.get_by_text(f"New story: {after}")).to_be_visible()
        expect(reader.locator("#new-stories-count")).to_have_text("1 new story published")


def test_a_single_missed_story_toasts_as_usual_after_a_reconnect(app_server: AppServer, browser):
    _, token = app_server.register()
    with _reader_gone_offline(app_server, browser, "/community") as (reader, network):
        title = _title("Only One Missed")
        app_server.create_story(token, title)
        app_server.wait_for_log(r"Fanned out story:published #\d+")
        _back_online(reader, network)
        [toast] = _toasts_after_catch_up(reader)
        assert f"New story: {title}" in toast, toast


def test_story_page_catches_up_with_one_summary_toast(app_server: AppServer, browser):
    _, token = app_server.register()
    story = app_server.create_story(token, _title("Chatty Story"))
    with _reader_gone_offline(app_server, browser, f"/community/story/{story['id']}") as (reader, network):

        posts = [_title(f"Missed Post {i}") for i in range(3)]
        for title in posts:
            r = app_server.api("POST", f"/api/stories/{story['id']}/posts", token, json={"title": title, "body": "b"})
            assert r.status_code == 201, r.text
        app_server.wait_for_log(r"Fanned out post:created #\d+", count=3)

        _back_online(reader, network)
        for title in posts:
            expect(reader.locator("#story-posts .post-card", has_text=title)).to_have_count(1)
        [summary] = _toasts_after_catch_up(reader)
        assert "3 new posts while you were away" in summary, summary

        # Live again: the next post has a toast of its own.
        after = _title("Fresh Post")
        r = app_server.api("POST", f"/api/stories/{story['id']}/posts", token, json={"title": after, "body": "b"})
        assert r.status_code == 201, r.text
        expect(reader.get_by_text(f"New discussion: {after}")).to_be_visible()


def _room_frames(app_server: AppServer, path: str) -> float:
    text = http.get(f"{app_server.url}/api/metrics", timeout=10).text
    prefix = f'fictures_room_frames_total{{path="{path}"}} '
    return next(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


def test_tabs_joining_while_stories_arrive_get_their_hydrate_before_any_room_frame(app_server: AppServer):
    """Room frames go straight to each socket (reflex_compat.emit_to_room: onto
    its send queue, or to the server at once when nothing is ahead of them), not
    through a task per socket: a tab that connects while stories are being
    published still receives its hydrate snapshot before the first broadcast
    frame, and then every story's frame, in order."""
    _, token = app_server.register()
    room, root = CommunityRoom.get_full_name(), "reflex___state____state"
    stop, published = threading.Event(), []

    def publish() -> None:
        # Paced (one story every 10 ms at most, a publish takes ~6 ms here), so it is
        # still going once every tab is in, on a fast day too; bounded all the same.
        while not stop.is_set() and len(published) < 1000:
            published.append(app_server.create_story(token, f"Arriving {uuid.uuid4().hex[:6]}")["id"])
            stop.wait(0.01)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    tabs: list[RawTab] = []
    try:
        for _ in range(12):
            tabs.append(RawTab(app_server.url, "/community"))
            time.sleep(0.15)
        for tab in tabs:
            tab.hydrated()
        count = len(published)
        deadline = time.monotonic() + 10
        while len(published) < count + 3:  # a few more once every tab is in the room
            assert time.monotonic() < deadline and publisher.is_alive(), "the publisher stalled"
            time.sleep(0.05)
        stop.set()
        publisher.join(timeout=15)
        last = published[-1]
        for tab in tabs:
            tab.wait_for(lambda updates: any(
                v.get("id") == last for u in updates for v in (u.get("delta") or {}).get(room, {}).values()
                if isinstance(v, dict)
            ), what=f"story {last}")
            carrying = [u for u in tab.updates if room in (u.get("delta") or {})]
            # The first update carrying the room's values is the hydrate snapshot
            # (the whole state, is_hydrated false), not a broadcast frame.
            assert "is_hydrated_rx_state_" in carrying[0]["delta"].get(root, {}), carrying[0]
            assert len(carrying) > 3  # broadcast frames did arrive after it
            # Each frame after it carries the next story, in the order published,
            # none missing (frames written at once and through the queue alike).
            ids = [[v["id"] for v in u["delta"][room].values() if isinstance(v, dict) and v.get("id")]
                   for u in carrying[1:]]
            newest = [max(i) for i in ids if i]
            seen = [i for i in newest if i > newest[0]]
            expected = [i for i in published if newest[0] < i <= last]
            assert seen == expected, (seen, expected)
        # Most went to the server at once (the tabs' writers were idle between stories).
        direct, queued = (_room_frames(app_server, path) for path in ("direct", "queued"))
        assert direct > queued, (direct, queued)
    finally:
        stop.set()
        for tab in tabs:
            tab.close()


def test_room_values_come_with_the_hydrate_and_frames_not_with_every_event(app_server: AppServer):
    """Reflex would recompute (and compare) every uncached room value for each
    event a tab sends; room values reach a tab by its hydrate, its entering the
    room and broadcast frames only (rooms.values_by_hydrate_and_frames)."""
    from fictures.pages.community import CommunityState

    _, token = app_server.register()
    app_server.create_story(token, _title("Already There"))
    room = CommunityRoom.get_full_name()
    tab = RawTab(app_server.url, "/community")
    try:
        tab.hydrated()
        tab.wait_for(lambda updates: any(
            v is False for u in updates for v in [(u.get("delta") or {}).get(CommunityState.get_full_name(), {})
                                                  .get("loading_rx_state_")]), what="the page loaded")
        assert any(room in (u.get("delta") or {}) for u in tab.updates)  # hydrate / room entry
        seen = len(tab.updates)
        tab.send(f"{CommunityState.get_full_name()}.set_genre", {"genre": "horror"})
        tab.wait_for(lambda updates: any(
            (u.get("delta") or {}).get(CommunityState.get_full_name(), {}).get("genre_rx_state_") == "horror"
            for u in updates[seen:]), what="the genre change")
        # The event's own deltas (the page's state) carry no room value; a room's
        # frames (e.g. presence's readers) are frames of their own.
        page = CommunityState.get_full_name()
        ours = [u.get("delta") or {} for u in tab.updates[seen:] if page in (u.get("delta") or {})]
        assert ours and not [d for d in ours if room in d], ours
        # A story arriving still reaches it, as one broadcast frame.
        story = app_server.create_story(token, _title("Arriving"), genre="horror")
        tab.wait_for(lambda updates: any(
            isinstance(v, dict) and v.get("id") == story["id"]
            for u in updates[seen:] for v in (u.get("delta") or {}).get(room, {}).values()
        ), what="the broadcast frame")
    finally:
        tab.close()
