"""The soak run: ``python -m soak`` from ``tests/`` (``make soak``).

Two ``hub serve`` nodes sharing a real redis-server, thousands of stock socket.io-client tabs
(one Node process) with churn, emits through both nodes' ``/internal/emit``, Redis killed and
started again in the middle. Writes ``soak.json`` and ``soak.png`` (``soak-quick.*`` with
``--quick``) to ``--out``, prints what went wrong; the exit status is 0 when nothing did, 1 when
an event was lost, duplicated, out of order or sent to the wrong tab (or an error was logged),
3 when the run could not be made.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import attrs
import trio

from soak.analysis import analyse
from soak.plot import plot
from soak.processes import CHECKOUT, SoakError
from soak.run import Settings, load, run, temporary_folder

QUICK = Settings(clients=200, duration=45.0, outage=8.0, ramp=100.0)
"""``--quick``: about a minute in all."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.split("\n\n")[1])
    default = Settings()
    parser.add_argument("--quick", action="store_true", help="200 tabs, 45 s of load")
    parser.add_argument("--clients", type=int, help=f"tabs open at once ({default.clients})")
    parser.add_argument("--minutes", type=float, help=f"of load ({default.duration / 60:g})")
    parser.add_argument("--rate", type=float, help=f"emits per second ({default.rate:g})")
    parser.add_argument("--churn", type=float, help=f"share of tabs a minute ({default.churn})")
    parser.add_argument("--outage", type=float, help=f"seconds without Redis ({default.outage:g})")
    parser.add_argument("--seed", type=int, help=f"of every random choice ({default.seed})")
    parser.add_argument(
        "--node-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the nodes, e.g. HUB_RECOVERY_SECONDS=0 (repeatable)",
    )
    parser.add_argument(
        "--out", type=Path, default=CHECKOUT / "bench" / "results", help="the report's folder"
    )
    parser.add_argument("--logs", type=Path, help="keep every process's output there")
    parser.add_argument(
        "--recount", type=Path, metavar="LOGS", help="count a run kept with --logs again"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else Settings()
    changes = {
        "clients": args.clients,
        "duration": None if args.minutes is None else args.minutes * 60,
        "rate": args.rate,
        "churn": args.churn,
        "outage": args.outage,
        "seed": args.seed,
        "node_env": tuple(tuple(item.split("=", 1)) for item in args.node_env) or None,
    }
    return attrs.evolve(base, **{k: v for k, v in changes.items() if v is not None})


def _summary(report: dict[str, object]) -> str:
    d: dict[str, int] = report["deliveries"]  # type: ignore[assignment]
    e: dict[str, object] = report["emits"]  # type: ignore[assignment]
    t: dict[str, object] = report["tabs"]  # type: ignore[assignment]
    m: dict[str, dict[str, float]] = report["memory"]  # type: ignore[assignment]
    memory = ", ".join(
        f"{node} {m[node]['start_mb']} → {m[node]['peak_mb']} → {m[node]['end_mb']} MB"
        for node in ("n1", "n2")
        if node in m
    )
    return "\n".join(
        [
            f"emits: {e['posted']} posted, {e['http_errors']} HTTP errors, "
            f"{e['incomplete']} incomplete; latency {e['latency_ms']}",
            f"tabs: {t['opened']} opened, {t['drops']} drops, {t['drops_recovered']} recovered, "
            f"{t['drops_not_recovered']} not, {t['drops_without_offset']} not recoverable (no "
            f"offset yet); connect errors {t['connect_errors']}",
            f"deliveries: {d['expected']} expected, {d['delivered']} delivered, {d['lost']} lost "
            f"(+{d['lost_during_outage']} during the outage), {d['undeliverable_cross_node']} "
            f"undeliverable cross-node during the outage, {d['duplicated']} duplicated, "
            f"{d['out_of_order']} out of order, {d['foreign']} foreign",
            f"memory (after the ramp → peak → end): {memory}",
        ]
    )


def _json(report: dict[str, object]) -> str:
    """Indented, but each time series on one line."""
    series = report["series"]
    text = json.dumps({**report, "series": "@series"}, indent=1)
    return text.replace('"@series"', json.dumps(series, separators=(",", ":"))) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    name = "soak-quick" if args.quick else "soak"
    args.out.mkdir(parents=True, exist_ok=True)
    with temporary_folder() as scratch:
        if args.recount is not None:
            report = analyse(load(args.recount))
        else:
            folder = args.logs or Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            try:
                began = time.monotonic()
                outcome = trio.run(
                    run,
                    settings,
                    folder,
                    lambda text: print(f"{time.monotonic() - began:6.1f} s  {text}", flush=True),
                )
            except SoakError as exc:
                print(f"soak: {exc}", file=sys.stderr)
                return 3
            report = analyse(outcome)
    json_path, png_path = args.out / f"{name}.json", args.out / f"{name}.png"
    json_path.write_text(_json(report))
    plot(report, png_path)
    print(_summary(report))
    print(f"report: {json_path}\nplot: {png_path}")
    for problem in report["verdict"]:
        print(f"FAILED: {problem}")
    return 1 if report["verdict"] else 0


if __name__ == "__main__":
    sys.exit(main())
