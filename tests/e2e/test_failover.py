"""Past one machine: readers and authors keep going while instances come and go.

nginx (deploy/nginx.conf, only its listen and upstream lines rewritten) in front
of two instances with two workers each, started as deploy/ starts them
(`scripts/dev.py migrate`, then `scripts/dev.py serve`) in production mode, on
PostgreSQL and a Redis of their own; every page connects back through nginx
(FICTURES_PUBLIC_URL). As root (CI) each instance lives in a network namespace
of its own (tests/cluster.py), so nginx, Redis and PostgreSQL see separate hosts.

Three Chromium readers on /community and an author on /writing, all through
nginx, opened while only instance A runs (so every tab starts on A). Then A is
stopped with SIGTERM (everything moves to B) and restarted, B is stopped with
SIGTERM (everything moves back to A) and restarted, and A is killed with
SIGKILL. After each fault every tab must have moved to the other instance,
without a Live indicator for at most RECONNECT_SECONDS (from losing its
connection until hydrated on the new one and Live), and every story published
meanwhile, through either instance, must be on each reader's page exactly once
(counted by story id) with its NEW badge and in the banner's count; the
author's unsaved title is still in the editor after each reconnect.

It runs in the PostgreSQL pass of `scripts/dev.py test` (`-m postgres`, against
127.0.0.1:5432, as CI does): production mode refuses SQLite. Alone:
    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
        python3 scripts/dev.py test tests/e2e/test_failover.py
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.cluster import NGINX, Cluster, Instance, cluster
from tests.e2e.conftest import http

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ["DATABASE_URL"].startswith("postgresql"),
        reason="production mode needs PostgreSQL: runs in the -m postgres pass (or with TEST_DATABASE_URL)",
    ),
    pytest.mark.skipif(not Path(NGINX).exists(), reason=f"{NGINX} is not installed"),
]

RECONNECT_SECONDS = 15
# An instance told to stop exits within this (tests/cluster.py kills it after 30 s).
STOP_SECONDS = 30
READERS = 3
# Records, with the browser's clock (the same clock as time.time() here), every
# change of the page's live indicator and every websocket Reflex opens (created,
# opened, hydrated: the server sent the page's state, closed): a fault must close
# the tab's websocket, and the tab must be hydrated on a new one and show Live.
PAGE_RECORDER = """
(() => {
  window.__fxStatus = [];
  window.__fxSockets = [];
  setInterval(() => {
    const el = document.querySelector('#live-indicator');
    const status = el ? el.getAttribute('data-status') : 'none';
    const log = window.__fxStatus;
    if (!log.length || log[log.length - 1][1] !== status) log.push([Date.now(), status]);
  }, 50);
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      if (!String(url).includes('/_event/')) return;
      const socket = {created: Date.now(), opened: null, hydrated: null, closed: null};
      window.__fxSockets.push(socket);
      this.addEventListener('open', () => { socket.opened = Date.now(); });
      this.addEventListener('message', (m) => {
        if (!socket.hydrated && String(m.data).includes('"is_hydrated_rx_state_":true')) socket.hydrated = Date.now();
      });
      this.addEventListener('close', () => { socket.closed = Date.now(); });
    }
  };
})();
"""


@pytest.fixture(scope="module")
def fleet() -> Iterator[Cluster]:
    with cluster(
        postgres_url=os.environ["TEST_DATABASE_URL"],
        env={
            # Every request of this test comes from one address.
            "FICTURES_REGISTER_LIMIT_PER_ADDRESS": "1000/minute",
            "FICTURES_LOGIN_LIMIT_PER_ADDRESS": "1000/minute",
            # A page that lost its live connection polls the database this often:
            # short, so the polling path runs during the outages too.
            "FICTURES_POLL_SECONDS": "2",
        },
    ) as the_cluster:
        yield the_cluster


@pytest.fixture(autouse=True)
def _no_backend_errors(fleet: Cluster) -> Iterator[None]:
    """Replaces the suite's check (which needs the session's app): no instance
    logged an error while the test ran."""
    marks = {name: len(i.log_text()) for name, i in fleet.instances.items()}
    yield
    for name, instance in fleet.instances.items():
        print(f"---- instance {name} log during this test ----\n{instance.log_text()[marks[name]:][-12000:]}")
    sockets = [line for line in fleet.nginx.access_log().splitlines() if "/_event/" in line]
    refused = sum('" 101 ' not in line for line in sockets)
    print(f"---- nginx: websockets that ended ({refused} not upgraded) ----\n" + "\n".join(sockets[-30:])
          + f"\n---- nginx error log ----\n{fleet.nginx.error_log()[-3000:]}")
    errors = [f"{name}: {line}" for name, instance in fleet.instances.items()
              for line in instance.errors(since=marks[name])]
    assert not errors, "an instance logged errors:\n" + "\n".join(errors)


# ---------------------------------------------------------------- helpers


def _register(instance: Instance) -> str:
    name, password = f"author_{uuid.uuid4().hex[:8]}", "password123"
    r = http.post(f"{instance.url}/api/auth/register", json={"username": name, "password": password}, timeout=10)
    assert r.status_code == 201, r.text
    r = http.post(f"{instance.url}/api/auth/token", json={"username": name, "password": password}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def _publish(instance: Instance, token: str, title: str) -> int:
    """Publish through one instance directly (not through nginx)."""
    r = http.post(f"{instance.url}/api/stories", headers={"Authorization": f"Bearer {token}"},
                   json={"title": title, "status": "published"}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _open(browser: Browser, fleet: Cluster, path: str, contexts: list[BrowserContext],
          token: str | None = None) -> Page:
    context = browser.new_context(base_url=fleet.url)
    contexts.append(context)
    context.add_init_script(PAGE_RECORDER)
    if token:
        context.add_init_script(f"window.localStorage.setItem('fictures_token', {token!r});")
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(path)
    expect(page.locator("#live-indicator")).to_have_attribute("data-status", "live")
    return page


def _live_again(pages: dict[str, Page], since: float) -> dict[str, float]:
    """For each page, whose websocket closed after the fault at `since` (its
    instance stopped or died): how long it went without Live, from the moment it
    lost it (its socket closed, or its indicator left "live", whichever first)
    until it was hydrated on a new connection and showed Live. Fails if that is
    over RECONNECT_SECONDS for any page, or a page never moved.

    A tab that reconnects at its first attempt never shows anything but Live (the
    indicator turns "Offline" only when an attempt fails), so the sockets tell
    when it was back. An instance that drains slowly keeps serving its tabs until
    it exits (they stay Live meanwhile): hence the wait for the move itself is
    bounded by the stop's own bound, not by RECONNECT_SECONDS."""
    deadline = since + STOP_SECONDS + RECONNECT_SECONDS
    dark: dict[str, float] = {}
    seen: dict[str, dict] = {}
    while True:
        for name, page in pages.items():
            if name in dark:
                continue
            seen[name] = state = page.evaluate("({status: window.__fxStatus, sockets: window.__fxSockets})")
            sockets = [{k: (v / 1000 if v else v) for k, v in s.items()} for s in state["sockets"]]
            status = [(t / 1000, s) for t, s in state["status"]]
            closed = [s["closed"] for s in sockets if s["created"] < since and s["closed"] and s["closed"] >= since]
            newest = sockets[-1]
            if (closed and newest["created"] >= since and newest["hydrated"] and not newest["closed"]
                    and status[-1][1] == "live"):
                left = [t for t, s in status if t >= since and s != "live"]
                lost_at = min([closed[0], *left])
                back_at = max([newest["hydrated"], *(t for t, s in status if t >= since and s == "live")])
                dark[name] = back_at - lost_at
        late = {n: round(t, 2) for n, t in dark.items() if t > RECONNECT_SECONDS}
        if late or (len(dark) < len(pages) and time.time() > deadline):
            raise AssertionError(
                f"not Live again on a new connection within {RECONNECT_SECONDS}s of losing it: without "
                f"Live for {late} s; status changes and sockets (seconds since the fault): "
                f"{ {n: _timeline(seen[n], since) for n in pages if n not in dark or n in late} }")
        if len(dark) == len(pages):
            break
        time.sleep(0.1)
    for name in pages:
        print(f"  {name}: {_timeline(seen[name], since)}")
    return dark


