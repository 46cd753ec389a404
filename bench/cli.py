"""``python -m bench COMMAND``: run the measurements, print the table, write JSON and a plot.

Exit status: 0 when every measurement was made, 1 when some failed (the others are still
reported) or, for ``hold``, when a client was lost, 2 for a bad command line, 3 when something
the run needs is not installed, 130 when interrupted (Ctrl-C or SIGTERM; every process the
suite started is stopped first).
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from bench import emit_api, measure, report
from bench.measure import Progress, Settings
from bench.procs import BenchError, plan_cores, raise_file_limit
from bench.report import Column
from bench.targets import LOAD_NEEDS, SERVERS, SINGLE, Target, missing

__all__ = ["main"]

EXIT_FAILED, EXIT_MISSING, EXIT_INTERRUPTED = 1, 3, 130
QUICK_CLIENTS = (50,)
HOLD_PING, QUICK_HOLD_PING = 2.0, 1.0  # seconds, interval and timeout alike
AUTHS = ("jwt", "none")
PACED_RATE = 20_000.0
"""deliveries/s of fanout's paced burst: about half of what Node socket.io does at 5,000."""

Measure = Callable[[Target, int, Settings, Progress, str], Awaitable[Any]]

_FANOUT_COLUMNS = (
    Column("server", "server", "{}"),
    Column("clients", "N", "{:,}"),
    Column("deliveries_per_s", "deliveries/s", "{:,.0f}"),
    Column("cpu_us_per_delivery", "CPU µs/delivery", "{:.2f}"),
    Column("p50_ms", "p50 ms"),
    Column("p99_ms", "p99 ms"),
    Column("rss_kb_per_conn", "RSS KiB/conn"),
    Column("load_cpu_us_per_delivery", "load CPU µs/delivery", "{:.2f}"),
    Column("redis_cpu_percent", "Redis CPU %", "{:.1f}"),
    Column("broadcasts", "broadcasts", "{:,}"),
    Column("lost", "lost", "{:,}"),
    Column("paced_p50_ms", "paced p50 ms"),
    Column("paced_p99_ms", "paced p99 ms"),
)
_FANOUT_PANELS = (
    _FANOUT_COLUMNS[2],
    attrs.evolve(_FANOUT_COLUMNS[5], log=True),
    attrs.evolve(_FANOUT_COLUMNS[12], log=True),
)

_CONNECT_COLUMNS = (
    Column("server", "server", "{}"),
    Column("clients", "N", "{:,}"),
    Column("auth", "auth", "{}"),
    Column("connections_per_s", "connections/s", "{:,.0f}"),
    Column("cpu_us_per_connection", "CPU µs/connection"),
    Column("rss_kb_per_conn", "RSS KiB/conn"),
    Column("load_cpu_us_per_connection", "load CPU µs/connection"),
    Column("failed", "failed", "{:,}"),
)

_EMIT_COLUMNS = (
    Column("server", "server", "{}"),
    Column("clients", "N", "{:,}"),
    Column("batch", "emits/request", "{:,}"),
    Column("emits_per_s", "emits/s", "{:,.0f}"),
    Column("deliveries_per_s", "deliveries/s", "{:,.0f}"),
    Column("cpu_us_per_emit", "CPU µs/emit", "{:,.1f}"),
    Column("cpu_us_per_delivery", "CPU µs/delivery", "{:.2f}"),
    Column("p50_ms", "p50 ms"),
    Column("p99_ms", "p99 ms"),
    Column("load_cpu_us_per_delivery", "load CPU µs/delivery", "{:.2f}"),
    Column("lost", "lost", "{:,}"),
    Column("failed_posts", "failed requests", "{:,}"),
)

_HOLD_COLUMNS = (
    Column("server", "server", "{}"),
    Column("clients", "N", "{:,}"),
    Column("connected", "connected", "{:,}"),
    Column("alive", "alive at end", "{:,}"),
    Column("disconnects", "disconnects", "{:,}"),
    Column("pings", "pings answered", "{:,}"),
    Column("cpu_percent", "server CPU %"),
    Column("rss_kb_per_conn", "RSS KiB/conn"),
    Column("all_alive", "all alive", "{}"),
)


@attrs.frozen
class Command:
    name: str
    help: str
    measure: Measure
    transport: str
    clients: tuple[int, ...]  # the default
    columns: tuple[Column, ...]
    panels: tuple[Column, ...]  # what the plot shows
    servers: tuple[str, ...] = SINGLE  # the default
    clusters: bool = False  # measures the servers of several nodes too (-2nodes)
    duration: tuple[float, float] = (3.0, 3.0)  # the default --duration, and with --quick
    quick: str = "50 clients, a few broadcasts"
    bursts: bool = True  # takes --size and --repeat
    pings: bool = False  # takes --ping-interval and --ping-timeout
    auth: bool = False  # takes --auth
    posts: bool = False  # takes --batch and --concurrency (and --size)
    paced: float = 0.0  # the default --paced-rate (deliveries/s), for latency at a fixed load

    @property
    def title(self) -> str:
        return f"{self.name} ({self.transport})"


