"""Timers: one task keeps many deadlines, never late, replaced deadlines skipped, a failing
owner ends alone."""

from __future__ import annotations

import math

import trio

from hub.transport.timers import GRID, Timers


class Owner:
    def __init__(self, name: str, log: list[tuple[str, float, float]]) -> None:
        self.name = name
        self.log = log
        self.timer_deadline = math.inf
        self.fail = False
        self.failed = False

    def on_timer(self, now: float) -> None:
        self.log.append((self.name, now, trio.current_time()))
        if self.fail:
            raise RuntimeError("owner bug")

    def on_timer_error(self) -> None:
        self.failed = True


async def test_deadlines_fire_in_order_never_late_and_at_most_one_slot_early(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    timers = Timers()
    await nursery.start(timers.run)
    log: list[tuple[str, float, float]] = []
    start = trio.current_time()
    owners = {name: Owner(name, log) for name in "abc"}
    timers.schedule(owners["b"], start + 2.0)
    timers.schedule(owners["a"], start + 1.0)
    timers.schedule(owners["c"], start + 1.0021)
    await trio.sleep(3)
    assert [name for name, _, _ in log] == ["a", "c", "b"]
    for name, told, real in log:
        deadline = {"a": 1.0, "b": 2.0, "c": 1.0021}[name] + start
        assert told >= deadline  # the owner acts as if on time or later...
        assert real <= deadline + 1e-9  # ... and is never woken after its deadline
        assert real >= deadline - GRID  # nor more than one slot early


async def test_a_rescheduled_deadline_replaces_the_old_one(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    timers = Timers()
    await nursery.start(timers.run)
    log: list[tuple[str, float, float]] = []
    owner = Owner("a", log)
    start = trio.current_time()
    timers.schedule(owner, start + 1)
    timers.schedule(owner, start + 5)  # e.g. a pong moved the next ping
    await trio.sleep(3)
    assert log == []
    timers.schedule(owner, math.inf)  # e.g. the session ended
    await trio.sleep(5)
    assert log == []


async def test_a_failing_owner_is_told_and_the_others_go_on(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    timers = Timers()
    await nursery.start(timers.run)
    log: list[tuple[str, float, float]] = []
    bad, good = Owner("bad", log), Owner("good", log)
    bad.fail = True
    start = trio.current_time()
    timers.schedule(bad, start + 1)
    timers.schedule(good, start + 1)
    await trio.sleep(2)
    assert bad.failed
    assert [name for name, _, _ in log] == ["bad", "good"]
