"""``hub serve`` nodes sharing one Redis, configured as a person would: ``--redis URL`` on one
node, ``HUB_REDIS_URL`` on the other; real processes, a real redis-server, a raw client."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from support.redis_server import RedisServer, free_port, redis_server
from support.sio import SID, RawSio

from hub.app.auth import AuthSettings, mint_token
from hub.app.config import DEV_EMIT_TOKEN, DEV_JWT_SECRET

ROOT = Path(__file__).resolve().parents[1]
HUB = [sys.executable, "-m", "hub.cli"]
START = 15.0
"""The longest a started hub may take to say it listens."""

LISTENING = re.compile(r"internal API on http://\S+/internal/$", re.MULTILINE)
CONNECTED = re.compile(r"cluster node \S+ connected to Redis at (\S+)$", re.MULTILINE)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The parent's environment without the hub's variables; one store with user ann."""
    platform = {"JWT_ACCESS_SECRET", "WS_ALLOWED_ORIGINS", "NODE_ENV"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") and k not in platform}
    env = {**clean, "HUB_DATABASE": str(tmp_path / "hub.sqlite3")}
    subprocess.run(
        [*HUB, "users", "add", "ann", "--email", "ann@example.com"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=30,
    )
    return env


@asynccontextmanager
async def hub_serve(env: dict[str, str], *args: str) -> AsyncIterator[tuple[int, str]]:
    """A running ``hub serve``: its port, and what it logged up to listening."""
    port = free_port()
    process = await trio.lowlevel.open_process(
        [*HUB, "serve", "--port", str(port), *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        text = ""
        with trio.fail_after(START):
            while not LISTENING.search(text):
                chunk = await process.stderr.receive_some()
                assert chunk, f"hub serve ended:\n{text}"
                text += chunk.decode()
        yield port, text
        process.send_signal(signal.SIGINT)
        with trio.fail_after(START):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(START):
                await process.wait()


async def test_two_hub_serve_nodes_share_a_users_events(
    nursery: trio.Nursery, env: dict[str, str], redis: RedisServer
) -> None:
    token = mint_token("ann", AuthSettings(secret=DEV_JWT_SECRET))
    async with (
        hub_serve(env, "--redis", redis.url) as (port_a, log_a),
        hub_serve({**env, "HUB_REDIS_URL": redis.url}) as (port_b, log_b),
    ):
        for log in (log_a, log_b):
            connected = CONNECTED.search(log)
            assert connected is not None, log
            assert connected[1] == redis.url

        # ann's tab is on node B; a service asks node A.
        tab = await RawSio.open(nursery, f"127.0.0.1:{port_b}")
        await tab.send("40" + json.dumps({"token": token}))
        assert SID.fullmatch((await tab.receive_text())[2:])
        async with httpx.AsyncClient(timeout=START) as http:
            response = await http.post(
                f"http://127.0.0.1:{port_a}/internal/emit",
                headers={"Authorization": f"Bearer {DEV_EMIT_TOKEN}"},
                json={"event": "cluster-check", "to": ["user:ann"], "data": {"text": "hi"}},
            )
        assert response.status_code == 200, response.text
        name, data, _offset = json.loads((await tab.receive_text(5.0))[2:])
        assert name == "cluster-check"
        assert data["text"] == "hi"
        await tab.aclose()


def test_a_redis_url_that_is_not_one_is_refused(env: dict[str, str]) -> None:
    done = subprocess.run(
        [*HUB, "serve", "--port", "0", "--redis", "localhost:6379"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "HUB_REDIS_URL must be a redis://" in done.stderr
