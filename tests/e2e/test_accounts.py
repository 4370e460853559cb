"""Registration, validation errors, login and logout in the browser; the forms' rate limits."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from tests.e2e.conftest import (
    LOGIN_LIMIT_PER_ACCOUNT,
    POST_LIMIT_PER_USER,
    AppServer,
    FlakyNetwork,
    wait_hydrated,
)


def test_register_validate_logout_login(app_server: AppServer, new_page):
    page = new_page("/register")
    username = f"reader_{uuid.uuid4().hex[:6]}"

    page.locator("#username").fill("x")
    page.locator("#password").fill("short")
    page.locator("#submit").click()
    expect(page.locator("#error-username")).to_be_visible()
    expect(page.locator("#error-password")).to_contain_text("at least 8")

    page.locator("#username").fill(username)
    page.locator("#password").fill("a good password")
    page.locator("#submit").click()
    page.wait_for_url("**/writing")
    expect(page.locator("#nav-username")).to_have_text(username)

    page.locator("#logout").click()
    page.wait_for_url("**/community")
    expect(page.locator("#nav-login")).to_be_visible()

    page.goto("/writing")
    page.wait_for_url("**/login")
    page.locator("#username").fill(username)
    page.locator("#password").fill("wrong password")
    page.locator("#submit").click()
    expect(page.locator("#error-form")).to_contain_text("wrong username or password")
    page.locator("#password").fill("a good password")
    page.locator("#submit").click()
    page.wait_for_url("**/writing")
    expect(page.locator("#nav-username")).to_have_text(username)


def test_writing_shows_inline_errors_and_only_own_stories(app_server: AppServer, new_page):
    _, other_token = app_server.register()
    other = app_server.create_story(other_token, "Someone else's draft", status="draft")
    _, token = app_server.register()
    page = new_page("/writing", token=token)
    expect(page.locator("#story-title-input")).to_be_visible()
    page.locator("#save-draft").click()
    expect(page.locator("#error-title")).to_be_visible()
    page.locator("#story-title-input").fill("x" * 201)
    page.locator("#save-draft").click()
    expect(page.locator("#error-title")).to_contain_text("200")

    page.locator("#story-title-input").fill("My own draft")
    page.locator("#save-draft").click()
    expect(page.locator("#my-stories")).to_contain_text("My own draft")
    expect(page.locator("#my-stories")).not_to_contain_text("Someone else's draft")
    # Another author's draft is not readable by URL either.
    page.goto(f"/community/story/{other['id']}")
    expect(page.locator("#story-not-found")).to_be_visible()


def test_delete_asks_for_confirmation(app_server: AppServer, new_page):
    _, token = app_server.register()
    story = app_server.create_story(token, "Doomed Tale", status="draft")
    page = new_page("/writing", token=token)
    row = page.locator(f"#my-story-{story['id']}")
    row.locator(".delete-story").click()
    page.get_by_role("button", name="Cancel").click()
    expect(row).to_be_visible()
    row.locator(".delete-story").click()
    page.locator(".confirm-delete").click()
    expect(row).to_have_count(0)
    assert app_server.api("GET", f"/api/stories/{story['id']}", token).status_code == 404


def _log_in(page, username: str, password: str = "password123") -> None:
    """Through the navbar and the form, as a user does (no page load)."""
    page.locator("#nav-login").click()
    page.wait_for_url("**/login")
    page.locator("#username").fill(username)
    page.locator("#password").fill(password)
    page.locator("#submit").click()
    page.wait_for_url("**/writing")
    expect(page.locator("#nav-username")).to_have_text(username)


def test_logout_and_another_login_in_the_same_tab_forget_the_previous_user(app_server: AppServer, browser):
    ada, ada_token = app_server.register()
    basil, _ = app_server.register()
    secret = f"ada's unpublished {uuid.uuid4().hex[:6]}"
    draft = app_server.create_story(ada_token, secret, status="draft", summary=f"{secret} summary",
                                    content=f"{secret} content")
    context = browser.new_context(base_url=app_server.url)
    try:
        page = context.new_page()
        network = FlakyNetwork(page)
        frames: list[str] = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
        page.goto("/community")

        _log_in(page, ada)
        page.locator(f"#my-story-{draft['id']} .edit-story").click()
        expect(page.locator("#story-title-input")).to_have_value(secret)
        expect(page.locator("#story-content-input")).to_have_value(f"{secret} content")

        page.locator("#logout").click()
        page.wait_for_url("**/community")
        expect(page.locator("#nav-login")).to_be_visible()
        after_logout = len(frames)
        # A reconnect hydrates the whole state of the (now anonymous) tab.
        network.cut()
        expect(page.locator("#live-indicator")).to_have_attribute("data-status", "offline", timeout=15_000)
        network.restore()
        expect(page.locator("#live-indicator")).to_have_attribute("data-status", "live", timeout=15_000)

        _log_in(page, basil)
        expect(page.locator("#my-stories")).to_be_attached()
        expect(page.locator("#story-title-input")).to_have_value("")
        expect(page.locator("#story-summary-input")).to_have_value("")
        expect(page.locator("#story-content-input")).to_have_value("")
        expect(page.locator("#my-stories")).not_to_contain_text(secret)
        leaked = [f for f in frames[after_logout:] if secret in f]
        assert not leaked, f"ada's draft reached the browser after logout: {leaked[0][:300]}"
    finally:
        context.close()


def test_login_form_shows_the_rate_limit_inline(app_server: AppServer, new_page):
    victim, _ = app_server.register()  # logs in once
    # Guesses through the API count for the form too: one limit per account.
    for i in range(LOGIN_LIMIT_PER_ACCOUNT - 2):
        r = app_server.api("POST", "/api/auth/token", json={"username": victim, "password": f"guess-{i}"})
        assert r.status_code == 401
    page = new_page("/login")
    # A click before hydration would be lost, and a second one would count twice.
    wait_hydrated(page, "#submit")
    page.locator("#username").fill(victim)
    page.locator("#password").fill("wrong")  # short: still only "wrong"
    page.locator("#submit").click()
    expect(page.locator("#error-form")).to_contain_text("wrong username or password")
    page.locator("#password").fill("password123")
    page.locator("#submit").click()
    expect(page.locator("#error-form")).to_contain_text("too many login attempts for this account")
    expect(page.locator("#error-form")).to_contain_text("try again in")
    # The same browser and address may still log in to another account.
    other, _ = app_server.register()
    page.locator("#username").fill(other.upper())  # usernames ignore case
    page.locator("#submit").click()
    page.wait_for_url("**/writing")
    expect(page.locator("#nav-username")).to_have_text(other)


def test_post_form_shows_the_rate_limit_inline(app_server: AppServer, new_page):
    _, token = app_server.register()
    story = app_server.create_story(token, f"Busy Thread {uuid.uuid4().hex[:6]}")
    for i in range(POST_LIMIT_PER_USER - 1):
        r = app_server.api("POST", f"/api/stories/{story['id']}/posts", token,
                           json={"title": f"Post {i}", "body": "Hello."})
        assert r.status_code == 201
    page = new_page(f"/community/story/{story['id']}", token=token)
    page.locator("#post-title").fill("The last one allowed")
    page.locator("#post-body").fill("Still fine.")
    page.locator("#post-submit").click()
    expect(page.locator("#story-posts")).to_contain_text("The last one allowed")
    page.locator("#post-title").fill("One too many")
    page.locator("#post-body").fill("Refused.")
    page.locator("#post-submit").click()
    expect(page.locator("#post-error-form")).to_contain_text("you are posting too often")
    expect(page.locator("#story-posts")).not_to_contain_text("One too many")
