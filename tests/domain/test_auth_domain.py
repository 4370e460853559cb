"""fictures.auth: accounts, password hashes and bearer tokens, on the real database."""

import hashlib
from datetime import timedelta

import pytest
from sqlmodel import select

from fictures import auth, db
from fictures.errors import Conflict, Unauthorized
from fictures.models import AuthToken, Credentials, User, utcnow
from tests.factories import PASSWORD, make_user, unique


def test_password_is_stored_as_an_argon2_hash(db_session):
    user = make_user(db_session)
    with db.session() as fresh:
        stored = fresh.get(User, user.id).password_hash
    assert stored.startswith("$argon2")
    assert PASSWORD not in stored


def test_same_password_hashes_differently_per_user(db_session):
    first, second = make_user(db_session), make_user(db_session)
    assert first.password_hash != second.password_hash  # salted


def test_duplicate_username_is_a_conflict(db_session):
    user = make_user(db_session)
    with pytest.raises(Conflict):
        make_user(db_session, username=user.username)
    count = len(db_session.exec(select(User).where(User.username == user.username)).all())
    assert count == 1


def test_authenticate(db_session):
    user = make_user(db_session)
    good = Credentials(username=user.username, password=PASSWORD)
    assert auth.authenticate(session=db_session, data=good).id == user.id
    wrong = Credentials(username=user.username, password="wrong password")
    with pytest.raises(Unauthorized):
        auth.authenticate(session=db_session, data=wrong)
    unknown = Credentials(username=unique(), password=PASSWORD)
    with pytest.raises(Unauthorized) as exc:
        auth.authenticate(session=db_session, data=unknown)
    assert exc.value.detail == "wrong username or password"  # same answer: no enumeration


def test_tokens_are_stored_only_as_hashes(db_session):
    user = make_user(db_session)
    token = auth.issue_token(session=db_session, user=user)
    rows = db_session.exec(select(AuthToken).where(AuthToken.user_id == user.id)).all()
    assert [r.token_hash for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
    assert token not in rows[0].token_hash
    assert auth.user_for_token(session=db_session, token=token).id == user.id


@pytest.mark.parametrize("token", [None, "", "not-a-token"])
def test_unknown_tokens_are_nobody(db_session, token):
    assert auth.user_for_token(session=db_session, token=token) is None


def test_expired_token_is_nobody(db_session):
    user = make_user(db_session)
    token = auth.issue_token(session=db_session, user=user)
    row = db_session.exec(select(AuthToken).where(AuthToken.user_id == user.id)).one()
    row.expires_at = utcnow() - timedelta(seconds=1)
    db_session.add(row)
    db_session.commit()
    assert auth.user_for_token(session=db_session, token=token) is None


def test_revoked_token_is_nobody(db_session):
    user = make_user(db_session)
    token = auth.issue_token(session=db_session, user=user)
    other = auth.issue_token(session=db_session, user=user)
    auth.revoke_token(session=db_session, token=token)
    assert auth.user_for_token(session=db_session, token=token) is None
    assert auth.user_for_token(session=db_session, token=other).id == user.id
