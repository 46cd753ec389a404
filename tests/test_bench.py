"""The benchmark suite runs end to end: a quick fan-out of all four servers, JSON and plot, a
quick fan-out of two hub nodes and two Node nodes sharing the room through a real redis-server
beside one hub, a quick hold of hub and Node with 1-second heartbeats, and quick ``connect``
(with and without the JWT check) and ``emit-api`` runs of all four. Those two fail unless every
server refuses a client with a forged token (and, for ``emit-api``, a wrong bearer token at its
emit endpoint) before it is measured, so the quick runs also show that each server really does
the checks.

It needs node with the npm packages socket.io, jsonwebtoken, @socket.io/redis-adapter and redis,
redis-server, uvicorn and matplotlib; without them the suite exits with status 3 and these tests
are skipped (failed under ``HUB_REQUIRE_ALL=1``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Literal, overload

import pytest

CHECKOUT = Path(__file__).resolve().parents[1]
SERVERS = ["hub", "node-socketio", "python-socketio", "hub-asgi"]
NUMBER = (int, float)
FIELDS: dict[str, type | tuple[type, ...]] = {
    "server": str,
    "clients": int,
    "deliveries_per_s": NUMBER,
    "cpu_us_per_delivery": NUMBER,
    "p50_ms": NUMBER,
    "p99_ms": NUMBER,
    "rss_kb_per_conn": NUMBER,
    "paced_rate": NUMBER,  # the last burst's, paced alike for every server (deliveries/s)
    "paced_p50_ms": NUMBER,
    "paced_p99_ms": NUMBER,
}
HOLD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "server": str,
    "clients": int,
    "connected": int,
    "alive": int,
    "disconnects": int,
    "pings": int,
    "cpu_percent": NUMBER,
    "rss_kb_per_conn": NUMBER,
    "all_alive": bool,
}
CONNECT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "server": str,
    "clients": int,
    "auth": str,
    "connections_per_s": NUMBER,
    "cpu_us_per_connection": NUMBER,
    "rss_kb_per_conn": NUMBER,
    "load_cpu_us_per_connection": NUMBER,
    "failed": int,
}
EMIT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "server": str,
    "clients": int,
    "batch": int,
    "concurrency": int,
    "emits": int,
    "emits_per_s": NUMBER,
    "deliveries_per_s": NUMBER,
    "p50_ms": NUMBER,
    "p99_ms": NUMBER,
    "cpu_us_per_emit": NUMBER,
    "cpu_us_per_delivery": NUMBER,
    "load_cpu_us_per_delivery": NUMBER,
    "rss_kb_per_conn": NUMBER,
    "lost": int,
    "failed_posts": int,
}
BOUND = 60.0
EXIT_MISSING = 3


def test_fanout_quick(tmp_path: Path) -> None:
    rows_path, plot_path = tmp_path / "rows.json", tmp_path / "plot.png"
    command = ["fanout", "--quick", "--servers", ",".join(SERVERS)]
    out = _suite([*command, "--json", str(rows_path), "--plot", str(plot_path)])

    rows = json.loads(rows_path.read_text())
    assert sorted(row["server"] for row in rows) == sorted(SERVERS)
    for row in rows:
        for field, kind in FIELDS.items():
            assert isinstance(row.get(field), kind), (field, row)
        assert row["clients"] == 50
        assert row["deliveries_per_s"] > 0, row
        assert row["lost"] == 0, row
        assert row["paced_rate"] == 20_000, row
        assert 0 < row["paced_p50_ms"] <= row["paced_p99_ms"], row
    assert plot_path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    for server in SERVERS:
        assert server in out  # the table


def test_fanout_two_nodes_quick(tmp_path: Path) -> None:
    """Two hub nodes and two Node socket.io nodes, each pair on its own redis-server, beside one
    hub: the clients are split between the nodes and the bursts asked of the first, so the
    second node's 25 clients get every tick only through Redis, and none may be missing."""
    rows_path = tmp_path / "rows.json"
    servers = ["hub", "hub-2nodes", "node-socketio-2nodes"]
    command = ["fanout", "--quick", "--servers", ",".join(servers), "--json", str(rows_path)]
    out, err = _suite(command, errors=True)

    rows = {row["server"]: row for row in json.loads(rows_path.read_text())}
    assert sorted(rows) == sorted(servers)
    for row in rows.values():
        for field, kind in FIELDS.items():
            assert isinstance(row.get(field), kind), (field, row)
        assert row["clients"] == 50, row
        assert row["broadcasts"] == 20, row  # --quick
        assert row["lost"] == 0, row  # 20 ticks x 50 clients, on either node
        assert row["deliveries_per_s"] > 0, row
        assert row["cpu_us_per_delivery"] >= 0, row  # /proc counts 10 ms ticks: maybe none
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
    assert rows["hub"]["nodes"] == 1
    assert rows["hub"]["redis_cpu_percent"] is None  # no Redis there
    assert rows["hub"]["node_cpu_us_per_delivery"] is None
    for name in ("hub-2nodes", "node-socketio-2nodes"):
        assert rows[name]["nodes"] == 2, rows[name]
        assert 0 < rows[name]["redis_cpu_percent"] < 100, rows[name]  # of one core
        by_node = rows[name]["node_cpu_us_per_delivery"]
        assert len(by_node) == 2, rows[name]
        assert all(isinstance(cpu, NUMBER) and cpu >= 0 for cpu in by_node), rows[name]
        assert f"{name}-a on core" in err  # the placement
        assert f"{name}-b on core" in err
    assert "Redis CPU %" in out  # the table


