"""Admins: who may open /admin. `python -m fictures.admin grant|revoke|list`.

    python -m fictures.admin grant ada      # ada becomes an admin
    python -m fictures.admin revoke ada     # and a member again
    python -m fictures.admin list           # the admins

Usernames are matched whatever their case, as logging in does. It works on the
database of `DATABASE_URL` (the app's); the change applies to an open /admin
tab at its next event, or within one analytics tick (`analytics_seconds`).
Exit status: 0 done (or nothing to do), 1 unknown user or unreachable database,
2 bad usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel import Session, col, select

from fictures import db
from fictures.errors import NotFound
from fictures.models import User, UserRole

logger = logging.getLogger(__name__)


def find_user(*, session: Session, username: str) -> User:
    user = session.exec(
        select(User).where(sa.func.lower(User.username) == username.strip().lower())
    ).first()
    if user is None:
        raise NotFound(f"no user named {username.strip()[:40]!r}")
    return user


def set_role(*, session: Session, username: str, role: UserRole) -> tuple[User, bool]:
    """Give the user `role`; returns the user and whether anything changed."""
    user = find_user(session=session, username=username)
    if user.role == role.value:
        return user, False
    user.role = role.value
    session.add(user)
    session.commit()
    session.refresh(user)
    return user, True


def admins(*, session: Session) -> list[str]:
    query = select(User.username).where(User.role == UserRole.admin.value)
    return list(session.exec(query.order_by(col(User.username))))


def _change(username: str, role: UserRole) -> int:
    with db.session() as s:
        try:
            user, changed = set_role(session=s, username=username, role=role)
        except NotFound as exc:
            logger.error("error: %s (names are matched whatever their case)", exc.detail)
            return 1
        name = user.username
    if role is UserRole.admin:
        logger.info("%s is %s an admin", name, "now" if changed else "already")
    else:
        logger.info("%s is %s", name, "no longer an admin" if changed else "not an admin")
    return 0


def _log_to_terminal() -> None:
    """This command's messages: results on stdout, errors on stderr."""
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    logger.handlers[:] = [out, err]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fictures.admin", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("grant", help="make USER an admin").add_argument("user")
    commands.add_parser("revoke", help="make USER a member again").add_argument("user")
    commands.add_parser("list", help="list the admins")
    args = parser.parse_args(argv)

    _log_to_terminal()
    try:
        if args.command == "list":
            with db.session() as s:
                names = admins(session=s)
            logger.info("%s", "\n".join(names) if names else "(no admins)")
            return 0
        role = UserRole.admin if args.command == "grant" else UserRole.member
        return _change(args.user, role)
    except (OperationalError, ProgrammingError) as exc:
        logger.error("error: cannot read the users (%s). Is DATABASE_URL right, and "
                     "`reflex db migrate` done?", exc.orig)
        return 1


if __name__ == "__main__":
    sys.exit(main())
