"""Watch the community event stream: ``python -m fictures.watch [URL]``.

Prints one line per event (channel, id, JSON). When the connection drops it
reconnects with backoff and resumes after the last id it printed, so nothing
is missed or printed twice. Ctrl+C exits cleanly. Ids are passed back as the
server sent them: with --token they name both sequences (`<public>.<private>`).

    python -m fictures.watch http://localhost:3000 --channels story:published,post:created
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from typing import TextIO

import httpx
from httpx_sse import connect_sse

logger = logging.getLogger("fictures.watch")


class Watcher:
    def __init__(
        self,
        base_url: str,
        *,
        channels: str | None = None,
        story_id: int | None = None,
        token: str | None = None,
        last_event_id: str | None = None,
        out: TextIO = sys.stdout,
        max_backoff: float = 10.0,
    ):
        self.url = base_url.rstrip("/") + "/api/community/events"
        self.params = {k: str(v) for k, v in (("channels", channels), ("story_id", story_id)) if v}
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.last_event_id = last_event_id
        self.out = out
        self.max_backoff = max_backoff

    def _print(self, kind: str, event_id: str | None, data: str) -> None:
        self.out.write(f"{kind}\t{event_id or '-'}\t{data}\n")
        self.out.flush()

    def run_once(self, client: httpx.Client) -> None:
        headers = dict(self.headers)
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        with connect_sse(client, "GET", self.url, params=self.params, headers=headers) as source:
            if source.response.status_code != 200:
                source.response.read()
                detail = source.response.json().get("detail", source.response.text)
                raise SystemExit(f"{source.response.status_code}: {detail}")
            for sse in source.iter_sse():
                if not sse.data:
                    continue  # keep-alive
                if sse.event == "reset":
                    logger.warning("The server reset this stream (%s): refetch what you show", sse.data)
                    if json.loads(sse.data).get("reason") == "history":
                        self.last_event_id = None
                self._print(sse.event, sse.id or None, sse.data)
                if sse.id:
                    self.last_event_id = sse.id

    def run(self) -> None:
        backoff = 0.5
        with httpx.Client(timeout=httpx.Timeout(10, read=90)) as client:
            while True:
                started = time.monotonic()
                try:
                    self.run_once(client)
                    logger.info("Stream ended; reconnecting")
                except httpx.HTTPError as exc:
                    logger.warning("Stream dropped (%s); resuming after #%s", exc, self.last_event_id)
                if time.monotonic() - started > 30:
                    backoff = 0.5
                time.sleep(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.max_backoff)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fictures.watch", description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://localhost:3000", help="the app's base URL")
    parser.add_argument("--channels", help="comma-separated channels, e.g. story:published")
    parser.add_argument("--story-id", type=int, help="only events about this story")
    parser.add_argument("--token", help="bearer token: adds your private draft events")
    parser.add_argument("--last-event-id", help="resume after this event id (as printed)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    watcher = Watcher(
        args.url,
        channels=args.channels,
        story_id=args.story_id,
        token=args.token,
        last_event_id=args.last_event_id,
    )
    try:
        watcher.run()
    except KeyboardInterrupt:
        logger.info("Stopped (last event id %s)", watcher.last_event_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
