"""Page loads run in threads of their own (fictures.db.page_read): a storm of
loads waits its turn among itself and never holds up the REST API's pool."""

from __future__ import annotations

import asyncio
import threading

from starlette.concurrency import run_in_threadpool

from fictures import db
from tests.conftest import wait_until


async def test_page_reads_run_a_few_at_a_time_and_never_take_the_apis_threads():
    release = threading.Event()
    running = 0
    most = 0
    lock = threading.Lock()

    def slow_read() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(10)
        with lock:
            running -= 1

    loads = [asyncio.ensure_future(db.page_read(slow_read)) for _ in range(db.PAGE_THREADS * 3)]
    try:
        await wait_until(lambda: running == db.PAGE_THREADS, message="every page thread busy")
        # Every page thread is busy and 16 loads wait: an API call still runs at once.
        assert await asyncio.wait_for(run_in_threadpool(lambda: "published"), 2) == "published"
        assert running == db.PAGE_THREADS
    finally:
        release.set()
        await asyncio.gather(*loads)
    assert most == db.PAGE_THREADS
