"""The README's two screenshots, taken from a running app so they stay current.

    python3 scripts/dev.py run                      # in one terminal (demo data)
    .venv/bin/python scripts/screenshots.py [URL]   # default http://localhost:3000

A reader opens /community; basil publishes three stories through the REST API while
the reader watches, so the shot shows what live arrivals look like: the toast, the
"3 new stories" banner, the NEW badges and the green Live indicator. Then ada signs
in on /login and starts a story on /writing. It writes docs/screenshots/community.png
and docs/screenshots/writing.png (and publishes three stories into the database it
talks to: use the demo database, not production).

It drives Debian's Chromium (/usr/bin/chromium) when present, else Playwright's.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

log = logging.getLogger("screenshots")

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "demo-password"  # the demo accounts' (fictures/demo.py)
AUTHOR, WRITER = "basil", "ada"  # who publishes while the reader watches; who writes
STORIES = [
    ("The Cartographer of Small Hours", "fantasy",
     "A mapmaker charts the minutes nobody uses, until someone moves in."),
    ("Salt and Static", "science-fiction",
     "A lighthouse radio picks up a voice from a ship that sank in 1911."),
    ("Second Draft of a Marriage", "romance",
     "Two novelists, one shared manuscript, and a deadline neither will miss."),
]


def _token(client: httpx.Client, username: str, password: str) -> str:
    response = client.post("/api/auth/token", json={"username": username, "password": password})
    response.raise_for_status()
    return response.json()["token"]


def _wait_live(page: Page) -> None:
    page.get_by_text("Live", exact=True).first.wait_for(timeout=60_000)


def community(browser, base: str, client: httpx.Client, out: Path, *, author: str, password: str) -> Path:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/community")
    _wait_live(page)
    headers = {"Authorization": f"Bearer {_token(client, author, password)}"}
    for title, genre, summary in STORIES:
        body = {"title": title, "genre": genre, "summary": summary,
                "content": f"{summary}\n\n(The rest is still being written.)", "status": "published"}
        client.post("/api/stories", json=body, headers=headers).raise_for_status()
        time.sleep(0.4)
    page.get_by_text(f"{len(STORIES)} new stories").first.wait_for(timeout=15_000)
    page.wait_for_timeout(600)  # the toast's entrance animation
    path = out / "community.png"
    page.screenshot(path=str(path))
    page.close()
    return path


def writing(browser, base: str, out: Path, *, writer: str, password: str) -> Path:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/login")
    page.locator("#username").fill(writer)
    page.locator("#password").fill(password)
    page.locator("#submit").click()
    page.wait_for_url("**/writing", timeout=30_000)  # where a login lands
    _wait_live(page)
    page.locator("#story-title-input").fill("The Orchard at the End of the Line")
    page.locator("#story-summary-input").fill(
        "Every spring the last train stops at an orchard that is not on any timetable.")
    page.locator("#story-content-input").fill(
        "The conductor never announced it. You simply felt the brakes, and smelled apples.")
    path = out / "writing.png"
    page.screenshot(path=str(path))
    page.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://localhost:3000")
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNGs go")
    parser.add_argument("--author", default=AUTHOR, help="publishes while the reader watches")
    parser.add_argument("--writer", default=WRITER, help="signs in and writes on /writing")
    parser.add_argument("--password", default=PASSWORD, help="both accounts' password")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    base = args.url.rstrip("/")
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright, httpx.Client(base_url=base, timeout=30) as client:
        launch = {"executable_path": str(CHROMIUM)} if CHROMIUM.exists() else {}
        browser = playwright.chromium.launch(args=FLAGS, **launch)
        try:
            for path in (
                community(browser, base, client, args.out, author=args.author, password=args.password),
                writing(browser, base, args.out, writer=args.writer, password=args.password),
            ):
                log.info("wrote %s", path)
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