def _timeline(state: dict, since: float) -> str:
    """A page's status changes and websockets (created/opened/closed), in seconds since `since`."""
    def rel(ms: float | None) -> str:
        return "-" if ms is None else f"{ms / 1000 - since:+.2f}"

    status = " ".join(f"{rel(t)} {s}" for t, s in state["status"] if t / 1000 >= since - 1)
    sockets = " ".join(f"[{rel(s['created'])} {rel(s['opened'])} {rel(s['hydrated'])} {rel(s['closed'])}]"
                       for s in state["sockets"] if not s["closed"] or s["closed"] / 1000 >= since - 1)
    return f"status: {status or 'unchanged'}; sockets (created opened hydrated closed): {sockets}"


def _assert_feed(readers: list[Page], before: list[int], arrivals: list[int]) -> None:
    """Each reader shows every story once; arrivals (published after the page
    loaded) with their NEW badge and counted in the banner."""
    try:
        _check_feed(readers, before, arrivals)
    except AssertionError as failed:
        shown = [reader.evaluate("""() => [document.querySelector('#new-stories-count')?.textContent,
            [...document.querySelectorAll('.story-card')].map(c => c.dataset.storyId + (c.dataset.new === '1' ? '*' : ''))]""")
                 for reader in readers]
        raise AssertionError(f"{failed}\nexpected before={before} arrivals={arrivals}; each reader's banner "
                             f"and cards (* = NEW): {shown}") from None


