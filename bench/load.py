"""The load generator: Node processes (``load/worker.mjs``) holding the clients, driven here.

The clients are split evenly over ``ceil(clients / CLIENTS_PER_WORKER)`` processes. The first
client of the first process is also the control client: it asks the server for each burst, and
receives the ticks like every other client. For ``emit-api``, one more Node process
(``load/poster.mjs``) posts the emits over HTTP instead.

For a cluster of several nodes, there is a multiple of the number of nodes of processes (at
least one each) and process ``i`` connects its clients to node ``i`` modulo the nodes: the
clients are split evenly between the nodes, and the control client is on the first node.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from bench.procs import BenchError, Child, open_child
from bench.targets import LOAD_NEEDS

__all__ = [
    "Burst",
    "Connected",
    "Jwt",
    "Load",
    "Posted",
    "Poster",
    "Status",
    "open_load",
    "open_poster",
]

WORKER = Path(__file__).resolve().parent / "load" / "worker.mjs"
POSTER = Path(__file__).resolve().parent / "load" / "poster.mjs"
CLIENTS_PER_WORKER = 2500
CONNECTING = 256
"""Connections being opened at once, over all workers (the servers' backlog is 1024)."""
STEP_TIMEOUT = 20.0
"""A worker's start, or its answer to a command that does no I/O."""


@attrs.frozen
class Jwt:
    """The clients' tokens: HS256 with ``secret``, subjects ``user-0`` ... ``user-<users - 1>``
    (client ``i`` is ``user-<i % users>``)."""

    secret: str
    users: int


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
        by_worker: per worker process, per broadcast, ms from its emit until the last of that
            worker's clients got it (None: none did).
    """

    started: float
    last: float
    deliveries: int
    expected: int
    latencies: list[float]
    by_worker: tuple[list[float | None], ...] = ()

    @property
    def per_s(self) -> float:
        return self.deliveries / max(self.last - self.started, 1e-3) * 1000

    def percentile(self, q: float) -> float:
        return _percentile(self.latencies, q)

    def percentile_among(self, workers: Iterable[int], q: float) -> float:
        """The percentile ``q`` over the broadcasts of the time until the last client of these
        workers got each (a cluster: the workers of one node)."""
        chosen = [self.by_worker[index] for index in workers]
        latencies = [
            max(arrived)
            for seen in zip(*chosen, strict=True)
            if (arrived := [latency for latency in seen if latency is not None])
        ]
        return _percentile(latencies, q)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
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
        self.by_url: list[int] = []  # clients connected to each URL given to ``connect``
        self.urls = 1

    def workers_of(self, url: int) -> range:
        """The indices of the workers whose clients connected to the ``url``-th URL."""
        return range(url, len(self.workers), self.urls)

    def cpu_seconds(self) -> float:
        return sum(worker.cpu_seconds() for worker in self.workers)

    async def connect(
        self,
        url: str | Sequence[str],
        clients: int,
        transport: str,
        timeout: float,
        jwt: Jwt | None = None,
    ) -> Connected:
        """Open ``clients`` Socket.IO clients; returns once each connected or failed.

        ``url``: the server's, or a list of the nodes' of a cluster: worker ``i`` connects to
        ``url[i % len(url)]``. With ``jwt``, each client sends a token of its own at connect
        (``load/worker.mjs``).
        """
        urls = [url] if isinstance(url, str) else list(url)
        share, extra = divmod(clients, len(self.workers))
        first = 0
        for index, worker in enumerate(self.workers):
            mine = share + (index < extra)
            command: dict[str, Any] = {
                "op": "connect",
                "url": urls[index % len(urls)],
                "clients": mine,
                "concurrency": max(1, CONNECTING // len(self.workers)),
                "transport": transport,
            }
            if jwt is not None:
                command["jwt"] = {"secret": jwt.secret, "users": jwt.users, "first": first}
            await worker.send(command)
            first += mine
        with trio.move_on_after(timeout) as waiting:
            events = [await worker.event("connected") for worker in self.workers]
        if waiting.cancelled_caught:
            raise BenchError(f"{clients} clients not connected within {timeout:.0f} s")
        self.clients = sum(e["connected"] for e in events)
        self.by_url = [
            sum(e["connected"] for e in events[start :: len(urls)]) for start in range(len(urls))
        ]
        self.urls = len(urls)
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

    async def burst(
        self, first: int, count: int, size: int, timeout: float, interval: float = 0
    ) -> Burst:
        """Ask for ``count`` broadcasts (seq from ``first``; ``interval`` milliseconds apart
        when given, else as fast as the server goes) and wait for them to arrive.

        After ``timeout`` seconds, take what has arrived (lost deliveries show in the result).
        """
        await self.expect(first, count)
        control = self.workers[0]
        request: dict[str, Any] = {"op": "burst", "first": first, "count": count, "size": size}
        if interval:
            request["interval"] = interval
        with trio.fail_after(STEP_TIMEOUT):
            await control.send(request)
            started: float = (await control.event("sent"))["t0"]
        burst = await self.arrived(started, count, timeout)
        with trio.move_on_after(STEP_TIMEOUT):
            await control.event("acked")  # the server has left its loop
        return burst

    async def expect(self, first: int, count: int) -> None:
        """Have the clients count the ticks ``first`` to ``first + count - 1`` from now on."""
        with trio.fail_after(STEP_TIMEOUT):
            for worker in self.workers:
                await worker.send({"op": "expect", "first": first, "count": count})
            for worker in self.workers:
                await worker.event("expecting")

    async def arrived(self, started: float, count: int, timeout: float) -> Burst:
        """What arrived of the ``count`` ticks expected, the first sent at ``started``.

        Waits until every client has every tick, or ``timeout`` seconds.
        """
        reports: list[dict[str, Any]] = []
        with trio.move_on_after(timeout):
            for worker in self.workers:
                reports.append(await worker.event("done"))
        with trio.fail_after(STEP_TIMEOUT):
            for worker in self.workers[len(reports) :]:
                await worker.send({"op": "report"})
                reports.append(await worker.event("done"))
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
            by_worker=tuple(r["latencies"] for r in reports),
        )


@asynccontextmanager
async def open_load(
    clients: int, *, cores: frozenset[int], logs: Path, nodes: int = 1
) -> AsyncIterator[Load]:
    """Start the worker processes for ``clients`` clients, pinned to ``cores``; for a cluster of
    ``nodes`` nodes, a multiple of ``nodes`` of them."""
    node = LOAD_NEEDS.command(0)[0]
    count = math.ceil(math.ceil(clients / CLIENTS_PER_WORKER) / nodes) * nodes
    async with AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(
                open_child(f"load-{i}", [node, str(WORKER)], cores=cores, logs=logs, events=True)
            )
            for i in range(count)
        ]
        with trio.fail_after(STEP_TIMEOUT):
            for worker in workers:
                await worker.event("ready")
        yield Load(workers)


@attrs.frozen
class Posted:
    """How posting a burst of emits went. Times in CLOCK_MONOTONIC milliseconds.

    Attributes:
        started: when the first request was sent.
        end: when the last answer arrived.
        posts: requests sent.
        accepted: emits in the requests answered 200.
        delivered: the sum of the ``delivered`` counts the server answered.
        failed: requests not answered 200 (or not answered at all).
        error: why the first of them failed.
    """

    started: float
    end: float
    posts: int
    accepted: int
    delivered: int
    failed: int
    error: str | None

    @property
    def per_s(self) -> float:
        return self.accepted / max(self.end - self.started, 1e-3) * 1000


class Poster:
    """The running process (``load/poster.mjs``) that posts emits to an HTTP endpoint."""

    def __init__(self, child: Child) -> None:
        self.child = child

    def cpu_seconds(self) -> float:
        return self.child.cpu_seconds()

    async def post(
        self,
        url: str,
        token: str,
        room: str,
        first: int,
        count: int,
        *,
        batch: int,
        concurrency: int,
        size: int,
        timeout: float,
    ) -> Posted:
        """POST ``count`` emits of ``tick`` (seq from ``first``) to ``room`` at ``url``.

        ``batch`` emits a request (1: the single-object form, more: a JSON array), over
        ``concurrency`` keep-alive connections, each sending its next request when the answer
        to its last one has come.
        """
        await self.child.send(
            {
                "op": "post",
                "url": url,
                "token": token,
                "room": room,
                "first": first,
                "count": count,
                "batch": batch,
                "concurrency": concurrency,
                "size": size,
            }
        )
        with trio.move_on_after(timeout) as waiting:
            event = await self.child.event("posted")
        if waiting.cancelled_caught:
            raise BenchError(f"{count} emits not posted within {timeout:.0f} s")
        return Posted(
            started=event["t0"],
            end=event["end"],
            posts=event["posts"],
            accepted=event["accepted"],
            delivered=event["delivered"],
            failed=event["failed"],
            error=event["error"],
        )


@asynccontextmanager
async def open_poster(*, cores: frozenset[int], logs: Path) -> AsyncIterator[Poster]:
    """Start the emit poster, pinned to ``cores``."""
    node = LOAD_NEEDS.command(0)[0]
    async with open_child(
        "poster", [node, str(POSTER)], cores=cores, logs=logs, events=True
    ) as child:
        with trio.fail_after(STEP_TIMEOUT):
            await child.event("ready")
        yield Poster(child)
