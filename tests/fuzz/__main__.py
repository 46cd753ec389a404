"""The long fuzzing run: ``python -m fuzz`` from ``tests/`` (``make fuzz``).

Feeds every decoder its share of the inputs (over a million at ``--scale 1``), each input built
from ``random.Random(f"{seed}:{campaign}:{index}")``, and prints per decoder the inputs fed, the
time, the slowest input and the process's memory. A failure prints the command that feeds that
one input again; the exit status is 1 if anything failed.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import attrs

from fuzz import campaigns, live

BUDGET = {
    "engineio-packet": 400_000,
    "engineio-payload": 250_000,
    "engineio-session": 100_000,
    "socketio-packet": 200_000,
    "http": 40_000,
    "http-session-body": 10_000,
    "websocket": 20_000,
    "socketio-wire": 10_000,
    "emit-endpoint": 30_000,
}
"""Inputs per campaign at ``--scale 1``."""

SLOW = 1.0
"""Seconds: a sans-I/O decoder slower than this on one input hangs, as far as a server cares."""


@attrs.define
class Result:
    name: str
    inputs: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    rss_mb: float = 0.0
    failures: list[str] = attrs.field(factory=list)


def _rss_mb() -> float:
    """The process's resident memory now (Linux), in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _reproduce(name: str, seed: str, index: int) -> str:
    return f"cd tests && ../.venv/bin/python -m fuzz --only {name} --seed {seed} --index {index}"


def _run(
    name: str,
    feed: Callable[[random.Random], object],
    indexes: range,
    seed: str,
    *,
    check: Callable[[], None] | None = None,
    every: int = 0,
    health: Callable[[], None] | None = None,
) -> Result:
    """Feed inputs ``indexes`` of campaign ``name``; ``check`` (cheap: the server's log) runs
    after each input, ``health`` (a well-behaved client's exchange) every ``every`` inputs and
    at the end."""
    result = Result(name)
    start = time.perf_counter()
    for index in indexes:
        rng = random.Random(f"{seed}:{name}:{index}")
        began = time.perf_counter()
        try:
            feed(rng)
            if check is not None:
                check()
            if health is not None and every and (index + 1) % every == 0:
                health()
        except Exception:
            result.failures.append(
                f"{name} input {index}: {traceback.format_exc(limit=6)}"
                f"again: {_reproduce(name, seed, index)}"
            )
            if len(result.failures) >= 5:
                break
        took = time.perf_counter() - began
        result.slowest = max(result.slowest, took)
        result.inputs += 1
    try:
        if health is not None:
            health()
    except Exception:
        result.failures.append(f"{name} at the end: {traceback.format_exc(limit=6)}")
    result.seconds = time.perf_counter() - start
    result.rss_mb = _rss_mb()
    if result.slowest > SLOW and name in campaigns.PURE:
        result.failures.append(f"{name}: an input took {result.slowest:.2f} s")
    return result


def _check_bystander(thread: live.ServerThread[tuple[str, int]]) -> None:
    stats = thread.notes
    assert stats["failure"] is None, f"the bystander client failed: {stats['failure']}"
    assert stats["echoes"] > 0, "the bystander client got no echo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("--seed", default="hub", help="seed of every input (default: hub)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every budget")
    parser.add_argument("--only", nargs="*", choices=sorted(BUDGET), help="these campaigns")
    parser.add_argument("--index", type=int, help="feed only this input (to reproduce one)")
    parser.add_argument("--first", type=int, default=0, help="index of the first input")
    args = parser.parse_args(argv)

    names = args.only or list(BUDGET)
    seed: str = args.seed

    def indexes(name: str) -> range:
        if args.index is not None:
            return range(args.index, args.index + 1)
        return range(args.first, args.first + max(1, int(BUDGET[name] * args.scale)))

    results: list[Result] = []
    known: dict[str, int] = {}
    print(f"seed {seed!r}, scale {args.scale}", flush=True)
    print(f"{'decoder':<20}{'inputs':>10}{'seconds':>10}{'inputs/s':>10}{'slowest':>10}{'RSS':>9}")

    def report(result: Result) -> None:
        results.append(result)
        rate = result.inputs / result.seconds if result.seconds else 0.0
        print(
            f"{result.name:<20}{result.inputs:>10,}{result.seconds:>10.1f}{rate:>10,.0f}"
            f"{result.slowest * 1000:>8.1f}ms{result.rss_mb:>7.0f}MB"
            + (f"  {len(result.failures)} FAILED" if result.failures else ""),
            flush=True,
        )

    for name, feed in campaigns.PURE.items():
        if name in names:
            report(_run(name, feed, indexes(name), seed))

    live_names = {"http", "http-session-body", "websocket", "socketio-wire"} & set(names)
    if live_names:
        with live.conformance_thread() as thread:
            http = live.HttpTarget(thread.value)
            ws = live.WsTarget(thread.value)
            sio = live.WsTarget(thread.value, "/socket.io/")

            def health() -> None:
                http.healthy()
                _check_bystander(thread)

            live_runs: list[tuple[str, Callable[[random.Random], object]]] = [
                ("http", lambda rng: campaigns.http(rng, http)),
                ("http-session-body", lambda rng: campaigns.http_session_body(rng, http)),
                ("websocket", lambda rng: campaigns.websocket(rng, ws)),
                ("socketio-wire", lambda rng: campaigns.socketio_wire(rng, sio)),
            ]
            for name, feed_live in live_runs:
                if name in live_names:
                    report(
                        _run(
                            name,
                            feed_live,
                            indexes(name),
                            seed,
                            check=thread.check,
                            every=500,
                            health=health,
                        )
                    )
            known.update({k: v for k, v in thread.log.known.items() if v})

    if "emit-endpoint" in names:
        with tempfile.TemporaryDirectory() as tmp, live.hub_thread(Path(tmp)) as hub:
            emit = live.EmitTarget(hub)

            try:
                report(
                    _run(
                        "emit-endpoint",
                        lambda rng: campaigns.emit_endpoint(rng, emit),
                        indexes("emit-endpoint"),
                        seed,
                        check=hub.check,
                        every=100,
                        health=emit.sync,
                    )
                )
            finally:
                emit.close()
            for bug, count in hub.log.known.items():
                known[bug] = known.get(bug, 0) + count

    total = sum(r.inputs for r in results)
    seconds = sum(r.seconds for r in results)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"{'total':<20}{total:>10,}{seconds:>10.1f}   peak RSS {usage.ru_maxrss / 1024:.0f} MB")
    for bug, count in known.items():
        if count:
            print(f"known bug {bug!r} (see its xfail test): hit {count:,} times")
    failures = [f for r in results for f in r.failures]
    for failure in failures:
        print("\nFAILED " + failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
