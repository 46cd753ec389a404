"""SIGTERM: `hub serve` lets its clients go gracefully and exits within its deadline.

A real `hub serve --demo` process, the official client in Node over WebSocket and over
long-polling: emits accepted just before the signal reach the clients before they are let go
(an Engine.IO close, so the stock client reconnects); once shutting down the hub refuses new
connections and new emits with 503 (said, never dropped) and exits 0 by the deadline even if a
client never comes back for its close.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import trio
from interop.harness import CONNECT_TIMEOUT, node_command, open_client
from test_cli import HUB, LISTENING, ROOT, Output, free_port

from hub.app.auth import AuthSettings, mint_token
from hub.app.config import DEV_EMIT_TOKEN, DEV_JWT_SECRET

BURST = 200
GRACE = 3.0
EMIT_HEADERS = {"Authorization": f"Bearer {DEV_EMIT_TOKEN}"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    platform = {"JWT_ACCESS_SECRET", "WS_ALLOWED_ORIGINS", "NODE_ENV"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") and k not in platform}
    return {
        **clean,
        "HUB_DATABASE": str(tmp_path / "hub.sqlite3"),
        "HUB_SHUTDOWN_SECONDS": str(GRACE),
    }


async def test_sigterm_flushes_lets_clients_go_and_exits_by_the_deadline(
    nursery: trio.Nursery, env: dict[str, str]
) -> None:
    node_command()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = await trio.lowlevel.open_process(
        [*HUB, "serve", "--demo", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        stderr = Output(process.stderr)
        await stderr.until(LISTENING)
        token = {u: mint_token(u, AuthSettings(secret=DEV_JWT_SECRET)) for u in ("alice", "bob")}
        fast = {"reconnectionDelay": 5000, "reconnectionDelayMax": 5000}
        async with (
            open_client(
                nursery,
                node_command(),
                {
                    "url": base,
                    "transports": ["websocket"],
                    "auth": {"token": token["alice"]},
                    **fast,
                },
                name="alice",
            ) as alice,
            open_client(
                nursery,
                node_command(),
                {"url": base, "transports": ["polling"], "auth": {"token": token["bob"]}, **fast},
                name="bob",
            ) as bob,
            httpx.AsyncClient(base_url=base, headers=EMIT_HEADERS, timeout=10) as http,
        ):
            for client in (alice, bob):
                await client.expect("connect", timeout=CONNECT_TIMEOUT)
            # A polling session that never comes back for its close: the hub waits for it
            # until the deadline, then exits anyway.
            stuck = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
            assert stuck.status_code == 200
            burst = [
                {"event": "note", "data": {"n": n}, "to": ["user:alice", "user:bob"]}
                for n in range(BURST)
            ]
            accepted = await http.post("/internal/emit", json=burst)
            assert accepted.status_code == 200, accepted.text
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)

            await stderr.until(r"shutting down")
            refused = await http.post("/internal/emit", json=burst[0])
            handshake = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
            for client in (alice, bob):
                await client.expect("disconnect", timeout=CONNECT_TIMEOUT)
            with trio.fail_after(GRACE + 5):
                returncode = await process.wait()
            exited_after = time.monotonic() - signalled
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    with trio.move_on_after(2):
        while chunk := await stderr.stream.receive_some():
            stderr.text += chunk.decode()

    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "SHUTTING_DOWN"
    assert handshake.status_code == 503
    for client in (alice, bob):
        # Every accepted emit arrived, in order, before the client was let go...
        notes = [record["args"][0]["n"] for record in client.events("note")]
        assert notes == list(range(BURST)), client.report()
        disconnect = client.seen("disconnect")[0]
        assert client.lines.index(disconnect) > client.lines.index(client.events("note")[-1])
        # ... with an Engine.IO close: the stock client reconnects (to a node that is up).
        assert disconnect["active"] is True, client.report()
    assert returncode == 0, stderr.text[-2000:]
    assert GRACE - 0.5 <= exited_after <= GRACE + 3, exited_after
    assert re.search(r"shutdown deadline passed with 1 connections open", stderr.text)
    assert "Traceback" not in stderr.text
    assert json.loads(accepted.text)
