"""`python -m fictures.admin grant|revoke|list` on the real database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlmodel import Session

from fictures import admin
from fictures.models import User, UserRole
from tests.factories import make_user, unique

ROOT = Path(__file__).resolve().parents[1]


def _role(session: Session, user_id: int) -> str:
    session.expire_all()
    return session.get(User, user_id).role


def test_grant_and_revoke_change_the_role_whatever_the_case_of_the_name(db_session, capsys):
    user = make_user(db_session, username=unique("Cli"))
    assert user.role == UserRole.member.value

    assert admin.main(["grant", user.username.upper()]) == 0
    assert _role(db_session, user.id) == "admin"
    assert capsys.readouterr().out == f"{user.username} is now an admin\n"
    assert admin.main(["grant", user.username]) == 0
    assert capsys.readouterr().out == f"{user.username} is already an admin\n"
    assert admin.main(["list"]) == 0
    assert user.username in capsys.readouterr().out.splitlines()

    assert admin.main(["revoke", f"  {user.username.lower()} "]) == 0
    assert _role(db_session, user.id) == "member"
    assert capsys.readouterr().out == f"{user.username} is no longer an admin\n"
    assert admin.main(["revoke", user.username]) == 0
    assert capsys.readouterr().out == f"{user.username} is not an admin\n"


def test_an_unknown_user_is_a_clear_error_and_changes_nothing(db_session, capsys):
    other = make_user(db_session)
    assert admin.main(["grant", "nobody_by_that_name"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: no user named 'nobody_by_that_name' (names are matched whatever their case)\n"
    assert _role(db_session, other.id) == "member"


def test_the_module_runs_as_a_command_with_exit_statuses(db_session):
    user = make_user(db_session)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "fictures.admin", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )

    granted = run("grant", user.username)
    assert (granted.returncode, granted.stdout) == (0, f"{user.username} is now an admin\n"), granted.stderr
    assert _role(db_session, user.id) == "admin"
    unknown = run("revoke", "no_such_user_here")
    assert unknown.returncode == 1
    assert "error: no user named 'no_such_user_here'" in unknown.stderr
    usage = run("promote", user.username)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
