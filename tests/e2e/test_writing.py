"""/writing's save buttons: progress while saving, labels that say what saving
does to a published story, a confirmation before unpublishing, and "Save &
publish" of a draft as one change readers see once."""

from __future__ import annotations

import json
import uuid

import sqlalchemy as sa
from playwright.sync_api import Page, expect

from tests.e2e.conftest import AppServer, wait_live

# Records every state the editor's buttons go through (attributes change in place
# or the buttons are replaced): whether any save button was ever disabled and
# showing a spinner, and whether "Saving…" appeared.
WATCH_BUTTONS = """() => {
  window.fxSaving = {disabled: [], spinner: false, status: false};
  const look = () => {
    for (const b of document.querySelectorAll("#save-draft, #save-publish, #update-story, #new-story")) {
      if (b.disabled && !window.fxSaving.disabled.includes(b.id)) window.fxSaving.disabled.push(b.id);
      if (b.querySelector(".rt-Spinner")) window.fxSaving.spinner = true;
    }
    if (document.getElementById("saving-status")) window.fxSaving.status = true;
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""


def _writing(new_page, token: str) -> Page:
    page = new_page("/writing", token=token)
    expect(page.locator("#story-title-input")).to_be_visible()
    wait_live(page)
    return page


def _outbox(app_server: AppServer, story_id: int, after: int = 0) -> list[tuple[int, str, dict]]:
    """The app's recorded events about one story (id, channel, payload), oldest first."""
    engine = sa.create_engine(app_server.env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, channel, payload FROM outboxevent WHERE id > :after ORDER BY id"),
                                {"after": after}).all()
    finally:
        engine.dispose()
    found = [(row[0], row[1], json.loads(row[2])) for row in rows]
    return [r for r in found if r[2].get("storyId") == story_id]


def test_saving_shows_progress_and_disables_the_buttons(app_server: AppServer, new_page):
    _, token = app_server.register()
    page = _writing(new_page, token)
    page.locator("#story-title-input").fill(f"Patience {uuid.uuid4().hex[:6]}")
    page.locator("#story-content-input").fill("word " * 20_000)  # a long text: a save that takes a moment
    page.evaluate(WATCH_BUTTONS)
    page.locator("#save-draft").click()
    expect(page.get_by_text("Saved", exact=True)).to_be_visible()
    seen = page.evaluate("window.fxSaving")
    assert set(seen["disabled"]) >= {"save-draft", "save-publish", "new-story"}, seen
    assert seen["spinner"] and seen["status"], seen
    # And afterwards they are usable again.
    expect(page.locator("#save-draft")).to_be_enabled()
    expect(page.locator("#saving-status")).to_have_count(0)


def test_a_published_story_is_updated_not_silently_republished_and_unpublishing_asks(
    app_server: AppServer, new_page
):
    _, token = app_server.register()
    title = f"Lanterns {uuid.uuid4().hex[:6]}"
    story = app_server.create_story(token, title, summary="First summary.")
    reader = new_page("/community")
    expect(reader.locator(f"#story-{story['id']}")).to_be_visible()
    page = _writing(new_page, token)
    row = page.locator(f"#my-story-{story['id']}")
    row.locator(".edit-story").click()

    # The buttons say what saving does to a published story.
    expect(page.locator("#update-story")).to_have_text("Update story")
    expect(page.locator("#save-draft")).to_have_count(0)
    expect(page.locator("#save-publish")).to_have_count(0)
    page.locator("#story-summary-input").fill("A better summary.")
    page.locator("#update-story").click()
    expect(page.get_by_text("Saved", exact=True)).to_be_visible()
    expect(row).to_contain_text("published")
    expect(reader.locator(f"#story-{story['id']} .story-summary")).to_have_text("A better summary.")

    # "Save as draft…" unpublishes: it asks first, and Cancel changes nothing.
    page.locator("#story-title-input").fill(f"{title} (rewrite)")
    page.locator("#save-unpublish").click()
    expect(page.get_by_role("alertdialog")).to_contain_text("Unpublish this story?")
    page.locator(".cancel-unpublish").click()
    expect(row).to_contain_text("published")
    expect(reader.locator(f"#story-{story['id']}")).to_be_visible()
    mark = max([0, *(r[0] for r in _outbox(app_server, story["id"]))])
    page.locator("#save-unpublish").click()
    page.locator("#confirm-save-unpublish").click()
    expect(page.get_by_text("Saved as a draft: readers no longer see it")).to_be_visible()
    expect(row).to_contain_text("draft")
    expect(reader.locator(f"#story-{story['id']}")).to_have_count(0)
    # The editor now holds a draft: its buttons are the draft's again.
    expect(page.locator("#save-draft")).to_be_visible()
    # Readers were told it went, under the title they knew; the rewrite stayed private.
    events = _outbox(app_server, story["id"], mark)
    public = [payload for _, channel, payload in events if channel == "story:updated"]
    assert [p["status"] for p in public] == ["draft"] and public[0]["title"] == title, events

    # The list's Unpublish asks too.
    other = app_server.create_story(token, f"Second {uuid.uuid4().hex[:6]}")
    page.reload()
    other_row = page.locator(f"#my-story-{other['id']}")
    other_row.locator(".toggle-visibility").click()
    expect(page.get_by_role("alertdialog")).to_be_visible()
    page.locator(".cancel-unpublish").click()
    expect(other_row).to_contain_text("published")
    other_row.locator(".toggle-visibility").click()
    page.locator(f"#confirm-unpublish-{other['id']}").click()
    expect(other_row).to_contain_text("draft")
    # Publishing needs no confirmation.
    other_row.locator(".toggle-visibility").click()
    expect(other_row).to_contain_text("published")


def test_save_and_publish_of_a_draft_is_one_change_readers_see_once(app_server: AppServer, new_page):
    _, token = app_server.register()
    draft = app_server.create_story(token, f"Working title {uuid.uuid4().hex[:6]}", status="draft")
    reader = new_page("/community")
    wait_live(reader)
    page = _writing(new_page, token)
    mark = max([0, *(r[0] for r in _outbox(app_server, draft["id"]))])
    page.locator(f"#my-story-{draft['id']} .edit-story").click()
    # The form holds the draft before it is changed (typing earlier went in
    # ahead of the loaded title: "Working title …Final title …").
    expect(page.locator("#story-title-input")).to_have_value(draft["title"])
    final = f"Final title {uuid.uuid4().hex[:6]}"
    page.locator("#story-title-input").fill(final)
    page.locator("#save-publish").click()
    expect(page.get_by_text("Published", exact=True)).to_be_visible()

    # One recorded event for the whole save: the story published with its new
    # title (before, an update of the draft and then a publish: two commits).
    events = _outbox(app_server, draft["id"], mark)
    assert [(channel, payload["title"]) for _, channel, payload in events] == [("story:published", final)], events
    expect(reader.get_by_text(f"New story: {final}")).to_be_visible()
    expect(reader.locator(f"#story-{draft['id']}")).to_have_count(1)
    expect(page.locator("#update-story")).to_be_visible()