COMMANDS = {
    command.name: command
    for command in (
        Command(
            "fanout",
            "broadcasts to N WebSocket clients in one room",
            measure.fanout,
            "websocket",
            (1000, 5000),
            _FANOUT_COLUMNS,
            _FANOUT_PANELS,
            clusters=True,
            paced=PACED_RATE,
        ),
        Command(
            "polling",
            "broadcasts to N long-polling clients in one room",
            measure.fanout,
            "polling",
            (100, 1000),
            _FANOUT_COLUMNS,
            _FANOUT_PANELS,
            clusters=True,
        ),
        Command(
            "connect",
            "connections per second with the JWT check at connect, and memory per idle connection",
            measure.connect,
            "websocket",
            (1000, 5000),
            _CONNECT_COLUMNS,
            (_CONNECT_COLUMNS[3], _CONNECT_COLUMNS[5]),
            quick="50 clients",
            bursts=False,
            auth=True,
        ),
        Command(
            "emit-api",
            "emits per second through the HTTP emit endpoint to a room of N WebSocket clients",
            emit_api.emit_api,
            "websocket",
            (1000,),
            _EMIT_COLUMNS,
            (_EMIT_COLUMNS[4], attrs.evolve(_EMIT_COLUMNS[8], log=True)),
            quick="50 clients, about 20 emits a batch size",
            bursts=False,
            posts=True,
        ),
        Command(
            "hold",
            "N WebSocket clients kept connected by short heartbeats for --duration seconds",
            measure.hold,
            "websocket",
            (10000,),
            _HOLD_COLUMNS,
            (_HOLD_COLUMNS[6], _HOLD_COLUMNS[7]),
            servers=("hub", "node-socketio"),
            duration=(60.0, 6.0),
            quick=f"50 clients for 6 s, pings every {QUICK_HOLD_PING:g} s",
            bursts=False,
            pings=True,
        ),
    )
}


def _servers(command: Command) -> tuple[str, ...]:
    """The servers ``command`` can measure."""
    return tuple(SERVERS) if command.clusters else SINGLE


def _names(allowed: tuple[str, ...], text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"servers are {', '.join(allowed)}; not {unknown}")
    return names


