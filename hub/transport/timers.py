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
- The heap holds an owner through a holder that :meth:`Timers.schedule` with ``inf`` empties:
  the stale entries of a closed session (up to a ping interval away) keep nothing of it alive.
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
        # (slot, order, deadline, holder): the slot is the deadline rounded down to the grid;
        # the holder is [owner] while the owner has a deadline, [None] after
        self._heap: list[tuple[float, int, float, list[TimerOwner | None]]] = []
        self._holders: dict[int, list[TimerOwner | None]] = {}  # id(owner) -> its holder
        self._order = itertools.count()
        self._scope: trio.CancelScope | None = None

    def schedule(self, owner: TimerOwner, deadline: float) -> None:
        """Wake ``owner`` at ``deadline`` (trio time; ``inf`` for never), instead of before."""
        if deadline == math.inf:
            owner.timer_deadline = deadline
            holder = self._holders.pop(id(owner), None)
            if holder is not None:
                holder[0] = None
                if len(self._heap) > 2 * len(self._holders) + 256:
                    self._compact()
            return
        if deadline == owner.timer_deadline:
            return
        owner.timer_deadline = deadline
        holder = self._holders.get(id(owner))
        if holder is None:
            holder = self._holders[id(owner)] = [owner]
        slot = math.floor(deadline / GRID) * GRID
        heapq.heappush(self._heap, (slot, next(self._order), deadline, holder))
        scope = self._scope
        if scope is not None and slot < scope.deadline:
            scope.deadline = slot

    def _compact(self) -> None:
        """Drop the stale entries (of owners done with or rescheduled), so that what the heap
        holds follows the live sessions, not the sessions closed in the last ping interval."""
        heap = self._heap
        heap[:] = [
            entry
            for entry in heap
            if (owner := entry[3][0]) is not None and owner.timer_deadline == entry[2]
        ]
        heapq.heapify(heap)

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
                _, _, deadline, holder = heapq.heappop(heap)
                owner = holder[0]
                if owner is None or owner.timer_deadline != deadline:
                    continue  # done with, or rescheduled since
                owner.timer_deadline = math.inf
                try:
                    owner.on_timer(max(now, deadline))
                except Exception:
                    log.exception("timer of %r failed", owner)
                    owner.on_timer_error()
            await trio.lowlevel.checkpoint()
