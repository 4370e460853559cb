"""Hostile input against the running app: Reflex's var tags in every text users
control, forged websocket events, wrong argument types.

Reflex 0.10.1 loops forever on a string holding `<reflex.Var>x</reflex.Var>`
built into a component or event at run time; before the fix, one post titled
that way froze the whole worker while anyone had the story open.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from playwright.sync_api import expect

from fictures.live_feed import CommunityRoom
from fictures.pages.community import CommunityState
from fictures.pages.writing import WritingState
from fictures.state import SessionState
from tests.e2e.conftest import AppServer, FlakyNetwork, http, wait_live
from tests.e2e.raw_socket import RawTab

TAGS = ("<reflex.Var>x</reflex.Var>", "<reflex.Var>1</reflex.Var>")


def _unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:6]}"


def _answers_within_a_second(app_server: AppServer) -> None:
    started = time.monotonic()
    r = http.get(f"{app_server.url}/api/stories?limit=1", timeout=1)
    assert r.status_code == 200
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("tag", TAGS)
def test_var_tags_in_a_post_show_as_typed_on_the_story_and_community(app_server: AppServer, new_page, tag):
    _, author = app_server.register()
    story = app_server.create_story(author, _unique("Tagged Replies"))
    watcher = new_page(f"/community/story/{story['id']}")
    community = new_page("/community")
    wait_live(watcher)
    wait_live(community)

    title, body = _unique(f"Nice {tag}"), f"Body {tag} end"
    r = app_server.api("POST", f"/api/stories/{story['id']}/posts", author, json={"title": title, "body": body})
    assert r.status_code == 201, r.text

    # The story page's toast is built on the server (a live hook), the community's in the browser.
    expect(watcher.get_by_text(f"New discussion: {title}", exact=True)).to_be_visible(timeout=3_000)
    expect(watcher.locator("#story-posts .post-title", has_text=title)).to_have_text(title)
    expect(watcher.locator("#story-posts")).to_contain_text(body)
    expect(community.get_by_text(f"New discussion: {title}", exact=True)).to_be_visible(timeout=3_000)
    _answers_within_a_second(app_server)


def test_var_tags_in_a_story_title_and_summary_from_the_writing_page(app_server: AppServer, new_page):
    _, token = app_server.register()
    reader = new_page("/community")
    wait_live(reader)
    author = new_page("/writing", token=token)
    title, summary = _unique(f"Moon {TAGS[0]} and {TAGS[1]}"), f"Summary {TAGS[0]} {TAGS[1]}"
    author.locator("#story-title-input").fill(title)
    author.locator("#story-summary-input").fill(summary)
    author.locator("#save-publish").click()

    expect(author.get_by_text("Published", exact=True)).to_be_visible()
    expect(author.locator(".my-story-title", has_text=title)).to_have_text(title)
    card = reader.locator(".story-card", has_text=title)
    expect(reader.get_by_text(f"New story: {title}", exact=True)).to_be_visible(timeout=3_000)
    expect(card.locator(".story-title")).to_have_text(title)
    expect(card.locator(".story-summary")).to_have_text(summary)
    _answers_within_a_second(app_server)

    story_id = app_server.api("GET", "/api/stories?limit=1").json()["items"][0]["id"]
    page = new_page(f"/community/story/{story_id}")
    expect(page.locator("#story-title")).to_have_text(title)


def test_var_tag_usernames_are_refused_with_the_reason(app_server: AppServer, new_page):
    r = http.post(f"{app_server.url}/api/auth/register",
                   json={"username": f"ada{TAGS[0]}", "password": "long enough"})
    assert r.status_code == 422
    assert "letters, digits or underscores" in r.text
    page = new_page("/register")
    page.locator("#username").fill(f"ada{TAGS[0]}")
    page.locator("#password").fill("long enough")
    page.locator("#submit").click()
    expect(page.locator("#error-username")).to_contain_text("letters, digits or underscores")
    _answers_within_a_second(app_server)


def test_history_replayed_after_a_reconnect_shows_var_tags_as_typed(app_server: AppServer, browser):
    _, token = app_server.register()
    story = app_server.create_story(token, _unique("Replayed"))
    context = browser.new_context(base_url=app_server.url)
    try:
        page = context.new_page()
        network = FlakyNetwork(page)
        page.goto(f"/community/story/{story['id']}")
        wait_live(page)
        network.cut()
        expect(page.locator("#live-indicator")).to_have_attribute("data-status", "offline", timeout=15_000)
        title = _unique(f"While away {TAGS[0]}")
        r = app_server.api("POST", f"/api/stories/{story['id']}/posts", token, json={"title": title, "body": TAGS[1]})
        assert r.status_code == 201
        app_server.wait_for_log(r"Fanned out post:created #\d+")
        network.restore()
        wait_live(page)
        expect(page.get_by_text(f"New discussion: {title}", exact=True)).to_be_visible()
        expect(page.locator("#story-posts .post-title", has_text=title)).to_have_text(title)
    finally:
        context.close()
    _answers_within_a_second(app_server)


def _event(state, method: str) -> str:
    return f"{state.get_full_name()}.{method}"


def test_handler_arguments_of_the_wrong_type_are_rejected_before_the_handler(app_server: AppServer):
    _, token = app_server.register()
    tab = RawTab(app_server.url, "/writing", auth_token=token)
    try:
        tab.hydrated()
        bad = [("delete", {"story_id": TAGS[0]}), ("delete", {"story_id": TAGS[1]}),
               ("toggle_visibility", {"story_id": "5"}), ("edit", {"story_id": True}),
               ("set_title", {"value": {"a": 1}}), ("save", {"publish": "yes"}),
               ("delete", {"story_id": 10**40})]
        for method, payload in bad:
            tab.send(_event(WritingState, method), payload)
        app_server.wait_for_log(r"Rejected event \w+", count=len(bad))
        _answers_within_a_second(app_server)

        # Text is text: the editor keeps the tag exactly as typed.
        tab.send(_event(WritingState, "set_title"), {"value": TAGS[0]})
        tab.wait_for(lambda _: TAGS[0] in tab.delta_values("title"), what="the title echo")
    finally:
        tab.close()


def test_forged_internal_events_are_dropped_and_cannot_silence_live_posts(app_server: AppServer, new_page):
    _, author = app_server.register()
    story = app_server.create_story(author, _unique("Still Heard"))
    community = new_page("/community")
    wait_live(community)
    attacker = RawTab(app_server.url, "/community")
    try:
        attacker.hydrated()
        next_post = app_server.api("GET", f"/api/stories/{story['id']}/posts").json()["items"]
        base = max([p["id"] for p in next_post], default=0)
        forged = [
            (_event(CommunityState, "live_receive"),
             {"data": {"channel": "post:created", "json": f'{{"id": {n}, "postId": {n}}}'}})
            for n in range(base, base + 60)
        ] + [
            (_event(CommunityState, "live_set_ok"), {"ok": True}),
            (_event(SessionState, "login_as"),
             {"user": {"id": 1, "username": "forged", "password_hash": "x"}, "token": "forged"}),
            (_event(SessionState, "current_user"), {}),
            (_event(SessionState, "require_user"), {}),
            (_event(SessionState, "setvar"), {"var_name": "user_id", "value": 1}),
            (_event(CommunityRoom, "setvar"), {"var_name": "s0", "value": {}}),
            ("reflex___state____state.hydrate", {}),
            ("no.such.event", {}),
        ]
        for name, payload in forged:
            attacker.send(name, payload)
        attacker.send_frame("not an object")
        attacker.send_frame({"name": _event(CommunityState, "load"), "payload": [1]})
        app_server.wait_for_log("Dropped a websocket event", count=len(forged) + 2)
        assert set(attacker.delta_values("username")) <= {""}
        assert set(attacker.delta_values("user_id")) <= {0}
        _answers_within_a_second(app_server)

        # The next real post still reaches every reader.
        title = _unique("Heard anyway")
        r = app_server.api("POST", f"/api/stories/{story['id']}/posts", author, json={"title": title, "body": "b"})
        assert r.status_code == 201
        expect(community.get_by_text(f"New discussion: {title}", exact=True)).to_be_visible(timeout=3_000)
        app_server.wait_for_log(r"Fanned out post:created #\d+ to [1-9]\d* tabs \([1-9]\d* in one broadcast frame")
    finally:
        attacker.close()


def test_websockets_from_other_origins_are_refused(app_server: AppServer):
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus):
        RawTab(app_server.url, origin="http://evil.example")
    own = RawTab(app_server.url, origin=app_server.url)
    try:
        own.hydrated()
    finally:
        own.close()
    r = httpx.options(f"{app_server.url}/api/stories", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert r.headers.get("access-control-allow-origin") not in ("*", "http://evil.example")
    r = http.get(f"{app_server.url}/api/stories", headers={"Origin": "http://evil.example"})
    assert r.headers.get("access-control-allow-origin") not in ("*", "http://evil.example")
