"""One task keeps the deadlines of every session of an endpoint.

A task per session sleeping on its own deadline costs memory per connection, and each wake-up
costs trio a cancellation (measured: ~300 µs of CPU per ping with 10,000 sessions). Here the
deadlines live in one heap and one task wakes on a 5 ms grid, handling every deadline of that
slot at once: at 10,000 sessions pinging every 2 s, one wake-up per ~25 pings.

Rules:
- :meth:`Timers.schedule` replaces the owner's deadline; older heap entries of that owner are
  stale and skipped when they come up (checked against ``owner.timer_deadline``).
- A deadline is woken in its grid slot, up to 5 ms before it, and the owner is told the time
  is its deadline: it acts as if exactly on time (never late, which the protocol's ping
  timeout needs: the official suite polls just after pingInterval + pingTimeout).
- An owner's failure (an exception from its ``on_timer``) is logged and ends that owner only.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import Protocol

import trio

__all__ = ["GRID", "TimerOwner", "Timers"]

log = logging.getLogger("hub.transport")

GRID = 0.005  # seconds


class TimerOwner(Protocol):
    timer_deadline: float

    def on_timer(self, now: float) -> None: ...

    def on_timer_error(self) -> None: ...


class Timers:
    """The deadlines of many owners, kept by :meth:`run`."""

    def __init__(self) -> None:
        # (slot, order, deadline, owner): the slot is the deadline rounded down to the grid
        self._heap: list[tuple[float, int, float, TimerOwner]] = []
        self._order = itertools.count()
        self._scope: trio.CancelScope | None = None

    def schedule(self, owner: TimerOwner, deadline: float) -> None:
        """Wake ``owner`` at ``deadline`` (trio time; ``inf`` for never), instead of before."""
        if deadline == owner.timer_deadline:
            return
        owner.timer_deadline = deadline
        if deadline == math.inf:
            return
        slot = math.floor(deadline / GRID) * GRID
        heapq.heappush(self._heap, (slot, next(self._order), deadline, owner))
        scope = self._scope
        if scope is not None and slot < scope.deadline:
            scope.deadline = slot

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Wake the owners whose deadlines have passed, until cancelled."""
        task_status.started()
        heap = self._heap
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, deadline, owner = heapq.heappop(heap)
                if owner.timer_deadline != deadline:
                    continue  # rescheduled since
                owner.timer_deadline = math.inf
                try:
                    owner.on_timer(max(now, deadline))
                except Exception:
                    log.exception("timer of %r failed", owner)
                    owner.on_timer_error()
            await trio.lowlevel.checkpoint()