def test_single_node_commands_refuse_a_cluster() -> None:
    """``connect``, ``hold`` and ``emit-api`` measure one process; they say so at once."""
    for command in ("connect", "hold", "emit-api"):
        run = subprocess.run(
            [sys.executable, "-m", "bench", command, "--quick", "--servers", "hub-2nodes"],
            cwd=CHECKOUT,
            capture_output=True,
            text=True,
            timeout=BOUND,
        )
        assert run.returncode == 2, run
        assert "not ['hub-2nodes']" in run.stderr


def test_hold_quick(tmp_path: Path) -> None:
    """50 clients for 6 s with pings every second: none lost, every one answering pings."""
    rows_path = tmp_path / "rows.json"
    out = _suite(["hold", "--quick", "--json", str(rows_path)])

    rows = json.loads(rows_path.read_text())
    assert sorted(row["server"] for row in rows) == ["hub", "node-socketio"]
    for row in rows:
        assert set(row) == set(HOLD_FIELDS), row
        for field, kind in HOLD_FIELDS.items():
            assert isinstance(row[field], kind), (field, row)
        assert row["all_alive"] is True, row
        assert row["clients"] == row["connected"] == row["alive"] == 50, row
        assert row["disconnects"] == 0, row
        assert row["pings"] >= 50 * 3, row  # ~6 each, one a second
        assert row["cpu_percent"] >= 0, row
    assert "all alive" in out  # the table


def test_connect_quick(tmp_path: Path) -> None:
    """50 clients to each server, with each one's JWT checked at connect and without."""
    rows_path = tmp_path / "rows.json"
    command = ["connect", "--quick", "--servers", ",".join(SERVERS), "--auth", "jwt,none"]
    out = _suite([*command, "--json", str(rows_path)])

    rows = json.loads(rows_path.read_text())
    measured = sorted((row["server"], row["auth"]) for row in rows)
    assert measured == sorted((server, auth) for server in SERVERS for auth in ("jwt", "none"))
    for row in rows:
        assert set(row) == set(CONNECT_FIELDS), row
        for field, kind in CONNECT_FIELDS.items():
            assert isinstance(row[field], kind), (field, row)
        assert row["clients"] == 50, row
        assert row["failed"] == 0, row  # every client connected, its token accepted
        assert row["connections_per_s"] > 0, row
        assert row["cpu_us_per_connection"] > 0, row
    assert "connections/s" in out  # the table
    assert "jwt" in out


def test_emit_api_quick(tmp_path: Path) -> None:
    """Emits posted one a request and ten a request reach all 50 clients of the room."""
    rows_path, plot_path = tmp_path / "rows.json", tmp_path / "plot.png"
    command = ["emit-api", "--quick", "--servers", ",".join(SERVERS), "--batch", "1,10"]
    out = _suite([*command, "--json", str(rows_path), "--plot", str(plot_path)])

    rows = json.loads(rows_path.read_text())
    measured = sorted((row["server"], row["batch"]) for row in rows)
    assert measured == sorted((server, batch) for server in SERVERS for batch in (1, 10))
    for row in rows:
        assert set(row) == set(EMIT_FIELDS), row
        for field, kind in EMIT_FIELDS.items():
            assert isinstance(row[field], kind), (field, row)
        assert row["clients"] == 50, row
        assert row["concurrency"] == 4, row
        assert row["emits"] == max(20, row["batch"] * 4), row  # --quick: 20, each lane posts
        assert row["failed_posts"] == 0, row
        assert row["lost"] == 0, row  # the clients counted every emit x 50
        assert row["emits_per_s"] > 0, row
        assert row["deliveries_per_s"] > 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
        assert row["cpu_us_per_emit"] > 0, row
    assert plot_path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "emits/s" in out  # the table


@overload
def _suite(arguments: list[str]) -> str: ...


@overload
def _suite(arguments: list[str], *, errors: Literal[True]) -> tuple[str, str]: ...


def _suite(arguments: list[str], *, errors: bool = False) -> str | tuple[str, str]:
    """Run ``python -m bench ARGUMENTS`` within ``BOUND`` seconds; its standard output (and,
    with ``errors``, its standard error: the progress lines).

    Skips (fails under ``HUB_REQUIRE_ALL=1``) when what it needs is not installed.
    """
    command = [sys.executable, "-m", "bench", *arguments]
    with subprocess.Popen(
        command, cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as suite:
        try:
            out, err = suite.communicate(timeout=BOUND)
        except subprocess.TimeoutExpired:
            suite.send_signal(signal.SIGTERM)  # the suite stops its servers and load first
            out, err = suite.communicate(timeout=15)
            pytest.fail(f"the quick run took over {BOUND:.0f} s:\n{err}")
    if suite.returncode == EXIT_MISSING:
        reason = f"the benchmark cannot run here: {err.strip()}"
        if os.environ.get("HUB_REQUIRE_ALL") == "1":
            pytest.fail(f"{reason} (required: HUB_REQUIRE_ALL=1)", pytrace=False)
        pytest.skip(reason)
    assert suite.returncode == 0, f"{out}\n{err}"
    return (out, err) if errors else out
