"""``emit-api``: events pushed through a server's HTTP emit endpoint to a room of N clients.

The server runs in its application mode (``servers/common.py``): hub its real application, the
others a small ``POST /internal/emit`` handler beside their Socket.IO server. The N clients
connect with tokens of one user, ``user-0``, so that all of them are in the room ``user:user-0``
(hub's ``Hub`` puts every socket in its user's room; the others do the same). A poster process
(``load/poster.mjs``) then posts ``tick`` emits to that room over ``Settings.concurrency``
keep-alive connections, each sending its next request when its last one is answered, for each
batch size of ``Settings.batches`` (1: one emit as a JSON object per request; more: a JSON array
of that many), and the clients count what arrives. Per batch size: a warm-up burst, then a
measured one sized from the warm-up's rate to last about ``Settings.duration`` seconds.
"""

from __future__ import annotations

import attrs
import trio

from bench.load import Burst, Jwt, Load, Posted, Poster, open_load, open_poster
from bench.measure import Progress, Settings, app_options, refuses_forged_token
from bench.procs import BenchError
from bench.servers.common import EMIT_TOKEN, JWT_SECRET, user_id
from bench.targets import Target, open_server

__all__ = ["ROOM", "EmitRow", "emit_api"]

ROOM = f"user:{user_id(0)}"
"""The room every client is in: they all connect as the same user."""
WARMUP_TIMEOUT = 120.0
CHECK_TIMEOUT = 20.0


@attrs.frozen
class EmitRow:
    """One batch size on one server with N clients.

    Attributes:
        batch: emits per request (1: the single-object form).
        concurrency: requests in flight at once (keep-alive connections).
        emits: emits in the measured burst.
        emits_per_s: emits the server accepted (answered 200), over the time from the first
            request to the last answer.
        deliveries_per_s: ticks the clients received, over the time from the first request to
            the last delivery.
        p50_ms, p99_ms: per emit, from when its request was made until the last client had it.
        cpu_us_per_emit, cpu_us_per_delivery: the server process's CPU across the burst.
        load_cpu_us_per_delivery: the clients' and the poster's CPU across the burst.
        rss_kb_per_conn: the server's memory per connected client, before any emit.
        lost: deliveries expected (accepted emits x N) that did not arrive.
        failed_posts: requests not answered 200.
    """

    server: str
    clients: int
    batch: int
    concurrency: int
    emits: int
    emits_per_s: float
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_emit: float
    cpu_us_per_delivery: float
    load_cpu_us_per_delivery: float
    rss_kb_per_conn: float
    lost: int
    failed_posts: int

    @property
    def series(self) -> str:
        return f"{self.server}, {self.batch} a request"


async def emit_api(
    target: Target, clients: int, settings: Settings, progress: Progress, transport: str
) -> list[EmitRow]:
    """One row per batch size of ``settings.batches``, the same server and clients for all."""
    cores = settings.cores
    options = app_options(target, settings.logs, users=1)
    rows: list[EmitRow] = []
    async with (
        open_server(target, cores=cores.server, logs=settings.logs, options=options) as server,
        open_load(clients, cores=cores.load, logs=settings.logs) as load,
        open_poster(cores=cores.load, logs=settings.logs) as poster,
    ):
        await refuses_forged_token(load, server.url, transport)
        await _refuses_wrong_emit_token(poster, server.url)
        base = server.child.rss_kb()
        done = await load.connect(
            server.url, clients, transport, 30 + clients / 50, Jwt(JWT_SECRET, users=1)
        )
        if done.failed:
            raise BenchError(f"{done.failed} of {clients} clients did not connect: {done.error}")
        progress(f"connected {clients} clients in {(done.end - done.start) / 1000:.2f} s")
        await trio.sleep(0.2 if clients < 1000 else 1.0)  # let the server settle
        rss = (server.child.rss_kb() - base) / clients
        first = 0
        for batch in settings.batches:
            sender = _Sender(poster, server.url, batch, settings)
            least = batch * settings.concurrency  # every connection posts at least once
            count = max(settings.warmup(clients), least)
            _, warm = await sender.burst(load, first, count, WARMUP_TIMEOUT)
            first += count
            progress(f"batch {batch}: warm-up {count} emits, {warm.per_s:,.0f} deliveries/s")
            count = max(settings.measured(clients, warm.per_s), least)
            cpu, load_cpu = server.child.cpu_seconds(), load.cpu_seconds() + poster.cpu_seconds()
            posted, burst = await sender.burst(
                load, first, count, 10 + 5 * count * clients / warm.per_s
            )
            cpu = server.child.cpu_seconds() - cpu
            load_cpu = load.cpu_seconds() + poster.cpu_seconds() - load_cpu
            first += count
            row = EmitRow(
                server=target.name,
                clients=clients,
                batch=batch,
                concurrency=settings.concurrency,
                emits=count,
                emits_per_s=round(posted.per_s),
                deliveries_per_s=round(burst.per_s),
                p50_ms=round(burst.percentile(0.5), 2),
                p99_ms=round(burst.percentile(0.99), 2),
                cpu_us_per_emit=round(cpu / posted.accepted * 1e6, 1),
                cpu_us_per_delivery=round(cpu / burst.deliveries * 1e6, 2),
                load_cpu_us_per_delivery=round(load_cpu / burst.deliveries * 1e6, 2),
                rss_kb_per_conn=round(rss, 1),
                lost=posted.accepted * clients - burst.deliveries,
                failed_posts=posted.failed,
            )
            progress(
                f"batch {batch}: {count} emits, {row.emits_per_s:,.0f} emits/s, "
                f"{row.deliveries_per_s:,.0f} deliveries/s, p99 {row.p99_ms:.1f} ms"
                + (f", {row.lost} LOST" if row.lost else "")
                + (f", {row.failed_posts} requests FAILED: {posted.error}" if posted.failed else "")
            )
            rows.append(row)
    return rows


async def _refuses_wrong_emit_token(poster: Poster, url: str) -> None:
    """Make sure the emit endpoint checks its bearer token, as hub's does."""
    wrong = await poster.post(
        url,
        "wrong" + EMIT_TOKEN,
        ROOM,
        0,
        1,
        batch=1,
        concurrency=1,
        size=60,
        timeout=CHECK_TIMEOUT,
    )
    if wrong.accepted or not (wrong.error or "").startswith("401"):
        raise BenchError(f"the emit endpoint did not refuse a wrong token with 401: {wrong.error}")


@attrs.frozen
class _Sender:
    """Bursts of emits of one batch size to one server."""

    poster: Poster
    url: str
    batch: int
    settings: Settings

    async def burst(
        self, load: Load, first: int, count: int, timeout: float
    ) -> tuple[Posted, Burst]:
        """Post ``count`` emits (seq from ``first``) and wait for the clients to have them."""
        await load.expect(first, count)
        posted = await self.poster.post(
            self.url,
            EMIT_TOKEN,
            ROOM,
            first,
            count,
            batch=self.batch,
            concurrency=self.settings.concurrency,
            size=self.settings.size,
            timeout=timeout,
        )
        if not posted.accepted:
            raise BenchError(f"the server accepted none of {posted.posts} requests: {posted.error}")
        burst = await load.arrived(posted.started, count, timeout)
        if not burst.deliveries:
            raise BenchError("the emits reached no client")
        return posted, burst
