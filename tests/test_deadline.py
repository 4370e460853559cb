"""fictures.deadline.MovingDeadline: one timer for a deadline every wait moves."""

from __future__ import annotations

import asyncio

from fictures.deadline import MovingDeadline


async def test_a_wait_that_lasts_until_its_deadline_expires_once():
    loop = asyncio.get_running_loop()
    expired = asyncio.Event()
    deadline = MovingDeadline()
    started = loop.time()
    deadline.start(loop, 0.05, expired.set)
    await asyncio.wait_for(expired.wait(), 5)
    assert loop.time() - started >= 0.049
    assert deadline.timer is None  # fired and gone until the next wait


async def test_moving_the_deadline_keeps_one_timer_and_a_stopped_wait_never_expires():
    loop = asyncio.get_running_loop()
    calls: list[str] = []
    deadline = MovingDeadline()
    deadline.start(loop, 0.2, lambda: calls.append("first"))
    first = deadline.timer
    for _ in range(5):  # each wait moves the deadline later: the same timer
        deadline.stop()
        deadline.start(loop, 0.2, lambda: calls.append("moved"))
        assert deadline.timer is first
    deadline.stop()
    # The pending timer fires with nobody waiting: no call, and it goes away.
    fired = loop.create_future()
    loop.call_at(first.when() + 0.01, fired.set_result, None)
    await asyncio.wait_for(fired, 5)
    assert calls == [] and deadline.timer is None


async def test_an_earlier_deadline_than_the_pending_timer_gets_its_own():
    loop = asyncio.get_running_loop()
    expired = asyncio.Event()
    deadline = MovingDeadline()
    deadline.start(loop, 30, lambda: None)
    late = deadline.timer
    deadline.stop()
    deadline.start(loop, 0.02, expired.set)
    assert late is not None and late.cancelled() and deadline.timer is not late
    await asyncio.wait_for(expired.wait(), 5)
    deadline.cancel()
    assert deadline.timer is None
