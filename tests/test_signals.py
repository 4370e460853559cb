"""The ephemeral lane against a real Redis: every process hears every signal, at once."""

from __future__ import annotations

import asyncio

from fictures.settings import settings
from fictures.signals import Signals
from tests.conftest import wait_until


def _signals(url: str | None = None) -> Signals:
    return Signals(url or settings.redis_url, channel=f"{settings.stream_key}:signals-test")


async def test_every_process_hears_each_signal_once_and_malformed_ones_are_ignored():
    a, b = _signals(), _signals()
    heard: dict[str, list[dict]] = {"a": [], "b": []}

    async def on_a(data: dict) -> None:
        heard["a"].append(data)

    async def on_b(data: dict) -> None:
        heard["b"].append(data)

    a.on("typing", on_a)
    b.on("typing", on_b)
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        await wait_until(lambda: a.healthy and b.healthy, message="both subscribed")
        await a.redis.publish(a.channel, "not json")
        await a.redis.publish(a.channel, '{"no": "kind"}')
        assert await a.send("typing", room="story:1", user="ada", until=1.0)
        assert await b.send("other", room="story:1")
        await wait_until(lambda: heard["a"] and heard["b"], message="the signal in both")
        assert heard == {"a": [{"room": "story:1", "user": "ada", "until": 1.0}]} | {
            "b": [{"room": "story:1", "user": "ada", "until": 1.0}]
        }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await a.close()
        await b.close()


async def test_a_dropped_subscription_resyncs_and_sending_meanwhile_does_not_raise(embedded_redis):
    server = embedded_redis()
    signals = _signals(server.url)
    resyncs = []

    async def resync() -> None:
        resyncs.append(True)

    signals.on_resync(resync)
    task = asyncio.create_task(signals.run())
    try:
        await wait_until(lambda: len(resyncs) == 1, message="the first subscribe")
        port = server.port
        server.stop()
        await wait_until(lambda: not signals.healthy, message="the outage noticed")
        assert await signals.send("typing", room="x") is False
        embedded_redis(port=port)
        await wait_until(lambda: len(resyncs) == 2, timeout=15, message="a resync after the outage")
        assert await signals.send("typing", room="x") is True
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await signals.close()
