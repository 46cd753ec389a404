"""The load generator: Node processes (``load/worker.mjs``) holding the clients, driven here.

The clients are split evenly over ``ceil(clients / CLIENTS_PER_WORKER)`` processes. The first
client of the first process is also the control client: it asks the server for each burst, and
receives the ticks like every other client.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from bench.procs import BenchError, Child, open_child
from bench.targets import LOAD_NEEDS

__all__ = ["Burst", "Connected", "Load", "Status", "open_load"]

WORKER = Path(__file__).resolve().parent / "load" / "worker.mjs"
CLIENTS_PER_WORKER = 2500
CONNECTING = 256
"""Connections being opened at once, over all workers (the servers' backlog is 1024)."""
STEP_TIMEOUT = 20.0
"""A worker's start, or its answer to a command that does no I/O."""


@attrs.frozen
class Connected:
    """How connecting went. Times in CLOCK_MONOTONIC milliseconds."""

    start: float
    end: float
    connected: int
    failed: int
    error: str | None

    @property
    def per_s(self) -> float:
        return self.connected / max(self.end - self.start, 1e-3) * 1000


@attrs.frozen
class Burst:
    """What the clients received of one burst of broadcasts.

    Attributes:
        started: when the control client asked for it (CLOCK_MONOTONIC ms).
        last: when the last delivery arrived.
        deliveries: ticks received, over all clients.
        expected: clients x broadcasts.
        latencies: per broadcast received by anyone, ms from its emit until the last client
            got it.
    """

    started: float
    last: float
    deliveries: int
    expected: int
    latencies: list[float]

    @property
    def per_s(self) -> float:
        return self.deliveries / max(self.last - self.started, 1e-3) * 1000

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


@attrs.frozen
class Status:
    """The clients now, over all workers.

    Attributes:
        connected: clients that connected.
        alive: of those, the ones not lost since.
        disconnects: the ones lost: closed, failed, told to go by the server, or silent (no ping
            for the server's pingInterval + pingTimeout, when a Socket.IO client gives up).
        pings: pings answered since the clients started.
        error: why the first client was lost.
    """

    connected: int
    alive: int
    disconnects: int
    pings: int
    error: str | None


class Load:
    """The running load-generator processes and their clients."""

    def __init__(self, workers: list[Child]) -> None:
        self.workers = workers
        self.clients = 0

    def cpu_seconds(self) -> float:
        return sum(worker.cpu_seconds() for worker in self.workers)

    async def connect(self, url: str, clients: int, transport: str, timeout: float) -> Connected:
        """Open ``clients`` Socket.IO clients; returns once each connected or failed."""
        share, extra = divmod(clients, len(self.workers))
        for index, worker in enumerate(self.workers):
            await worker.send(
                {
                    "op": "connect",
                    "url": url,
                    "clients": share + (index < extra),
                    "concurrency": max(1, CONNECTING // len(self.workers)),
                    "transport": transport,
                }
            )
        with trio.move_on_after(timeout) as waiting:
            events = [await worker.event("connected") for worker in self.workers]
        if waiting.cancelled_caught:
            raise BenchError(f"{clients} clients not connected within {timeout:.0f} s")
        self.clients = sum(e["connected"] for e in events)
        return Connected(
            start=min(e["start"] for e in events),
            end=max(e["end"] for e in events),
            connected=self.clients,
            failed=sum(e["failed"] for e in events),
            error=next((e["error"] for e in events if e["error"]), None),
        )

    async def status(self) -> Status:
        """How many clients are still connected, how many were lost, how many pings answered."""
        with trio.fail_after(STEP_TIMEOUT):
            for worker in self.workers:
                await worker.send({"op": "status"})
            events = [await worker.event("status") for worker in self.workers]
        return Status(
            connected=sum(e["connected"] for e in events),
            alive=sum(e["alive"] for e in events),
            disconnects=sum(e["disconnects"] for e in events),
            pings=sum(e["pings"] for e in events),
            error=next((e["error"] for e in events if e["error"]), None),
        )

    async def burst(self, first: int, count: int, size: int, timeout: float) -> Burst:
        """Ask for ``count`` broadcasts (seq from ``first``) and wait for them to arrive.

        After ``timeout`` seconds, take what has arrived (lost deliveries show in the result).
        """
        with trio.fail_after(STEP_TIMEOUT):
            for worker in self.workers:
                await worker.send({"op": "expect", "first": first, "count": count})
            for worker in self.workers:
                await worker.event("expecting")
            control = self.workers[0]
            await control.send({"op": "burst", "first": first, "count": count, "size": size})
            started: float = (await control.event("sent"))["t0"]
        reports: list[dict[str, Any]] = []
        with trio.move_on_after(timeout):
            for worker in self.workers:
                reports.append(await worker.event("done"))
        with trio.fail_after(STEP_TIMEOUT):
            for worker in self.workers[len(reports) :]:
                await worker.send({"op": "report"})
                reports.append(await worker.event("done"))
        with trio.move_on_after(STEP_TIMEOUT):
            await control.event("acked")  # the server has left its loop
        latencies: list[float] = []
        for seen in zip(*(r["latencies"] for r in reports), strict=True):
            arrived = [latency for latency in seen if latency is not None]
            if arrived:
                latencies.append(max(arrived))
        return Burst(
            started=started,
            last=max(r["last"] for r in reports),
            deliveries=sum(r["deliveries"] for r in reports),
            expected=count * self.clients,
            latencies=latencies,
        )


@asynccontextmanager
async def open_load(clients: int, *, cores: frozenset[int], logs: Path) -> AsyncIterator[Load]:
    """Start the worker processes for ``clients`` clients, pinned to ``cores``."""
    node = LOAD_NEEDS.command(0)[0]
    async with AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(
                open_child(f"load-{i}", [node, str(WORKER)], cores=cores, logs=logs, events=True)
            )
            for i in range(math.ceil(clients / CLIENTS_PER_WORKER))
        ]
        with trio.fail_after(STEP_TIMEOUT):
            for worker in workers:
                await worker.event("ready")
        yield Load(workers)