def _auths(text: str) -> list[str]:
    auths = [name.strip() for name in text.split(",") if name.strip()]
    if not auths or not set(auths) <= set(AUTHS):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(AUTHS)}")
    return auths


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"a comma-separated list of client counts, not {text!r}")
    return counts


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks of hub against other Socket.IO servers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        allowed = _servers(command)
        sub.add_argument(
            "--servers",
            type=functools.partial(_names, allowed),
            default=list(command.servers),
            help=f"comma-separated, of {','.join(allowed)} (default: {','.join(command.servers)})",
        )
        sub.add_argument(
            "--clients",
            type=_counts,
            help=f"comma-separated client counts (default: {','.join(map(str, command.clients))})",
        )
        sub.add_argument("--json", type=Path, metavar="PATH", help="write the rows as JSON")
        sub.add_argument("--plot", type=Path, metavar="PATH", help="write a PNG plot against N")
        sub.add_argument("--quick", action="store_true", help=f"a smoke run: {command.quick}")
        default, quick = command.duration
        if command.bursts or command.posts:
            sub.add_argument(
                "--duration",
                type=float,
                help=f"seconds a measured burst aims at (default: {default:g})",
            )
        if command.pings:
            sub.add_argument(
                "--duration",
                type=float,
                help=f"seconds to hold the clients (default: {default:g}, {quick:g} with --quick)",
            )
        if command.bursts or command.posts:
            sub.add_argument("--size", type=int, default=60, help="bytes of a tick's JSON payload")
        if command.bursts:
            sub.add_argument(
                "--repeat", type=int, default=1, help="measured bursts; report the median (fan-out)"
            )
        if command.paced:
            sub.add_argument(
                "--paced-rate",
                type=float,
                default=command.paced,
                help="deliveries/s of a last, paced burst, for latency at a load every server "
                f"is asked alike; 0: none (default: {command.paced:,.0f})",
            )
        if command.auth:
            sub.add_argument(
                "--auth",
                type=_auths,
                default=list(AUTHS),
                help="jwt: each client's token is verified at connect; none: the bare server; "
                "both by default",
            )
        if command.posts:
            sub.add_argument(
                "--batch",
                type=_counts,
                default=[1, 10],
                help="emits per request, comma-separated, a row each (1: a JSON object; "
                "more: a JSON array; default: 1,10)",
            )
            sub.add_argument(
                "--concurrency",
                type=int,
                default=4,
                help="HTTP connections posting at once (default: 4)",
            )
        if command.pings:
            for name in ("interval", "timeout"):
                sub.add_argument(
                    f"--ping-{name}",
                    type=float,
                    help=f"the servers' ping {name}, seconds (default: {HOLD_PING:g}, "
                    f"{QUICK_HOLD_PING:g} with --quick)",
                )
        sub.add_argument("--logs", type=Path, help="keep the processes' output in this folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = COMMANDS[args.command]
    targets = [SERVERS[name] for name in args.servers]
    clients: list[int] = args.clients or list(QUICK_CLIENTS if args.quick else command.clients)
    auths: list[str] = getattr(args, "auth", ["none"])
    app = command.posts or "jwt" in auths  # the servers' application mode is needed
    gaps = missing([*targets, LOAD_NEEDS], ["matplotlib"] if args.plot else [], app=app)
    if gaps:
        print("not installed:\n  " + "\n  ".join(gaps), file=sys.stderr)
        return EXIT_MISSING

    if raise_file_limit() < max(clients) + 1000:
        print(f"warning: the open-file limit is below {max(clients) + 1000}", file=sys.stderr)
    cores = plan_cores()
    os.sched_setaffinity(0, cores.load)  # the suite runs beside the load, off the server's core
    # SIGTERM as Ctrl-C, which trio turns into KeyboardInterrupt at a safe point (even when
    # the suite was started with SIGINT ignored, as a background job is).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    _say(
        f"{command.title}: {', '.join(args.servers)} at N = {', '.join(map(str, clients))}; "
        + (
            f"server on core {_list(cores.server)}, load on core {_list(cores.load)}"
            if cores.split
            else "server and load share the only core"
        )
    )
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        logs = args.logs or Path(scratch)
        logs.mkdir(parents=True, exist_ok=True)
        ping = QUICK_HOLD_PING if args.quick else HOLD_PING
        settings = Settings(
            cores=cores,
            logs=logs,
            duration=_given(getattr(args, "duration", None), command.duration[args.quick]),
            size=getattr(args, "size", 60),
            quick=args.quick,
            repeat=max(1, getattr(args, "repeat", 1)),
            paced_rate=max(0.0, getattr(args, "paced_rate", 0.0)),
            ping_interval=_given(getattr(args, "ping_interval", None), ping),
            ping_timeout=_given(getattr(args, "ping_timeout", None), ping),
            batches=tuple(getattr(args, "batch", (1, 10))),
            concurrency=max(1, getattr(args, "concurrency", 4)),
        )
        variants = [attrs.evolve(settings, auth=auth) for auth in auths]
        rows: list[Any] = []
        try:
            failures = trio.run(_run_all, command, targets, clients, variants, rows)
        except BaseException as exc:
            if not _interrupted(exc):
                raise
            _say("interrupted; every process stopped")
            return EXIT_INTERRUPTED

    print(report.table(rows, command.columns), flush=True)
    lost = [row for row in rows if isinstance(row, measure.HoldRow) and not row.all_alive]
    for row in lost:
        _say(f"{row.server} N={row.clients}: {row.clients - row.alive:,} clients LOST")
    if args.json and rows:
        report.write_json(args.json, rows)
        _say(f"rows: {args.json}")
    if args.plot and rows:
        report.plot(args.plot, rows, command.panels, command.title)
        _say(f"plot: {args.plot}")
    return EXIT_FAILED if failures or lost else 0


async def _run_all(
    command: Command,
    targets: list[Target],
    clients: list[int],
    variants: list[Settings],
    rows: list[Any],
) -> int:
    """Measure every server at every N, in each variant of the settings (``connect``: with and
    without the JWT check), appending to ``rows``; returns how many measurements failed."""
    failures = 0
    for count in clients:
        for target in targets:
            for settings in variants:
                name = f"{target.name} N={count}"
                progress = _progress(f"{name} auth={settings.auth}" if command.auth else name)
                progress("starting")
                try:
                    row = await command.measure(
                        target, count, settings, progress, command.transport
                    )
                except (BenchError, trio.TooSlowError) as exc:
                    failures += 1
                    progress(f"FAILED: {exc or 'timed out'}")
                else:
                    rows.extend(row if isinstance(row, list) else [row])
    return failures


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


def _progress(prefix: str) -> Progress:
    started = time.monotonic()
    return lambda text: _say(f"[{time.monotonic() - started:5.1f} s] {prefix}: {text}")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _list(cores: frozenset[int]) -> str:
    return ",".join(map(str, sorted(cores)))


def _interrupted(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_interrupted(inner) for inner in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)
