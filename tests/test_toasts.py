"""Toasts held while a tab catches up, and the summary that replaces them."""

from __future__ import annotations

from fictures import toasts
from fictures.events.schema import PostCreated, StoryPublished, StoryUpdated
from fictures.live import _away_summary


def test_toasts_asked_for_while_held_are_recorded_not_returned():
    with toasts.holding() as held:
        assert toasts.info("New review: Hi", description="by ada") is None
        assert toasts.warning("Gone") is None
    assert [(h.message, h.level, h.description) for h in held] == [
        ("New review: Hi", "info", "by ada"), ("Gone", "warning", None),
    ]
    # Outside the block, toasts are events again, and a held one can be shown.
    assert toasts.info("Hello") is not None
    assert held[0].show() is not None


def test_holding_nests_and_restores():
    with toasts.holding() as outer:
        toasts.info("a")
        with toasts.holding() as inner:
            toasts.info("b")
        toasts.info("c")
    assert [h.message for h in outer] == ["a", "c"]
    assert [h.message for h in inner] == ["b"]


def test_the_summary_counts_each_kind_of_event():
    story = StoryPublished(story_id=1, title="t", author_id=1, genre=None)
    post = PostCreated(post_id=1, story_id=1, title="p", author_id=1, type="discussion")
    update = StoryUpdated(story_id=1, title="t", genre=None, status="published")
    assert _away_summary([post, post, post]) == "3 new posts while you were away"
    assert _away_summary([story, post]) == "1 new story and 1 new post while you were away"
    assert _away_summary([story, story, post, update]) == (
        "2 new stories, 1 new post and 1 update while you were away"
    )
