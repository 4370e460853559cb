"""Print every public community event as it is published: an operator's tool.

    .venv/bin/python scripts/watch_events.py --redis-url redis://127.0.0.1:6379/0

The Redis to watch is the one the app uses: --redis-url, else REDIS_URL, else
FICTURES_EMBEDDED_REDIS_URL (the embedded Valkey of a running `scripts/dev.py run`;
the app logs its URL at start: "Embedded Valkey listening at ...").
Without any of them this tool refuses to start: a server of its own would be empty.

One line per event: channel, id, timestamp, then the event's JSON. Messages that
fail validation are printed as skipped. Ctrl+C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

import redis.asyncio as aioredis
import redis.exceptions

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fictures.embedded_redis import URL_ENV
from fictures.events.schema import PUBLIC_CHANNELS, MalformedEvent, parse_event

logger = logging.getLogger("watch_events")


def _redis_url(cli_value: str | None) -> str | None:
    return (
        cli_value
        or os.environ.get("REDIS_URL")
        or os.environ.get("FICTURES_REDIS_URL")
        or os.environ.get(URL_ENV)
    )


def format_message(channel: str, data: str) -> str:
    try:
        event = parse_event(channel, data)
    except MalformedEvent as exc:
        reason = " ".join(str(exc).split())  # pydantic's message spans several lines
        return f"{channel:<16} skipped malformed message ({reason}): {data[:200]!r}"
    return f"{channel:<16} #{event.id:<6} {event.timestamp.isoformat()} {data}"


async def watch(url: str) -> None:
    client = aioredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(*PUBLIC_CHANNELS)
        logger.info("Watching %s on %s (Ctrl+C stops)", ", ".join(PUBLIC_CHANNELS), url)
        async for message in pubsub.listen():
            if message["type"] == "message":
                print(format_message(message["channel"], message["data"]), flush=True)
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print the public community events published on the app's Redis."
    )
    parser.add_argument(
        "--redis-url",
        help=f"Redis to watch (default: REDIS_URL, then {URL_ENV})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    url = _redis_url(args.redis_url)
    if not url:
        parser.error(
            f"say which Redis to watch: --redis-url, REDIS_URL or {URL_ENV}. "
            "With no REDIS_URL the app runs an embedded Valkey; its URL is in the app's "
            "log line 'Embedded Valkey listening at ...'."
        )
    try:
        asyncio.run(watch(url))
    except KeyboardInterrupt:
        logger.info("Stopped")
    except (redis.exceptions.ConnectionError, OSError) as exc:
        logger.error("Cannot reach Redis at %s: %s", url, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
