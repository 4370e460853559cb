"""fictures.visits: when a visit begins, and which stories are new since the last one."""

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from fictures import db, visits
from fictures.errors import NotFound
from fictures.models import Story, User, utcnow
from fictures.settings import settings
from tests.factories import make_story, make_user


def _enter(user_id: int, *, login_at=None, now=None):
    with db.session() as s:
        return visits.enter_community(session=s, user_id=user_id, login_at=login_at, now=now)


def _visit(user_id: int):
    with db.session() as s:
        user = s.get(User, user_id)
        return user.last_visit_at, user.previous_visit_at


def test_first_visit_has_no_previous_one_and_reloads_stay_in_it(db_session):
    user = make_user(db_session)
    t0 = utcnow()
    assert _enter(user.id, now=t0) is None
    assert _visit(user.id) == (t0, None)
    assert _enter(user.id, now=t0 + timedelta(minutes=5)) is None
    assert _visit(user.id) == (t0, None)


def test_a_visit_begins_after_the_visit_length_or_a_new_login(db_session):
    user = make_user(db_session)
    t0 = utcnow()
    _enter(user.id, now=t0)
    t1 = t0 + timedelta(minutes=settings.visit_minutes)
    assert _enter(user.id, now=t1) == t0
    assert _visit(user.id) == (t1, t0)
    # Logged in again (a token issued after the visit began): a new visit.
    t2 = t1 + timedelta(minutes=1)
    assert _enter(user.id, login_at=t1 + timedelta(seconds=30), now=t2) == t1
    assert _visit(user.id) == (t2, t1)
    # The same login, later: still that visit.
    assert _enter(user.id, login_at=t1 + timedelta(seconds=30), now=t2 + timedelta(minutes=1)) == t1


def test_tabs_opening_at_once_begin_one_visit(db_session):
    user = make_user(db_session)
    t0 = utcnow() - timedelta(days=1)
    _enter(user.id, now=t0)
    now = utcnow()
    with ThreadPoolExecutor(6) as pool:
        previous = list(pool.map(lambda _: _enter(user.id, now=now), range(6)))
    # Every tab got the same previous visit; none moved "now" into previous_visit_at.
    assert previous == [t0] * 6
    assert _visit(user.id) == (now, t0)


def test_new_since_the_last_visit_excludes_seen_own_drafts_and_older_stories(db_session):
    reader, author = make_user(db_session), make_user(db_session)
    older = make_story(db_session, author)
    since = utcnow()
    fresh, seen = make_story(db_session, author), make_story(db_session, author)
    draft = make_story(db_session, author, published=False)
    own = make_story(db_session, reader)
    with db.session() as s:
        assert visits.mark_seen(session=s, user_id=reader.id, story_id=seen.id) is True
    ids = [fresh.id, seen.id, draft.id, own.id, older.id, 10**9]
    with db.session() as s:
        assert visits.new_since(session=s, user_id=reader.id, since=since, story_ids=ids) == [fresh.id]
        assert visits.new_since(session=s, user_id=reader.id, since=None, story_ids=ids) == []
        # Seen is per account: another reader still has both as new.
        other = make_user(s)
        assert visits.new_since(session=s, user_id=other.id, since=since, story_ids=ids) == [
            fresh.id, seen.id, own.id,
        ]


def test_seen_is_recorded_once_and_only_for_published_stories(db_session):
    reader, author = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    draft = make_story(db_session, author, published=False)
    with db.session() as s:
        assert visits.mark_seen(session=s, user_id=reader.id, story_id=story.id) is True
        assert visits.mark_seen(session=s, user_id=reader.id, story_id=story.id) is False
        for missing in (draft.id, 10**9):
            with pytest.raises(NotFound):
                visits.mark_seen(session=s, user_id=reader.id, story_id=missing)
        assert visits.seen_ids(session=s, user_id=reader.id) == {story.id}


def test_a_republished_story_is_new_again(db_session):
    from fictures import stories
    from fictures.models import StoryStatus

    reader, author = make_user(db_session), make_user(db_session)
    story = make_story(db_session, author)
    stories.set_visibility(session=db_session, author=author, story_id=story.id, status=StoryStatus.draft)
    since = utcnow()
    stories.set_visibility(session=db_session, author=author, story_id=story.id, status=StoryStatus.published)
    with db.session() as s:
        assert s.get(Story, story.id).published_at > since
        assert visits.new_since(session=s, user_id=reader.id, since=since, story_ids=[story.id]) == [story.id]
