"""/register and /login."""

from __future__ import annotations

from collections.abc import Callable

import reflex as rx
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from fictures import auth, client_address, db, ratelimit, toasts
from fictures.components.forms import field_error, label
from fictures.components.layout import page
from fictures.errors import DomainError
from fictures.forms import field_errors
from fictures.models import Credentials, Login, User
from fictures.state import SessionState


def _signed_in(account: Callable[..., User], data: Login) -> tuple[User, str]:
    """Run `auth.register` or `auth.authenticate`, then issue a login token."""
    with db.session() as s:
        user = account(session=s, data=data)
        token = auth.issue_token(session=s, user=user)
        s.refresh(user)
        s.expunge(user)
        return user, token


async def _register(address: str, data: Credentials) -> tuple[User, str]:
    await ratelimit.check_registration(address)  # counted with the REST API's
    return await run_in_threadpool(_signed_in, auth.register, data)


async def _login(address: str, data: Login) -> tuple[User, str]:
    await ratelimit.check_login(address, data.username)  # counted with the REST API's
    return await run_in_threadpool(_signed_in, auth.authenticate, data)


class AccountState(rx.State):
    errors: dict[str, str] = {}
    busy: bool = False

    @rx.event
    def reset_form(self):
        self.errors = {}
        self.busy = False

    async def _submit(self, form: dict[str, str], shape: type[Login], action, welcome: str):
        try:
            data = shape.model_validate(
                {"username": form.get("username", ""), "password": form.get("password", "")}
            )
        except ValidationError as exc:
            self.errors = field_errors(exc)
            return
        self.busy = True
        yield
        try:
            address = client_address.from_router_headers(self.router.headers.raw_headers)
            user, token = await action(address, data)
        except DomainError as exc:
            self.errors = {"form": exc.detail}
        else:
            self.errors = {}
            session = await self.get_state(SessionState)
            await session._login_as(user, token)
            yield [rx.redirect("/writing"), toasts.success(welcome.format(user.username))]
        finally:
            self.busy = False

    @rx.event
    async def register(self, form: dict[str, str]):
        async for update in self._submit(form, Credentials, _register, "Welcome to Fictures, {}!"):
            yield update

    @rx.event
    async def login(self, form: dict[str, str]):
        async for update in self._submit(form, Login, _login, "Welcome back, {}"):
            yield update



def _form(title: str, submit: str, handler, other: rx.Component, password_autocomplete: str) -> rx.Component:
    return page(
        rx.center(
            rx.card(
                rx.form(
                    rx.vstack(
                        rx.heading(title, size="6", as_="h1"),
                        label("Username", "username"),
                        rx.input(name="username", id="username", placeholder="3–32 letters, digits or _",
                                 width="100%", auto_complete="username"),
                        field_error(AccountState.errors, "username"),
                        label("Password", "password"),
                        rx.input(name="password", id="password", type="password", placeholder="at least 8 characters",
                                 width="100%", auto_complete=password_autocomplete),
                        field_error(AccountState.errors, "password"),
                        field_error(AccountState.errors, "form"),
                        rx.button(submit, type="submit", loading=AccountState.busy, width="100%", id="submit"),
                        other,
                        spacing="2",
                        width="100%",
                    ),
                    on_submit=handler,
                ),
                width="100%",
                max_width="24em",
            ),
            width="100%",
        ),
    )


@rx.page(route="/register", title="Register · Fictures", on_load=[SessionState.check_login, AccountState.reset_form])
def register() -> rx.Component:
    return _form(
        "Create an account", "Register", AccountState.register,
        rx.text("Have an account? ", rx.link("Log in", href="/login", underline="always"), size="2"),
        "new-password",
    )


@rx.page(route="/login", title="Log in · Fictures", on_load=[SessionState.check_login, AccountState.reset_form])
def login() -> rx.Component:
    return _form(
        "Log in", "Log in", AccountState.login,
        rx.text("New here? ", rx.link("Register", href="/register", underline="always"), size="2"),
        "current-password",
    )
