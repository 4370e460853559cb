"""/admin in a real browser: live delivery charts for admins, nothing for anyone else."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from fictures.analytics.room import AdminRoom
from fictures.models import UserRole
from fictures.pages.admin import (
    CHANNEL_COLORS,
    P50_COLOR,
    P99_COLOR,
    SSE_COLOR,
    STORIES_COLOR,
    TABS_COLOR,
    AdminState,
)
from tests.e2e.conftest import BIN, ROOT, AppServer, http
from tests.e2e.raw_socket import RawTab

ADMIN_VARS = ("events_per_minute", "readers", "readers_now", "latency", "top_stories", "recent", "updated")


def admin_command(app_server: AppServer, *args: str) -> subprocess.CompletedProcess:
    """`python -m fictures.admin ARGS` on the running app's database."""
    return subprocess.run(
        [str(BIN / "python"), "-m", "fictures.admin", *args],
        cwd=ROOT, env=app_server.env, capture_output=True, text=True, timeout=120, check=False,
    )


def new_admin(app_server: AppServer) -> tuple[str, str]:
    """A new account given the admin role in the app's database, as `python -m
    fictures.admin grant` does (the command itself: tests/test_admin_cli.py and the
    revocation test below), without the seconds a command's start costs."""
    name, token = app_server.register()
    database = app_server.env["DATABASE_URL"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as conn, conn:
        granted = conn.execute(
            "UPDATE user SET role = ? WHERE username = ?", (UserRole.admin.value, name)
        ).rowcount
    assert granted == 1, name
    return name, token


def open_event_stream(page: Page) -> None:
    """An SSE reader in the page (EventSource), noting each event it gets."""
    page.evaluate("""() => new Promise((resolve) => {
        window.got = [];
        window.es = new EventSource("/api/community/events");
        window.es.addEventListener("connected", () => resolve(true));
        for (const name of ["story:published", "story:updated", "post:created"]) {
            window.es.addEventListener(name, (e) => window.got.push({id: Number(e.lastEventId), channel: name}));
        }
    })""")


def colour_pixels(page: Page, png: bytes, colours: dict[str, str]) -> dict[str, int]:
    """Pixels of each colour (within a small tolerance) in a screenshot, counted by the browser."""
    return page.evaluate(
        """async ([b64, colours]) => {
            const img = new Image();
            img.src = "data:image/png;base64," + b64;
            await img.decode();
            const canvas = document.createElement("canvas");
            canvas.width = img.width; canvas.height = img.height;
            const ctx = canvas.getContext("2d");
            ctx.drawImage(img, 0, 0);
            const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
            const want = Object.entries(colours).map(([name, hex]) =>
                [name, ...[1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16))]);
            const counts = Object.fromEntries(want.map(([name]) => [name, 0]));
            for (let i = 0; i < px.length; i += 4) {
                for (const [name, r, g, b] of want) {
                    if (Math.abs(px[i] - r) < 16 && Math.abs(px[i + 1] - g) < 16 && Math.abs(px[i + 2] - b) < 16) {
                        counts[name]++;
                    }
                }
            }
            return counts;
        }""",
        [base64.b64encode(png).decode(), colours],
    )


def plot(page: Page, panel: str) -> Any:
    """A chart's own SVG (not its legend's icons)."""
    return page.locator(f"#{panel} .recharts-wrapper > svg.recharts-surface")


def metric(app_server: AppServer, name: str, labels: str) -> float:
    text = http.get(f"{app_server.url}/api/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_an_admin_sees_live_delivery_charts_after_a_burst(app_server: AppServer, new_page, tmp_path: Path):
    _, admin_token = new_admin(app_server)
    _, author = app_server.register()
    tag = uuid.uuid4().hex[:6]
    favourite = app_server.create_story(author, f"Favourite {tag}")
    before = {kind: metric(app_server, "fictures_delivery_latency_seconds_count", f'client="{kind}"')
              for kind in ("tab_broadcast", "tab_handler", "sse")}

    # Readers: a community tab, a tab on the favourite story, an SSE stream.
    community = new_page("/community")
    reader = new_page(f"/community/story/{favourite['id']}")
    streams = new_page("/community")
    for tab in (community, reader, streams):
        expect(tab.locator("#live-indicator")).to_have_attribute("data-status", "live")
    open_event_stream(streams)

    # The burst: three stories, two posts on the favourite, a retitle.
    titles = [f"Burst {tag} {i}" for i in range(3)]
    for title in titles:
        app_server.create_story(author, title)
    for i in range(2):
        r = app_server.api("POST", f"/api/stories/{favourite['id']}/posts", author,
                           json={"title": f"Post {tag} {i}", "body": "Lovely.", "type": "review"})
        assert r.status_code == 201, r.text
    r = app_server.api("PATCH", f"/api/stories/{favourite['id']}", author, json={"title": f"Favourite {tag}!"})
    assert r.status_code == 200, r.text
    expect(community.locator(".story-card", has_text=titles[-1])).to_have_count(1)
    expect(reader.locator("#story-title")).to_have_text(f"Favourite {tag}!")
    streams.wait_for_function("window.got.length >= 6")
    got = streams.evaluate("window.got")

    admin = new_page("/admin", token=admin_token)
    expect(admin.locator("#admin-charts")).to_be_visible()
    # Every chart draws: bars per channel of the burst, both reader lines, both
    # latency lines (a dot per minute), the favourite's bar.
    for channel in ("story_published", "post_created", "story_updated"):
        expect(admin.locator(f"#chart-events .series-{channel} .recharts-bar-rectangle").first).to_be_visible()
    for series in ("p50", "p99"):
        expect(admin.locator(f'#chart-latency circle.recharts-line-dot[name="{series}"]').first).to_be_visible()
    # Two readers samples make a line (a sample every 5 s).
    for series in ("tabs", "sse"):
        expect(admin.locator(f"#chart-readers .series-{series} path.recharts-line-curve")).to_have_attribute(
            "d", re.compile(r"^M[^M]*[LC]"), timeout=20_000
        )
    # Now: the three readers' tabs and the admin's; the SSE stream.
    expect(admin.locator("#readers-now")).to_have_text(re.compile(r"^([4-9]|\d\d+) tabs, [1-9]\d* SSE stream"))
    expect(admin.locator("#chart-top-stories")).to_contain_text(f"Favourite {tag}!")
    expect(admin.locator("#chart-top-stories .series-readers .recharts-bar-rectangle").first).to_be_visible()
    for panel in ("chart-events", "chart-readers", "chart-latency", "chart-top-stories"):
        expect(plot(admin, panel)).to_have_count(1)

    # Each event's record: readers reached per kind (summed over processes), p50/p99.
    rows = admin.locator("#recent-events .event-record")
    for event in got:
        expect(rows.filter(has_text=re.compile(rf"^{event['id']}{re.escape(event['channel'])}"))).to_have_count(1)
    posted = next(e for e in got if e["channel"] == "post:created")
    cells = rows.filter(has_text=re.compile(rf"^{posted['id']}post:created")).locator("td")
    expect(cells.nth(4)).to_have_text(re.compile(r"^[1-9]"))  # the story page's handler
    expect(cells.nth(5)).to_have_text(re.compile(r"^[1-9]"))  # the SSE stream
    expect(cells.nth(3)).to_have_text(re.compile(r"^([2-9]|\d\d)"))  # two community tabs
    expect(cells.nth(7)).to_have_text(re.compile(r"\d+(\.\d+)? (ms|s)$"))

    # The screenshot shows each chart's series in its colour.
    admin.screenshot(path=str(tmp_path / "admin.png"), full_page=True)
    expected = {
        "chart-events": {c: CHANNEL_COLORS[c] for c in ("story:published", "post:created", "story:updated")},
        "chart-readers": {"tabs": TABS_COLOR, "sse": SSE_COLOR},
        "chart-latency": {"p50": P50_COLOR, "p99": P99_COLOR},
        "chart-top-stories": {"readers": STORIES_COLOR},
    }
    for panel, colours in expected.items():
        png = plot(admin, panel).screenshot(path=str(tmp_path / f"{panel}.png"))
        counts = colour_pixels(admin, png, colours)
        print(panel, counts)
        assert all(n >= 20 for n in counts.values()), (panel, counts)

    # Prometheus saw the same deliveries, per kind of client.
    for kind, count in before.items():
        assert metric(app_server, "fictures_delivery_latency_seconds_count", f'client="{kind}"') > count, kind

    # And the page stays live: the next event shows up without a reload.
    app_server.create_story(author, f"Late {tag}")
    streams.wait_for_function(f"window.got.length >= {len(got) + 1}")
    newest = streams.evaluate("window.got")[-1]
    expect(rows.first).to_have_text(re.compile(rf"^{newest['id']}story:published"))


def _admin_values_in(frames: list[str]) -> list[tuple[str, Any]]:
    """Every value of the admin room's state that any frame carried."""
    state = AdminRoom.get_full_name()
    found = []
    for frame in frames:
        if not frame.startswith("42/_event,"):
            continue
        name, data = json.loads(frame[len("42/_event,"):])[:2]
        if name == "event" and isinstance(data, dict):
            found.extend((data.get("delta") or {}).get(state, {}).items())
    return found


def _no_admin_data(frames: list[str]) -> None:
    values = _admin_values_in(frames)
    # Room values reach a tab by its hydrate (only those that differ from the
    # page's compiled defaults) and by frames: the tab was not admitted, so
    # whatever of the admin room's vars it got hold their empty defaults.
    assert {k.removesuffix("_rx_state_") for k, _ in values} <= set(ADMIN_VARS)
    assert all(v in ([], "") for _, v in values), values
    for frame in frames:
        assert '"p99"' not in frame and '"tab_broadcast"' not in frame, frame[:300]


def _watching_admin(app_server: AppServer, new_page) -> Page:
    _, token = new_admin(app_server)
    page = new_page("/admin", token=token)
    expect(page.locator("#recent-events")).to_be_visible()
    return page


def _two_refreshes(admin: Page) -> None:
    """Until the admin page has been refreshed twice more (frames went out meanwhile)."""
    for _ in range(2):
        shown = admin.locator("#admin-updated").inner_text()
        expect(admin.locator("#admin-updated")).not_to_have_text(shown, timeout=10_000)


def test_members_and_visitors_are_sent_away_and_get_no_admin_data(app_server: AppServer, new_page, browser):
    _, author = app_server.register()
    app_server.create_story(author, f"Seen by admins {uuid.uuid4().hex[:6]}")
    admin = _watching_admin(app_server, new_page)

    _, member_token = app_server.register()
    for token, lands_on in ((member_token, "/community"), (None, "/login")):
        context = browser.new_context(base_url=app_server.url)
        try:
            if token:
                context.add_init_script(f"window.localStorage.setItem('fictures_token', {token!r});")
            page = context.new_page()
            frames: list[str] = []
            page.on("websocket", lambda ws, frames=frames: ws.on(
                "framereceived", lambda payload: frames.append(str(payload))))
            page.goto("/admin")
            expect(page).to_have_url(re.compile(re.escape(lands_on) + "$"))
            expect(page.locator("#admin-charts")).to_have_count(0)
            _two_refreshes(admin)
            # Back to /admin by hand: still nothing, still sent away.
            page.goto("/admin")
            expect(page).to_have_url(re.compile(re.escape(lands_on) + "$"))
            _two_refreshes(admin)
            assert any("is_hydrated" in f for f in frames)  # the capture saw the traffic
            _no_admin_data(frames)
        finally:
            context.close()


def test_forged_admin_events_from_a_member_or_a_visitor_join_nothing(app_server: AppServer, new_page):
    admin = _watching_admin(app_server, new_page)
    _, member_token = app_server.register()
    for token in (member_token, None):
        tab = RawTab(app_server.url, "/admin", auth_token=token)
        try:
            tab.hydrated()
            state = AdminState.get_full_name()
            for event in ("live_start", "load", "live_toggle_pause", "live_poll"):
                tab.send(f"{state}.{event}")
            tab.wait_for(lambda updates: any(
                e.get("name") == "_redirect" for u in updates for e in u.get("events") or []
            ), what="the redirect")
            _two_refreshes(admin)
            _no_admin_data(tab.raw)
        finally:
            tab.close()


def test_an_admin_whose_role_is_revoked_is_sent_away_while_watching(app_server: AppServer, new_page):
    name, token = new_admin(app_server)
    page = new_page("/admin", token=token)
    expect(page.locator("#admin-charts")).to_be_visible()
    revoked = admin_command(app_server, "revoke", name.upper())
    assert revoked.returncode == 0 and "no longer an admin" in revoked.stdout, revoked.stderr
    expect(page).to_have_url(re.compile(r"/community$"), timeout=10_000)
    page.goto("/admin")
    expect(page).to_have_url(re.compile(r"/community$"))
    unknown = admin_command(app_server, "grant", "nobody_" + uuid.uuid4().hex[:6])
    assert unknown.returncode == 1 and "no user named" in unknown.stderr


def test_a_paused_admin_page_still_shows_the_data_when_it_loads(app_server: AppServer, new_page):
    _, author = app_server.register()
    app_server.create_story(author, f"Before the pause {uuid.uuid4().hex[:6]}")
    _, token = new_admin(app_server)
    page = new_page("/admin", token=token)
    rows = page.locator("#recent-events .event-record")
    expect(rows.first).to_be_visible()
    page.locator("#live-pause").click()
    expect(page.locator("#live-indicator")).to_have_attribute("data-status", "paused")
    page.reload()
    expect(page.locator("#live-indicator")).to_have_attribute("data-status", "paused")
    expect(rows.first).to_be_visible()  # sent to the tab on load, though it is not in the room
    shown = page.locator("#admin-updated").inner_text()
    # Resumed: in the room again, refreshed every tick.
    page.locator("#live-pause").click()
    expect(page.locator("#live-indicator")).to_have_attribute("data-status", "live")
    expect(page.locator("#admin-updated")).not_to_have_text(shown, timeout=10_000)
