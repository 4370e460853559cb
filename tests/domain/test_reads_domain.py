"""fictures.reads: one reader counts once per published story; drafts and authors never count."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import select

from fictures import db, reads, stories
from fictures.errors import NotFound
from fictures.models import StoryRead, StoryStatus
from tests.factories import make_story, make_user


def _read(story_id: int, viewer=None, browser_id=None) -> reads.ReadResult:
    with db.session() as s:
        return reads.record_read(session=s, story_id=story_id, viewer=viewer, browser_id=browser_id)


def test_each_account_and_each_browser_counts_once(db_session):
    author, reader = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    first = _read(story.id, viewer=reader)
    assert (first.counted, first.reads, first.author_id, first.published) == (True, 1, author.id, True)
    assert (_read(story.id, viewer=reader).counted, _read(story.id, viewer=reader).reads) == (False, 1)

    browser_a, browser_b = reads.new_browser_id(), reads.new_browser_id()
    assert _read(story.id, browser_id=browser_a).reads == 2
    assert _read(story.id, browser_id=browser_a).counted is False
    assert _read(story.id, browser_id=browser_b).reads == 3
    rows = db_session.exec(select(StoryRead.reader).where(StoryRead.story_id == story.id)).all()
    assert sorted(rows) == sorted([f"u:{reader.id}", f"b:{browser_a}", f"b:{browser_b}"])


def test_the_author_never_counts(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author)
    result = _read(story.id, viewer=author)
    assert (result.counted, result.reads) == (False, 0)
    assert reads.count_reads(db_session, story.id) == 0


def test_drafts_are_never_counted_and_others_drafts_are_not_found(db_session):
    author, reader = make_user(db_session), make_user(db_session)
    draft = make_story(db_session, author, published=False)
    with pytest.raises(NotFound):
        _read(draft.id, viewer=reader)
    with pytest.raises(NotFound):
        _read(draft.id, browser_id=reads.new_browser_id())
    with pytest.raises(NotFound):
        _read(10**9, viewer=reader)
    # Its author may open it: not counted.
    own = _read(draft.id, viewer=author)
    assert (own.counted, own.published, own.reads) == (False, False, 0)
    # Published later, only reads from then on count.
    stories.set_visibility(session=db_session, author=author, story_id=draft.id, status=StoryStatus.published)
    assert _read(draft.id, viewer=reader).reads == 1


def test_reads_survive_unpublishing_but_none_are_added_meanwhile(db_session):
    author, reader, other = make_user(db_session), make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    _read(story.id, viewer=reader)
    stories.set_visibility(session=db_session, author=author, story_id=story.id, status=StoryStatus.draft)
    with pytest.raises(NotFound):
        _read(story.id, viewer=other)
    with db.session() as s:
        assert reads.get_reads(session=s, story_id=story.id, viewer=author).reads == 1
        with pytest.raises(NotFound):
            reads.get_reads(session=s, story_id=story.id, viewer=other)


@pytest.mark.parametrize("browser_id", [None, "", "x" * 32, "A" * 32, "0" * 31, "0" * 33, "b:" + "0" * 32, 5])
def test_a_reader_without_an_account_needs_a_well_formed_browser_id(db_session, browser_id):
    story = make_story(db_session, make_user(db_session))
    with pytest.raises(ValueError):
        _read(story.id, browser_id=browser_id)
    assert reads.count_reads(db_session, story.id) == 0


def test_concurrent_opens_by_one_reader_count_once(db_session):
    author, reader = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _read(story.id, viewer=reader), range(16)))
    assert sum(r.counted for r in results) == 1
    assert reads.count_reads(db_session, story.id) == 1


def test_counts_per_story_and_per_author(db_session):
    author, other_author = make_user(db_session), make_user(db_session)
    one, two, unread = (make_story(db_session, author) for _ in range(3))
    elsewhere = make_story(db_session, other_author)
    for _ in range(3):
        _read(one.id, browser_id=reads.new_browser_id())
    _read(two.id, browser_id=reads.new_browser_id())
    _read(elsewhere.id, browser_id=reads.new_browser_id())
    assert reads.counts_for_author(db_session, author.id) == {one.id: 3, two.id: 1}
    assert reads.counts(db_session, [one.id, unread.id, elsewhere.id]) == {one.id: 3, elsewhere.id: 1}
    assert reads.counts(db_session, []) == {}
    # Unpublished, a story's readers are no one else's business.
    stories.set_visibility(session=db_session, author=author, story_id=one.id, status=StoryStatus.draft)
    assert reads.counts(db_session, [one.id, two.id]) == {two.id: 1}
    assert reads.counts_for_author(db_session, author.id) == {one.id: 3, two.id: 1}


def test_deleting_a_story_deletes_its_reads(db_session):
    author = make_user(db_session)
    story = make_story(db_session, author)
    _read(story.id, browser_id=reads.new_browser_id())
    stories.delete_story(session=db_session, author=author, story_id=story.id)
    assert db_session.exec(select(StoryRead).where(StoryRead.story_id == story.id)).all() == []