def _check_feed(readers: list[Page], before: list[int], arrivals: list[int]) -> None:
    for reader in readers:
        for story_id in before:
            expect(reader.locator(f".story-card[data-story-id='{story_id}']")).to_have_count(1)
        for story_id in arrivals:
            card = reader.locator(f".story-card[data-story-id='{story_id}']")
            expect(card).to_have_count(1)
            expect(card.locator(".new-badge")).to_have_count(1)
        expect(reader.locator("#new-stories-count")).to_have_text(
            f"{len(arrivals)} new {'story' if len(arrivals) == 1 else 'stories'} published")


def _tab_state_holds(fleet: Cluster, page: Page, text: str) -> bool:
    """Whether the tab's server-side state (in Redis, shared by every instance) holds `text`."""
    token = page.evaluate("window.sessionStorage.getItem('token')")
    client = redis.Redis.from_url(fleet.redis.url)
    try:
        return any(text.encode() in (client.get(key) or b"")
                   for key in client.scan_iter(match=f"*{token}*", count=1000)
                   if client.type(key) == b"string")
    finally:
        client.close()


# ---------------------------------------------------------------- the test


def test_readers_and_an_author_ride_out_instances_stopping_and_dying(fleet: Cluster, browser: Browser):
    started = time.monotonic()
    a, b = fleet.instances["a"], fleet.instances["b"]
    print(f"hosts: { {n: (h.address, h.netns) for n, h in fleet.network.hosts.items()} }; "
          f"release step {fleet.release_seconds:.1f}s; nginx at {fleet.url}")
    print(f"instance a ready in {a.start():.1f}s")
    token = _register(a)
    before = [_publish(a, token, f"Before Everything {i} {uuid.uuid4().hex[:6]}") for i in range(2)]

    contexts: list[BrowserContext] = []
    try:
        # Only A runs: every tab starts there.
        readers = [_open(browser, fleet, "/community", contexts) for _ in range(READERS)]
        author = _open(browser, fleet, "/writing", contexts, token=token)
        print(f"instance b ready in {b.start():.1f}s")
        tabs = {**{f"reader{i}": r for i, r in enumerate(readers)}, "author": author}

        arrivals = [_publish(a, token, f"Through A {uuid.uuid4().hex[:6]}"),
                    _publish(b, token, f"Through B {uuid.uuid4().hex[:6]}")]
        _assert_feed(readers, before, arrivals)

        # The author types a title and never saves it.
        unsaved = f"Unsaved Draft Title {uuid.uuid4().hex[:6]}"
        title_input = author.locator("#story-title-input")
        title_input.fill(unsaved)
        deadline = time.monotonic() + 10
        while not _tab_state_holds(fleet, author, unsaved):
            assert time.monotonic() < deadline, "the typed title never reached the tab's state in Redis"
            time.sleep(0.1)

        for victim, survivor, sig in ((a, b, signal.SIGTERM), (b, a, signal.SIGTERM), (a, b, signal.SIGKILL)):
            fault = time.time()
            stop_seconds, killed = victim.stop(sig)
            # Published while the victim is down, before the tabs are back.
            arrivals.append(_publish(survivor, token, f"While {victim.name} Is Down {uuid.uuid4().hex[:6]}"))
            back = _live_again(tabs, fault)
            arrivals.append(_publish(survivor, token, f"After The Move {uuid.uuid4().hex[:6]}"))
            print(f"{signal.Signals(sig).name} {victim.name}: stopped in {stop_seconds:.1f}s "
                  f"({killed} killed after the timeout); without Live for "
                  f"{ {n: round(s, 2) for n, s in back.items()} } s")
            victim.launch()  # it starts while the pages are checked
            _assert_feed(readers, before, arrivals)
            expect(title_input).to_have_value(unsaved)
            print(f"instance {victim.name} ready again in {victim.wait_ready():.1f}s")
            # And through the restarted instance too.
            arrivals.append(_publish(victim, token, f"Through {victim.name} Again {uuid.uuid4().hex[:6]}"))
            _assert_feed(readers, before, arrivals)

        # Nothing was saved along the way: the author's story list holds none of it.
        expect(author.locator(".my-story-title", has_text=unsaved)).to_have_count(0)
        expect(title_input).to_have_value(unsaved)
    finally:
        for context in contexts:
            context.close()
    print(f"failover scenario took {time.monotonic() - started:.1f}s (plus the release step)")
