"""The measurements: one server, one number of clients, one row.

Every measurement starts a fresh server (pinned to the server core), reads its resident memory,
starts the load (pinned to the other cores), connects the clients and reads the memory again:
``rss_kb_per_conn`` is the difference over the clients. ``fanout`` (and ``polling``, the same
over HTTP long-polling) then asks for a warm-up burst, sizes the measured burst from its rate
to last about ``Settings.duration`` seconds, and reads the CPU time of the server and of the
load around it (``Settings.repeat`` measured bursts: the row is the median one). ``hold``
starts the server with short heartbeats, connects the clients and keeps them for
``Settings.duration`` seconds, asking the load every few seconds how many are still there.
``connect`` times the connections, each client's JWT checked at connect (``Settings.auth``)
or not. ``emit-api`` (``emit_api.py``) pushes broadcasts through the servers' HTTP emit
endpoint instead.

``fanout`` and ``polling`` also measure clusters (``cluster.py``): the nodes and their Redis
start instead of the one server, the clients are split evenly between the nodes, the control
client asks the first node for the bursts, and the CPU time and memory are those of all the
nodes together (Redis's CPU in a column of its own).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from bench.cluster import Deployment, open_deployment
from bench.load import Burst, Jwt, Load, Status, open_load
from bench.procs import BenchError, Cores
from bench.servers.common import EMIT_TOKEN, JWT_SECRET
from bench.targets import Target, open_server

__all__ = [
    "ConnectRow",
    "FanoutRow",
    "HoldRow",
    "Settings",
    "app_options",
    "connect",
    "fanout",
    "hold",
    "refuses_forged_token",
]

Progress = Callable[[str], None]
PROGRESS_EVERY = 5.0
"""Seconds between the progress lines of ``hold``."""


@attrs.frozen
class Settings:
    """How long and how large. ``quick``: a smoke run of a few broadcasts."""

    cores: Cores
    logs: Path
    duration: float = 3.0  # seconds the measured burst should last
    size: int = 60  # bytes of a tick's JSON payload
    quick: bool = False
    warmup_deliveries: int = 30_000
    broadcasts: tuple[int, int] = (10, 5000)  # fewest, most in the measured burst
    repeat: int = 1  # measured bursts; the row is the median one (by deliveries/s)
    # After them, a paced burst: broadcasts at this many deliveries per second (the same rate
    # for every server, below what each of the fast ones can do), for latency at a load that
    # does not saturate the server nor the load generator. 0: none.
    paced_rate: float = 0.0
    ping_interval: float = 2.0  # the server's heartbeat, seconds (hold only)
    ping_timeout: float = 2.0
    auth: str = "jwt"  # connect: "jwt", a token checked at each connect, or "none"
    batches: tuple[int, ...] = (1, 10)  # emit-api: emits per request, one row each
    concurrency: int = 4  # emit-api: HTTP connections posting at once

    def warmup(self, clients: int) -> int:
        return 5 if self.quick else min(200, max(3, math.ceil(self.warmup_deliveries / clients)))

    def paced(self, clients: int) -> tuple[int, float]:
        """Broadcasts of the paced burst, and milliseconds between two of them."""
        count = 5 if self.quick else max(10, round(self.duration * self.paced_rate / clients))
        return count, 1000 * clients / self.paced_rate

    def measured(self, clients: int, rate: float) -> int:
        if self.quick:
            return 20
        low, high = self.broadcasts
        return min(high, max(low, round(self.duration * rate / clients)))


@attrs.frozen
class FanoutRow:
    server: str
    clients: int
    deliveries_per_s: float
    cpu_us_per_delivery: float
    p50_ms: float
    p99_ms: float
    rss_kb_per_conn: float
    load_cpu_us_per_delivery: float
    broadcasts: int
    lost: int
    transport: str
    nodes: int = 1
    redis_cpu_percent: float | None = None  # a cluster's Redis, of one core, over the burst
    node_cpu_us_per_delivery: list[float] | None = None  # a cluster's: to the node's clients
    node_p50_ms: list[float] | None = None  # a cluster's: until the node's last client has it
    node_p99_ms: list[float] | None = None
    paced_rate: float | None = None  # deliveries/s asked for in the paced burst
    paced_p50_ms: float | None = None
    paced_p99_ms: float | None = None


@attrs.frozen
class ConnectRow:
    server: str
    clients: int
    auth: str
    connections_per_s: float
    cpu_us_per_connection: float
    rss_kb_per_conn: float
    load_cpu_us_per_connection: float
    failed: int

    @property
    def series(self) -> str:
        return self.server if self.auth == "jwt" else f"{self.server} (no auth)"


@attrs.frozen
class HoldRow:
    server: str
    clients: int
    connected: int
    alive: int  # still connected at the end
    disconnects: int  # clients lost after they connected
    pings: int  # answered during the hold, over all clients
    cpu_percent: float  # of one core, over the hold
    rss_kb_per_conn: float  # at the end
    all_alive: bool


def _connect_timeout(clients: int) -> float:
    return 30 + clients / 50  # 50 connections/s at the very least


async def _connected(
    servers: Deployment, load: Load, clients: int, transport: str, progress: Progress
) -> float:
    """Connect the clients; returns the servers' memory per connection, KiB."""
    base = servers.rss_kb()
    done = await load.connect(servers.urls, clients, transport, _connect_timeout(clients))
    if done.failed:
        raise BenchError(f"{done.failed} of {clients} clients did not connect: {done.error}")
    progress(f"connected {clients} clients in {(done.end - done.start) / 1000:.2f} s")
    await trio.sleep(0.2 if clients < 1000 else 1.0)  # let the server settle
    return (servers.rss_kb() - base) / clients


