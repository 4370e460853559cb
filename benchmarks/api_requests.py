"""What one REST request costs in the API app itself (no network, no server).

    .venv/bin/python benchmarks/api_requests.py [--requests 500] [--root CHECKOUT]

Builds `fictures.api.build()` of the checkout at --root (default: this one) on a
temporary SQLite database and an embedded Valkey, and sends --requests
sequential requests per operation through httpx's ASGI transport, after a
warm-up: a story list page, one story, a refused write (401), a body that does
not fit (422) and a login with a wrong password (401: one argon2 hash, with the
rate limits' Redis round trips). Prints per-request wall time (mean, p50, p99)
and process CPU per request. Figures only, never pass/fail; run it on two
checkouts to compare them (the machine's load moves both).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path


def _prepare(root: Path) -> None:
    tmp = tempfile.mkdtemp(prefix="fictures-bench-")
    os.environ.update({
        "FICTURES_ENV": "test",
        "DATABASE_URL": f"sqlite:///{tmp}/bench.db",
        "FICTURES_STREAM_KEY": f"fictures-bench-{uuid.uuid4().hex[:8]}:events",
        "FICTURES_LOGIN_LIMIT_PER_ACCOUNT": "1000000/minute",
        "FICTURES_LOGIN_LIMIT_PER_ADDRESS": "1000000/minute",
    })
    sys.path.insert(0, str(root))


async def _measure(client, method: str, url: str, n: int, **kwargs) -> tuple[list[float], float, int]:
    for _ in range(min(20, n)):
        await client.request(method, url, **kwargs)
    times = []
    cpu = time.process_time()
    status = 0
    for _ in range(n):
        started = time.perf_counter()
        response = await client.request(method, url, **kwargs)
        times.append(time.perf_counter() - started)
        status = response.status_code
    return times, (time.process_time() - cpu) / n, status


async def main(args: argparse.Namespace) -> None:
    import httpx
    from reflex.model import get_engine
    from sqlmodel import SQLModel

    import fictures.models  # noqa: F401
    from fictures import auth, db
    from fictures.api import build
    from fictures.models import Credentials, StoryCreate
    from fictures.stories import create_story

    SQLModel.metadata.create_all(get_engine())
    with db.session() as s:
        user = auth.register(session=s, data=Credentials(username="bench_user", password="bench-password"))
        for i in range(60):
            story = create_story(session=s, author=user, data=StoryCreate(
                title=f"Story {i}", summary="A summary.", content="Text. " * 2000, status="published"))
        story_id = story.id

    transport = httpx.ASGITransport(app=build())
    async with httpx.AsyncClient(transport=transport, base_url="http://bench.test") as client:
        cases = [
            ("GET /api/stories?limit=20", "GET", "/api/stories", {"params": {"limit": 20}}, args.requests),
            ("GET /api/stories/{id}", "GET", f"/api/stories/{story_id}", {}, args.requests),
            ("POST /api/stories, no bearer (401)", "POST", "/api/stories", {"json": {"title": "x"}}, args.requests),
            ("POST /api/auth/register, bad name (422)", "POST", "/api/auth/register",
             {"json": {"username": "a b", "password": "long enough"}}, args.requests),
            ("POST /api/auth/token, wrong password (401)", "POST", "/api/auth/token",
             {"json": {"username": "bench_user", "password": "wrong-password"}}, max(10, args.requests // 20)),
        ]
        print(f"checkout: {args.root}")
        print(f"{'operation':45} {'status':>6} {'mean ms':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>7}")
        for label, method, url, kwargs, n in cases:
            times, cpu, status = await _measure(client, method, url, n, **kwargs)
            times.sort()
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            print(f"{label:45} {status:>6} {statistics.mean(times) * 1000:8.2f} "
                  f"{statistics.median(times) * 1000:7.2f} {p99 * 1000:7.2f} {cpu * 1000:7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    arguments = parser.parse_args()
    _prepare(arguments.root.resolve())
    from fictures.embedded_redis import EmbeddedRedis

    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    redis_server = EmbeddedRedis(port=port).start()
    os.environ["REDIS_URL"] = redis_server.url
    try:
        asyncio.run(main(arguments))
    finally:
        redis_server.stop()
