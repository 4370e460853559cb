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


def test_the_bearers_account_is_its_row_as_read_now_in_no_session(db_session):
    """One Core statement reads the token and its account: the account comes back
    detached, with the row's current values, and can still be changed by adding it."""
    user = make_user(db_session)
    token = auth.issue_token(session=db_session, user=user)
    with db.session() as s:
        account = auth.user_for_token(session=s, token=token)
        assert account not in s
        assert (account.id, account.username, account.role) == (user.id, user.username, "member")
    with db.session() as other:
        row = other.get(User, user.id)
        row.role = "admin"
        other.add(row)
        other.commit()
    with db.session() as s:
        account = auth.user_for_token(session=s, token=token)
        assert account.role == "admin"  # what the database says now, not a copy kept anywhere
        account.role = "member"
        s.add(account)  # an UPDATE of that row, never a second account
        s.commit()
    with db.session() as fresh:
        assert fresh.get(User, user.id).role == "member"
        assert len(fresh.exec(select(User).where(User.username == user.username)).all()) == 1