@attrs.frozen
class _Measured:
    burst: Burst
    cpu: tuple[float, ...]  # each server's, seconds
    load_cpu: float
    redis_cpu: float


async def fanout(
    target: Target, clients: int, settings: Settings, progress: Progress, transport: str
) -> FanoutRow:
    """Deliveries per second of bursts of broadcasts to ``clients`` clients in one room (of
    one server, or of every node of a cluster)."""
    async with (
        open_deployment(target, cores=settings.cores, logs=settings.logs) as servers,
        open_load(
            clients, cores=servers.load_cores, logs=settings.logs, nodes=target.nodes
        ) as load,
    ):
        if target.nodes > 1:
            progress(_placed(servers))
        rss = await _connected(servers, load, clients, transport, progress)
        count = settings.warmup(clients)
        warm = await load.burst(0, count, settings.size, timeout=120)
        _check(warm, "warm-up")
        progress(f"warm-up {count} broadcasts: {warm.per_s:,.0f} deliveries/s")
        first, count = count, settings.measured(clients, warm.per_s)
        timeout = 10 + 5 * count * clients / warm.per_s
        measured = []
        for _ in range(settings.repeat):
            cpu, load_cpu, redis_cpu = await _cpu_seconds(servers, load)
            burst = await load.burst(first, count, settings.size, timeout)
            cpu_after, load_cpu_after, redis_cpu_after = await _cpu_seconds(servers, load)
            _check(burst, "burst")
            spent = tuple(end - start for start, end in zip(cpu, cpu_after, strict=True))
            measured.append(
                _Measured(burst, spent, load_cpu_after - load_cpu, redis_cpu_after - redis_cpu)
            )
            first += count
        median = sorted(measured, key=lambda m: m.burst.per_s)[len(measured) // 2]
        paced = None
        if settings.paced_rate > 0:
            paced_count, interval = settings.paced(clients)
            late = 5 * paced_count * clients / min(warm.per_s, settings.paced_rate)
            paced = await load.burst(first, paced_count, settings.size, 10 + late, interval)
            _check(paced, "paced burst")
    burst = median.burst
    us_each = 1e6 / max(1, burst.deliveries)  # seconds over the burst -> µs per delivery
    row = FanoutRow(
        server=target.name,
        clients=clients,
        deliveries_per_s=round(burst.per_s),
        cpu_us_per_delivery=round(sum(median.cpu) * us_each, 2),
        p50_ms=round(burst.percentile(0.5), 2),
        p99_ms=round(burst.percentile(0.99), 2),
        rss_kb_per_conn=round(rss, 1),
        load_cpu_us_per_delivery=round(median.load_cpu * us_each, 2),
        broadcasts=count,
        lost=burst.expected - burst.deliveries,
        transport=transport,
        nodes=target.nodes,
        redis_cpu_percent=(
            round(median.redis_cpu / max(1e-6, burst.last - burst.started) * 1e5, 2)
            if servers.redis is not None
            else None
        ),
        node_cpu_us_per_delivery=(
            [
                round(cpu * us_each * load.clients / max(1, mine), 2)
                for cpu, mine in zip(median.cpu, load.by_url, strict=True)
            ]
            if target.nodes > 1
            else None
        ),
        node_p50_ms=_by_node(load, burst, 0.5) if target.nodes > 1 else None,
        node_p99_ms=_by_node(load, burst, 0.99) if target.nodes > 1 else None,
        paced_rate=settings.paced_rate if paced is not None else None,
        paced_p50_ms=round(paced.percentile(0.5), 2) if paced is not None else None,
        paced_p99_ms=round(paced.percentile(0.99), 2) if paced is not None else None,
    )
    progress(
        f"{count} broadcasts: {row.deliveries_per_s:,.0f} deliveries/s, "
        f"p99 {row.p99_ms:.1f} ms, {row.cpu_us_per_delivery:.1f} µs CPU each"
        + (f", {row.lost} LOST" if row.lost else "")
    )
    if paced is not None:
        progress(
            f"paced at {settings.paced_rate:,.0f} deliveries/s: p50 {row.paced_p50_ms:.1f} ms, "
            f"p99 {row.paced_p99_ms:.1f} ms"
            + (
                f", {paced.expected - paced.deliveries} LOST"
                if paced.deliveries < paced.expected
                else ""
            )
        )
    if row.node_p99_ms is not None and row.node_cpu_us_per_delivery is not None:
        progress(
            "by node: p99 "
            + " / ".join(f"{ms:.1f}" for ms in row.node_p99_ms)
            + " ms, µs CPU per delivery to its clients "
            + " / ".join(f"{us:.1f}" for us in row.node_cpu_us_per_delivery)
        )
    return row


async def _cpu_seconds(servers: Deployment, load: Load) -> tuple[tuple[float, ...], float, float]:
    """The CPU time so far of each server, of the load, and of Redis."""
    cpu = tuple(server.child.cpu_seconds() for server in servers.servers)
    return cpu, load.cpu_seconds(), await servers.redis_cpu_seconds()


def _by_node(load: Load, burst: Burst, q: float) -> list[float]:
    return [round(burst.percentile_among(load.workers_of(node), q), 2) for node in range(load.urls)]


def _placed(servers: Deployment) -> str:
    nodes = ", ".join(
        f"{server.child.name} on core {_list(cores)}"
        for server, cores in zip(servers.servers, servers.cores, strict=True)
    )
    where = _list(servers.load_cores)
    return f"{nodes}; load and Redis on core {where}" + (
        "" if servers.split else " (sharing the nodes' cores: the machine has too few)"
    )


def _list(cores: frozenset[int]) -> str:
    return ",".join(map(str, sorted(cores)))


def _check(burst: Burst, what: str) -> None:
    if not burst.deliveries:
        raise BenchError(f"the {what} delivered nothing")


def app_options(target: Target, logs: Path, users: int) -> list[str]:
    """The command-line options that start ``target`` in its application mode (JWT at connect,
    ``POST /internal/emit``; ``servers/common.py``), knowing ``users`` users."""
    return [
        "--jwt-secret",
        JWT_SECRET,
        "--emit-token",
        EMIT_TOKEN,
        "--users",
        str(users),
        "--database",
        str(logs / f"{target.name}-access.sqlite3"),
    ]


async def refuses_forged_token(load: Load, url: str, transport: str) -> None:
    """Make sure the server in its application mode refuses a client whose token is signed
    with another secret: a server that skipped the check would win the comparison unfairly.

    Raises:
        BenchError: the client was accepted.
    """
    forged = await load.connect(
        url, 1, transport, _connect_timeout(1), Jwt("forged" + JWT_SECRET, 1)
    )
    if forged.connected:
        raise BenchError("the server accepted a token signed with another secret")
    if not (forged.error or "").startswith("connect error"):  # a CONNECT_ERROR (worker.mjs)
        raise BenchError(f"a client with a forged token was not refused: {forged.error}")


async def connect(
    target: Target, clients: int, settings: Settings, progress: Progress, transport: str
) -> ConnectRow:
    """Connections per second (one at a time per slot, ``load.CONNECTING`` slots) and memory.

    With ``settings.auth == "jwt"`` the server runs in its application mode and each client
    presents a token of its own user (``user-<i>``), which the server verifies at connect;
    first, one client with a forged token must be refused.
    """
    cores = settings.cores
    jwt = Jwt(JWT_SECRET, clients) if settings.auth == "jwt" else None
    options = app_options(target, settings.logs, clients) if jwt else []
    async with (
        open_server(target, cores=cores.server, logs=settings.logs, options=options) as server,
        open_load(clients, cores=cores.load, logs=settings.logs) as load,
    ):
        if jwt:
            await refuses_forged_token(load, server.url, transport)
        cpu, load_cpu = server.child.cpu_seconds(), load.cpu_seconds()
        base = server.child.rss_kb()
        done = await load.connect(server.url, clients, transport, _connect_timeout(clients), jwt)
        cpu, load_cpu = server.child.cpu_seconds() - cpu, load.cpu_seconds() - load_cpu
        await trio.sleep(0.2 if clients < 1000 else 1.0)
        rss = (server.child.rss_kb() - base) / max(1, done.connected)
    if not done.connected:
        raise BenchError(f"no client connected: {done.error}")
    row = ConnectRow(
        server=target.name,
        clients=clients,
        auth=settings.auth,
        connections_per_s=round(done.per_s),
        cpu_us_per_connection=round(cpu / done.connected * 1e6, 1),
        rss_kb_per_conn=round(rss, 1),
        load_cpu_us_per_connection=round(load_cpu / done.connected * 1e6, 1),
        failed=done.failed,
    )
    progress(
        f"{row.connections_per_s:,.0f} connections/s, {row.rss_kb_per_conn:.1f} KiB each"
        + (f", {row.failed:,} FAILED: {done.error}" if row.failed else "")
    )
    return row


async def hold(
    target: Target, clients: int, settings: Settings, progress: Progress, transport: str
) -> HoldRow:
    """Connect ``clients`` clients to a server with short heartbeats and keep them connected for
    ``settings.duration`` seconds: are they all still there, and what does it cost the server?"""
    cores = settings.cores
    interval, timeout = settings.ping_interval, settings.ping_timeout
    options = ["--ping-interval", f"{interval:g}", "--ping-timeout", f"{timeout:g}"]
    async with (
        open_server(target, cores=cores.server, logs=settings.logs, options=options) as server,
        open_load(clients, cores=cores.load, logs=settings.logs) as load,
    ):
        base = server.child.rss_kb()
        done = await load.connect(server.url, clients, transport, _connect_timeout(clients))
        if not done.connected:
            raise BenchError(f"no client connected: {done.error}")
        progress(
            f"connected {done.connected:,} clients in {(done.end - done.start) / 1000:.2f} s"
            + (f" ({done.failed:,} FAILED: {done.error})" if done.failed else "")
            + f"; holding them {settings.duration:g} s, pings every {interval:g} s"
            f" (timeout {timeout:g} s)"
        )
        first = status = await load.status()
        cpu, started = server.child.cpu_seconds(), trio.current_time()
        while (left := started + settings.duration - trio.current_time()) > 0:
            await trio.sleep(min(left, PROGRESS_EVERY))
            status = await load.status()
            progress(f"held {trio.current_time() - started:.0f} s: {_held(status, first)}")
        cpu, held = server.child.cpu_seconds() - cpu, trio.current_time() - started
        rss = (server.child.rss_kb() - base) / done.connected
    return HoldRow(
        server=target.name,
        clients=clients,
        connected=done.connected,
        alive=status.alive,
        disconnects=status.disconnects,
        pings=status.pings - first.pings,
        cpu_percent=round(cpu / max(held, 1e-3) * 100, 1),
        rss_kb_per_conn=round(rss, 1),
        all_alive=status.alive == clients and status.disconnects == 0 and not done.failed,
    )


def _held(status: Status, first: Status) -> str:
    return (
        f"{status.alive:,} alive, {status.disconnects:,} disconnects, "
        f"{status.pings - first.pings:,} pings answered"
        + (f" (first lost: {status.error})" if status.error else "")
    )
