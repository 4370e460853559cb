"""fictures.deadline.MovingDeadline: one timer for a deadline every wait moves."""

from __future__ import annotations

import asyncio

from fictures.deadline import MovingDeadline
from tests.conftest import wait_until


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


async def test_a_sweep_looks_at_every_owner_each_period_with_one_timer_while_it_has_any():
    from fictures.deadline import sweep

    loop = asyncio.get_running_loop()
    looks: list[tuple[str, float]] = []

    class Owner:
        def __init__(self, name: str, fail: bool = False):
            self.name, self.fail = name, fail

        def swept(self, now: float) -> None:
            looks.append((self.name, now))
            if self.fail:
                raise RuntimeError("a broken owner")

    the_sweep = sweep(0.05)
    assert sweep(0.05) is the_sweep and sweep(0.1) is not the_sweep  # one per loop and period
    before = len(loop._scheduled)
    a, b, broken = Owner("a"), Owner("b"), Owner("broken", fail=True)
    started = loop.time()
    for owner in (a, b, broken):
        the_sweep.add(owner)
    assert len(loop._scheduled) - before == 1
    await wait_until(lambda: len(looks) >= 6, timeout=5)  # two ticks (three owners each)
    names = [name for name, _ in looks]
    # each owner looked at twice (a broken one stops no one), no sooner than a period in
    assert sorted(names) == ["a", "a", "b", "b", "broken", "broken"], names
    assert min(now for _, now in looks) - started >= 0.049
    for owner in (a, b, broken):
        the_sweep.discard(owner)
    looks.clear()
    await asyncio.sleep(0.12)
    assert looks == [] and len(the_sweep) == 0
    assert len(loop._scheduled) - before == 0
