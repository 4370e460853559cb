""""Load more" under /community's stories and posts and a story's posts: the
next page by cursor from the database, in order, without repeats; the button
is gone at the end of the list."""

from __future__ import annotations

import uuid

from playwright.sync_api import Page, expect

from fictures.feed import POSTS_PAGE, STORIES_PAGE
from tests.e2e.conftest import POST_LIMIT_PER_USER, AppServer, wait_live

GENRE = "horror"


def _ids(page: Page, selector: str) -> list[int]:
    return [int(i.split("-")[-1]) for i in page.locator(selector).evaluate_all("(els) => els.map((e) => e.id)")]


def _post_many(app_server: AppServer, story_id: int, count: int, title: str) -> list[int]:
    """`count` posts on a story, oldest first (by several users: each may post only
    POST_LIMIT_PER_USER times a minute)."""
    made: list[int] = []
    for i in range(count):
        if i % POST_LIMIT_PER_USER == 0:
            _, token = app_server.register()
        r = app_server.api("POST", f"/api/stories/{story_id}/posts", token, json={"title": f"{title} {i}", "body": "b"})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    return made


def _load_all(page: Page, button: str, items: str) -> int:
    """Click `button` until it is gone; returns how many clicks it took."""
    clicks = 0
    while page.locator(button).count():
        before = page.locator(items).count()
        page.locator(button).click()
        clicks += 1
        expect(page.locator(items)).not_to_have_count(before)
        assert clicks < 50, "the button never went away"
    return clicks


def test_community_stories_load_more_by_cursor_until_the_end(app_server: AppServer, new_page):
    _, token = app_server.register()
    tag = uuid.uuid4().hex[:6]
    made = [app_server.create_story(token, f"Crypt {tag} {i}", genre=GENRE)["id"] for i in range(STORIES_PAGE + 5)]
    listed = app_server.api("GET", f"/api/stories?genre={GENRE}&limit=100").json()["items"]
    assert len(listed) < 100, "more horror than this test can list through the API"
    expected = [s["id"] for s in listed]  # every published horror story, newest first

    page = new_page("/community")
    wait_live(page)
    # Unfiltered, the first page has exactly a page of stories (there are more).
    expect(page.locator("#story-list .story-card")).to_have_count(STORIES_PAGE)
    expect(page.locator("#more-stories")).to_be_visible()

    page.locator("#genre-filter").click()
    page.get_by_role("option", name=GENRE, exact=True).click()
    expect(page.locator("#story-list .story-card")).to_have_count(STORIES_PAGE)
    assert _ids(page, "#story-list .story-card") == expected[:STORIES_PAGE]
    assert made[0] not in _ids(page, "#story-list .story-card")  # the oldest is on a later page

    clicks = _load_all(page, "#more-stories", "#story-list .story-card")
    assert clicks == (len(expected) - 1) // STORIES_PAGE
    assert _ids(page, "#story-list .story-card") == expected
    expect(page.locator("#more-stories")).to_have_count(0)

    # A story published now arrives on top, once; the pages loaded stay.
    title = f"Crypt {tag} fresh"
    fresh = app_server.create_story(token, title, genre=GENRE)["id"]
    expect(page.locator(f"#story-{fresh} .new-badge")).to_be_visible()
    assert _ids(page, "#story-list .story-card") == [fresh, *expected]


def test_community_recent_posts_load_more(app_server: AppServer, new_page):
    _, token = app_server.register()
    story = app_server.create_story(token, f"Much discussed {uuid.uuid4().hex[:6]}")
    made = _post_many(app_server, story["id"], POSTS_PAGE + 5, "Remark")

    page = new_page("/community")
    wait_live(page)
    expect(page.locator("#recent-posts .post-card")).to_have_count(POSTS_PAGE)
    assert _ids(page, "#recent-posts .post-card") == made[::-1][:POSTS_PAGE]
    page.locator("#more-posts").click()
    # The next page: ours that were left, then older posts (of other tests), if any.
    page.wait_for_function(f"document.querySelectorAll('#recent-posts .post-card').length >= {len(made)}")
    shown = _ids(page, "#recent-posts .post-card")
    assert len(shown) <= 2 * POSTS_PAGE
    assert len(shown) == len(set(shown))
    assert shown[: len(made)] == made[::-1]  # ours are the newest; older posts follow
    _load_all(page, "#more-posts", "#recent-posts .post-card")
    shown = _ids(page, "#recent-posts .post-card")
    assert len(shown) == len(set(shown)) and shown == sorted(shown, reverse=True)


def test_a_storys_posts_load_more(app_server: AppServer, new_page):
    _, token = app_server.register()
    story = app_server.create_story(token, f"Long thread {uuid.uuid4().hex[:6]}")
    made = _post_many(app_server, story["id"], POSTS_PAGE + 3, "Reply")

    page = new_page(f"/community/story/{story['id']}")
    wait_live(page)
    expect(page.locator("#story-posts .post-card")).to_have_count(POSTS_PAGE)
    expect(page.locator("#more-story-posts")).to_be_visible()
    page.locator("#more-story-posts").click()
    expect(page.locator("#story-posts .post-card")).to_have_count(len(made))
    assert _ids(page, "#story-posts .post-card") == made[::-1]
    expect(page.locator("#more-story-posts")).to_have_count(0)

    # A reload (live updates resumed, a reconnect) keeps what was loaded.
    page.locator("#live-pause").click()
    expect(page.locator("#live-indicator")).to_have_attribute("data-status", "paused")
    page.locator("#live-pause").click()
    wait_live(page)
    expect(page.locator("#story-posts .post-card")).to_have_count(len(made))

    # A story with fewer posts than a page has no button.
    small = app_server.create_story(token, f"Quiet {uuid.uuid4().hex[:6]}")
    page.goto(f"/community/story/{small['id']}")
    wait_live(page)
    expect(page.locator("#story-title")).to_contain_text("Quiet")
    expect(page.locator("#more-story-posts")).to_have_count(0)
