"""What a Socket.IO server has done since it started, kept as plain numbers where it happens.

Rules (the delivery path is the hot path, DESIGN.md point 2):

- Counting is one ``+=`` on an attribute, or one dict update, and never per recipient: a
  broadcast adds the number of sockets it reached once, a connection its transport once.
- No metrics library is called here. A scrape (``hub.app.metrics``) reads these numbers, and
  computes the gauges (connections, rooms) from the server's state at that moment.
- Everything runs on the trio thread, so no lock is needed.
"""

from __future__ import annotations

import bisect
from time import perf_counter

__all__ = ["DELIVERY_BUCKETS", "Histogram", "Stats"]

DELIVERY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the delivery time buckets: from one small room written inline
(~10 µs) to a large room written in slices behind a backlog (milliseconds to seconds)."""


class Histogram:
    """Observations counted in fixed buckets, as Prometheus histograms are.

    Args:
        bounds: increasing upper bounds; a last bucket without bound (``+Inf``) is added.

    Attributes:
        counts: observations per bucket (not cumulative); one more than ``bounds``.
        sum: the sum of the observations.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = DELIVERY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must increase")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket ("le", less or equal).
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations at most that)`` per bucket, ending with ``inf``."""
        total = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            buckets.append((bound, total))
        return buckets


class Stats:
    """Totals of one server since it started.

    Attributes:
        events_in: events received from clients (acks not counted).
        events_out: events written (or queued) to sockets, one per recipient: a broadcast to a
            room of 1,000 counts 1,000.
        opened: Engine.IO connections opened, by the transport they opened on.
        closed: Engine.IO connections closed, by reason (``"transport close"``,
            ``"ping timeout"``, ``"slow consumer"``...).
        delivery: seconds from a broadcast reaching its namespace's adapter (encoded) to the
            write to its last recipient; inline for a small room, after the last slice of the
            delivery task for a large one (``hub.server.adapter``).
    """

    __slots__ = ("closed", "delivery", "events_in", "events_out", "opened")

    def __init__(self) -> None:
        self.events_in = 0
        self.events_out = 0
        self.opened: dict[str, int] = {}
        self.closed: dict[str, int] = {}
        self.delivery = Histogram()

    def connection_opened(self, transport: str) -> None:
        self.opened[transport] = self.opened.get(transport, 0) + 1

    def connection_closed(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1

    def delivered(self, reached: int, started: float) -> None:
        """A broadcast was written to its last recipient: it reached ``reached`` sockets,
        starting at ``started`` (``time.perf_counter()``). One call per broadcast."""
        self.events_out += reached
        if reached:
            self.delivery.observe(perf_counter() - started)
