"""The hub's internal API across a cluster: three ``hub serve`` nodes on one real Redis.

A service asks node A; the user's tabs are on nodes B and C. Each tab gets each emit exactly
once and the answer counts the sockets reached on every node; joins, ``except`` and logouts
reach the tabs wherever they are.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import trio
from support.redis_server import RedisServer
from support.sio import SID, RawSio
from test_cluster_serve import HUB, ROOT, START, env, hub_serve, redis

from hub.app.auth import AuthSettings, mint_token
from hub.app.config import DEV_EMIT_TOKEN, DEV_JWT_SECRET

__all__ = ["env", "redis"]  # fixtures, used by name

HEADERS = {"Authorization": f"Bearer {DEV_EMIT_TOKEN}"}


async def _tab(nursery: trio.Nursery, port: int, user: str) -> RawSio:
    tab = await RawSio.open(nursery, f"127.0.0.1:{port}")
    await tab.send("40" + json.dumps({"token": mint_token(user, AuthSettings(DEV_JWT_SECRET))}))
    assert SID.fullmatch((await tab.receive_text())[2:])
    return tab


async def _next_event(tab: RawSio) -> list[Any]:
    """The next event's name and data (an offset that may follow them left out)."""
    while True:
        text = await tab.receive_text(5.0)
        if text.startswith("42"):
            return list(json.loads(text[2:])[:2])


@asynccontextmanager
async def _nodes(env: dict[str, str], redis: RedisServer) -> AsyncIterator[list[int]]:
    async with AsyncExitStack() as stack:
        ports = [
            (await stack.enter_async_context(hub_serve(env, "--redis", redis.url)))[0]
            for _ in range(3)
        ]
        yield ports


async def test_a_service_on_one_node_reaches_a_users_tabs_on_the_others(
    nursery: trio.Nursery, env: dict[str, str], redis: RedisServer
) -> None:
    await trio.run_process([*HUB, "users", "add", "bob"], env=env, cwd=ROOT, capture_stdout=True)
    async with (
        _nodes(env, redis) as (port_a, port_b, port_c),
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port_a}", headers=HEADERS, timeout=START
        ) as node_a,
    ):
        ann_b = await _tab(nursery, port_b, "ann")
        ann_c = await _tab(nursery, port_c, "ann")
        bob_c = await _tab(nursery, port_c, "bob")

        emitted = await node_a.post(
            "/internal/emit", json={"event": "note", "to": ["user:ann"], "data": {"n": 1}}
        )
        assert emitted.json() == {"delivered": 2}
        for tab in (ann_b, ann_c):
            assert await _next_event(tab) == ["note", {"n": 1}]

        joined = await node_a.post(
            "/internal/rooms/join", json={"userId": "ann", "rooms": ["team"]}
        )
        assert joined.status_code == 200, joined.text
        await node_a.post("/internal/rooms/join", json={"userId": "bob", "rooms": ["team"]})
        await trio.sleep(0.3)  # the joins travel through Redis; nobody answers them
        batch = await node_a.post(
            "/internal/emit",
            json=[
                {"event": "note", "to": ["team"], "data": {"n": 2}},
                {"event": "note", "to": ["team"], "except": ["user:ann"], "data": {"n": 3}},
            ],
        )
        assert batch.json() == {
            "delivered": 4,
            "results": [{"delivered": 3}, {"delivered": 1}],
        }
        for tab in (ann_b, ann_c):
            assert await _next_event(tab) == ["note", {"n": 2}]
        assert await _next_event(bob_c) == ["note", {"n": 2}]
        assert await _next_event(bob_c) == ["note", {"n": 3}]

        # A fence: ann's tabs got nothing more than that (the except held on every node).
        fence = await node_a.post(
            "/internal/emit", json={"event": "fence", "to": ["user:ann"], "data": {}}
        )
        assert fence.json() == {"delivered": 2}
        for tab in (ann_b, ann_c):
            assert await _next_event(tab) == ["fence", {}]

        # Logout through node A: every tab of ann, wherever it is, is disconnected.
        gone = await node_a.post("/internal/users/ann/disconnect")
        assert gone.status_code == 200, gone.text
        for tab in (ann_b, ann_c):
            assert await tab.receive_text(5.0) == "41"
        after = await node_a.post(
            "/internal/emit", json={"event": "note", "to": ["user:ann"], "data": {}}
        )
        assert after.json() == {"delivered": 0}
        for tab in (ann_b, ann_c, bob_c):
            await tab.aclose()
