"""Times people can read: relative, in the reader's time zone, the full date on hover."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from playwright.sync_api import expect

from tests.e2e.conftest import AppServer

RECENT = re.compile(r"(a few seconds|\d+ seconds|a minute) ago")


def test_cards_posts_and_the_writing_list_show_relative_local_times(app_server: AppServer, browser):
    _, token = app_server.register()
    title = f"Clockwork {uuid.uuid4().hex[:6]}"
    story = app_server.create_story(token, title)
    r = app_server.api("POST", f"/api/stories/{story['id']}/posts", token, json={"title": "On time", "body": "b"})
    assert r.status_code == 201
    published = datetime.fromisoformat(story["published_at"]).astimezone(ZoneInfo("Asia/Tokyo"))
    context = browser.new_context(base_url=app_server.url, timezone_id="Asia/Tokyo", locale="en-US")
    context.add_init_script(f"window.localStorage.setItem('fictures_token', {token!r});")
    try:
        page = context.new_page()
        page.goto("/community")
        when = page.locator(".story-card", has_text=title).locator(".when")
        expect(when).to_have_text(RECENT)
        # The full date, in the reader's zone (Tokyo), on hover.
        full = when.get_attribute("title")
        assert published.strftime("%B %-d, %Y %-I:%M %p") in full, full
        expect(page.locator(".post-card", has_text="On time").locator(".when")).to_have_text(RECENT)

        page.goto("/writing")
        expect(page.locator(f"#my-story-{story['id']} .when")).to_have_text(RECENT)
    finally:
        context.close()
