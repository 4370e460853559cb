"""State shared by every page: who is logged in. Imports no page."""

from __future__ import annotations

import logging

import reflex as rx
from starlette.concurrency import run_in_threadpool

from fictures import auth, db
from fictures.errors import Unauthorized
from fictures.models import User

logger = logging.getLogger(__name__)


def _user_for(token: str) -> User | None:
    with db.session() as s:
        user = auth.user_for_token(session=s, token=token)
        if user is not None:
            s.expunge(user)
        return user


class SessionState(rx.State):
    """The login of this browser: a bearer token kept in localStorage."""

    auth_token: str = rx.LocalStorage("", name="fictures_token", sync=True)
    user_id: int = 0
    username: str = ""
    # False until the token has been checked on this page load (avoids flashing "log in").
    checked: bool = False

    @rx.var
    def logged_in(self) -> bool:
        return self.user_id > 0

    async def current_user(self) -> User | None:
        """The user behind this tab's token, re-checked against the DB on every call.

        Writes call this (never trust `user_id` alone): a revoked or expired token
        stops working at once.
        """
        return await run_in_threadpool(_user_for, self.auth_token)

    async def require_user(self) -> User:
        user = await self.current_user()
        if user is None:
            raise Unauthorized("log in first")
        return user

    def _set_user(self, user: User | None) -> None:
        self.user_id = user.id if user else 0
        self.username = user.username if user else ""
        self.checked = True

    @rx.event
    async def check_login(self):
        self._set_user(await self.current_user())

    @rx.event
    async def require_login(self):
        """on_load of pages that need an account: send visitors to the login page."""
        user = await self.current_user()
        self._set_user(user)
        if user is None:
            return rx.redirect("/login")
        return None

    def login_as(self, user: User, token: str) -> None:
        self.auth_token = token
        self._set_user(user)

    @rx.event
    async def logout(self):
        token = self.auth_token

        def revoke() -> None:
            with db.session() as s:
                auth.revoke_token(session=s, token=token)

        if token:
            await run_in_threadpool(revoke)
        self.auth_token = ""
        self._set_user(None)
        return [rx.redirect("/community"), rx.toast.info("Logged out")]
