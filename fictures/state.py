"""State shared by every page: who is logged in. Imports no page."""

from __future__ import annotations

import logging

import reflex as rx
from starlette.concurrency import run_in_threadpool

from fictures import auth, db, reads, reflex_compat, toasts
from fictures.errors import Unauthorized
from fictures.models import User

logger = logging.getLogger(__name__)


def _user_for(token: str) -> User | None:
    with db.session() as s:
        return auth.user_for_token(session=s, token=token)


class SessionState(rx.State):
    """The login of this browser: a bearer token kept in localStorage.

    Only `check_login`, `require_login` and `logout` are events; reading the
    user and logging in are private (a browser could otherwise call them).
    """

    auth_token: str = rx.LocalStorage("", name="fictures_token", sync=True)
    user_id: int = 0
    username: str = ""
    # False until the token has been checked on this page load (avoids flashing "log in").
    checked: bool = False

    @rx.var
    def logged_in(self) -> bool:
        return self.user_id > 0

    async def _current_user(self) -> User | None:
        """The user behind this tab's token, re-checked against the DB on every call.

        Writes call this (never trust `user_id` alone): a revoked or expired token
        stops working at once.
        """
        return await run_in_threadpool(_user_for, self.auth_token)

    async def _require_user(self) -> User:
        user = await self._current_user()
        if user is None:
            raise Unauthorized("log in first")
        return user

    async def _set_user(self, user: User | None) -> None:
        new_id = user.id if user else 0
        if new_id != self.user_id:
            await self._forget_previous_user()
        self.user_id = new_id
        self.username = user.username if user else ""
        self.checked = True
        # The bell is on every page: each login check loads it and files this tab
        # under its user for live notifications (imported here: bell imports this module).
        from fictures import bell

        await bell.on_login_checked(self, self.router.session.client_token, new_id)

    async def _forget_previous_user(self) -> None:
        """Reset every state of this tab to its defaults: the previous user's
        editor text, lists and form errors must not outlive a logout, or a login
        as someone else. Browser preferences (client storage) are kept."""
        for state_cls in reflex_compat.all_states():
            if state_cls.__module__.startswith("reflex") or state_cls is SessionState:
                continue
            state = await self.get_state(state_cls)
            kept = {name: getattr(state, name) for name in reflex_compat.client_storage_fields(state_cls)}
            state.reset()
            for name, value in kept.items():
                setattr(state, name, value)
        token = self.auth_token
        self.reset()
        self.auth_token = token

    async def _login_as(self, user: User, token: str) -> None:
        await self._set_user(user)
        self.auth_token = token

    @rx.event
    async def check_login(self):
        await self._set_user(await self._current_user())

    @rx.event
    async def require_login(self):
        """on_load of pages that need an account: send visitors to the login page."""
        user = await self._current_user()
        await self._set_user(user)
        if user is None:
            return rx.redirect("/login")
        return None

    @rx.event
    async def logout(self):
        token = self.auth_token

        def revoke() -> None:
            with db.session() as s:
                auth.revoke_token(session=s, token=token)

        if token:
            await run_in_threadpool(revoke)
        self.auth_token = ""
        await self._set_user(None)
        return [rx.redirect("/community"), toasts.info("Logged out")]


class BrowserState(rx.State):
    """This browser, whoever is logged in: a random id kept in localStorage, so a
    reader who is not logged in counts once per story ("Read by N").

    No event handlers. The server makes the id (`_browser_id`) the first time a
    page needs it, and replaces one that is not of its own making; logging out
    keeps it (it is a browser preference, see `SessionState._forget_previous_user`).
    """

    browser_id: str = rx.LocalStorage("", name="fictures_browser_id")

    def _browser_id(self) -> str:
        if not reads.is_browser_id(self.browser_id):
            self.browser_id = reads.new_browser_id()
        return self.browser_id
