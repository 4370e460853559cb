"""Paging by cursor: "Load more" on /community and under a story's posts.

Pages follow each other without gaps or repeats, whatever is published in
between, and ties on the timestamp are broken by id.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, col, select

from fictures import feed
from fictures.models import Post, Story
from tests.factories import make_post, make_story, make_user, unique


def _all_pages(read, limit: int) -> list[list[int]]:
    pages, after = [], ""
    while True:
        page = read(limit, after)
        pages.append([c.id for c in page.cards])
        if not page.next:
            return pages
        after = page.next


def test_published_stories_page_by_cursor_with_no_gap_or_repeat(db_session: Session):
    author = make_user(db_session)
    genre = "horror"
    mine = [make_story(db_session, author, genre=genre).id for _ in range(7)]
    # Two share a timestamp: the id decides their order.
    same = db_session.get(Story, mine[3]).published_at
    db_session.get(Story, mine[4]).published_at = same
    db_session.commit()
    expected = [s.id for s in db_session.exec(
        select(Story).where(Story.genre == genre, Story.status == "published")
        .order_by(col(Story.published_at).desc(), col(Story.id).desc())
    )]
    assert set(mine) <= set(expected)

    pages = _all_pages(lambda limit, after: feed.published_cards(genre, limit, after), limit=3)
    assert [i for p in pages for i in p] == expected
    assert all(len(p) == 3 for p in pages[:-1]) and 1 <= len(pages[-1]) <= 3


def test_a_story_published_between_pages_shifts_nothing(db_session: Session):
    author = make_user(db_session)
    genre = "thriller"
    for _ in range(4):
        make_story(db_session, author, genre=genre)
    first = feed.published_cards(genre, 2)
    newer = make_story(db_session, author, genre=genre)
    second = feed.published_cards(genre, 2, first.next)
    ids = [c.id for c in first.cards + second.cards]
    assert newer.id not in ids and len(set(ids)) == len(ids) == 4


def test_the_last_page_says_there_is_no_more(db_session: Session):
    author = make_user(db_session)
    story = make_story(db_session, author)
    for _ in range(3):
        make_post(db_session, author, story)
    page = feed.story_post_cards(story.id, 3)
    assert len(page.cards) == 3 and page.next == ""
    page = feed.story_post_cards(story.id, 2)
    assert len(page.cards) == 2 and page.next != ""
    rest = feed.story_post_cards(story.id, 2, page.next)
    assert len(rest.cards) == 1 and rest.next == ""


def test_a_storys_posts_and_recent_posts_page_newest_first(db_session: Session):
    author = make_user(db_session)
    story = make_story(db_session, author, title=unique("Talkative"))
    made = [make_post(db_session, author, story).id for _ in range(5)]
    # Equal timestamps again: the id breaks the tie.
    first = db_session.get(Post, made[1])
    db_session.get(Post, made[2]).created_at = first.created_at
    db_session.commit()
    pages = _all_pages(lambda limit, after: feed.story_post_cards(story.id, limit, after), limit=2)
    expected = [p.id for p in db_session.exec(
        select(Post).where(Post.story_id == story.id).order_by(col(Post.created_at).desc(), col(Post.id).desc())
    )]
    assert [i for p in pages for i in p] == expected and set(expected) == set(made)

    # Recent posts across stories: the newest first, older ones on the next pages.
    recent = _all_pages(feed.recent_post_cards, limit=4)
    flat = [i for p in recent for i in p]
    assert len(flat) == len(set(flat))
    assert set(made) <= set(flat)
    assert [i for i in flat if i in made] == expected


def test_posts_of_an_unpublished_story_are_not_in_recent_posts(db_session: Session):
    author = make_user(db_session)
    story = make_story(db_session, author)
    post = make_post(db_session, author, story)
    db_session.get(Story, story.id).status = "draft"
    db_session.get(Story, story.id).updated_at += timedelta(seconds=1)
    db_session.commit()
    flat = [i for p in _all_pages(feed.recent_post_cards, limit=50) for i in p]
    assert post.id not in flat
