"""fictures.live_receipts without a browser: anonymous readers are bounded per address."""

import pytest

from fictures import db, live_receipts, reads
from fictures.settings import settings
from tests.factories import make_story, make_user, unique


@pytest.mark.parametrize(
    ("path", "story_id"),
    [
        ("/community/story/7", 7), ("/community/story/7/", 7), ("/community/story/2147483647", 2147483647),
        ("/community/story/2147483648", 0), ("/community/story/0", 0), ("/community/story/-1", 0),
        ("/community/story/x", 0), ("/community/story/٣", 0), ("/community/story/", 0),
        ("/writing/story/7", 0), ("/community/story/7/extra", 0), ("", 0),
    ],
)
def test_story_id_from_path(path, story_id):
    assert live_receipts.story_id_from_path(path) == story_id


async def test_new_anonymous_readers_are_limited_per_address(monkeypatch):
    monkeypatch.setattr(settings, "read_limit_per_address", "2/hour")
    with db.session() as s:
        story = make_story(s, make_user(s))
        story_id = story.id
    address, other = f"anon-{unique()}", f"other-{unique()}"

    async def open_as(browser_id: str, where: str = address) -> reads.ReadResult:
        result = await live_receipts.story_opened(
            story_id=story_id, viewer=None, browser_id=browser_id, address=where
        )
        assert result is not None
        return result

    browsers = [reads.new_browser_id() for _ in range(3)]
    assert [(await open_as(b)).reads for b in browsers] == [1, 2, 2]
    # Readers already counted open it again without touching the limit...
    assert (await open_as(browsers[0])).reads == 2
    # ...and another address has its own allowance.
    assert (await open_as(browsers[2], other)).reads == 3


async def test_opening_a_missing_or_unpublished_story_counts_nothing():
    with db.session() as s:
        author = make_user(s)
        draft = make_story(s, author, published=False)
        s.refresh(author)  # the story's commit expired it; used below, outside the session
        s.expunge(author)
        draft_id = draft.id
    for viewer, browser in ((None, reads.new_browser_id()), (author, "")):
        assert await live_receipts.story_opened(
            story_id=10**9, viewer=viewer, browser_id=browser, address="x"
        ) is None
    assert await live_receipts.story_opened(
        story_id=draft_id, viewer=None, browser_id=reads.new_browser_id(), address="x"
    ) is None
    own = await live_receipts.story_opened(story_id=draft_id, viewer=author, browser_id="", address="x")
    assert own is not None and (own.counted, own.reads, own.published) == (False, 0, False)
