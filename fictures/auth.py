"""Accounts: registration, password checks (argon2 via pwdlib) and bearer tokens."""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from pwdlib import PasswordHash
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, func, select

from fictures.errors import Conflict, Unauthorized
from fictures.models import AuthToken, Credentials, Login, User, utcnow
from fictures.settings import settings

logger = logging.getLogger(__name__)

_hasher = PasswordHash.recommended()
# Verified against when the username is unknown, so a login takes as long
# whether or not the account exists (no user enumeration by timing).
_DUMMY_HASH = _hasher.hash("fictures-timing-equaliser")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _by_username(session: Session, username: str) -> User | None:
    """The account whose name is `username` in any case (the lower(username) index)."""
    return session.exec(
        select(User).where(func.lower(User.username) == username.lower())
    ).first()


def _taken(username: str) -> Conflict:
    return Conflict(f"the username {username!r} is taken (usernames ignore case)")


def register(*, session: Session, data: Credentials) -> User:
    if _by_username(session, data.username) is not None:
        raise _taken(data.username)
    user = User(username=data.username, password_hash=_hasher.hash(data.password))
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        # A concurrent registration (of this name in any case) won the race
        # past the check above; the unique index on lower(username) stopped it.
        session.rollback()
        raise _taken(data.username) from None
    session.refresh(user)
    logger.info("Registered user %s (id %s)", user.username, user.id)
    return user


def authenticate(*, session: Session, data: Login) -> User:
    """The account for a login; the username matches in any case ("ADA" is ada)."""
    user = _by_username(session, data.username)
    if user is None:
        _hasher.verify(data.password, _DUMMY_HASH)
        raise Unauthorized("wrong username or password")
    if not _hasher.verify(data.password, user.password_hash):
        raise Unauthorized("wrong username or password")
    return user


def issue_token(*, session: Session, user: User) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        AuthToken(
            token_hash=_token_hash(token),
            user_id=user.id,
            expires_at=utcnow() + timedelta(hours=settings.token_ttl_hours),
        )
    )
    session.commit()
    return token


# Every API call asks this: one Core statement on the session's connection for
# the token and its account, not ORM queries (the ORM's token query and account
# load took 3 times as long on the way to a publish's PUBLISH, benchmarks/publish_floor.py).
_TOKENS = AuthToken.__table__
_USERS = User.__table__
_TOKEN_OWNER = (
    sa.select(_TOKENS.c.expires_at.label("token_expires_at"), *_USERS.columns)
    .join_from(_TOKENS, _USERS, _TOKENS.c.user_id == _USERS.c.id)
    .where(_TOKENS.c.token_hash == sa.bindparam("token_hash"))
)


def user_for_token(*, session: Session, token: str | None) -> User | None:
    """The account of a valid (issued, unexpired, unrevoked) token, or None.

    The account is its row as read now, in no session (detached): read it, or
    `session.add` it to change it."""
    if not token:
        return None
    row = session.connection().execute(_TOKEN_OWNER, {"token_hash": _token_hash(token)}).first()
    if row is None or row.token_expires_at < utcnow():
        return None
    user = User(**{column.key: row._mapping[column] for column in _USERS.columns})
    make_transient_to_detached(user)
    return user


def logged_in_at(*, session: Session, token: str | None) -> datetime | None:
    """When the login behind a valid `token` happened (its token was issued), or None."""
    if not token:
        return None
    row = session.exec(
        select(AuthToken).where(AuthToken.token_hash == _token_hash(token))
    ).first()
    if row is None or row.expires_at < utcnow():
        return None
    return row.created_at


def revoke_token(*, session: Session, token: str) -> None:
    row = session.exec(
        select(AuthToken).where(AuthToken.token_hash == _token_hash(token))
    ).first()
    if row is not None:
        session.delete(row)
        session.commit()
