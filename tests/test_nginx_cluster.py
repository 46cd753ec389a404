"""Hub nodes on one Redis behind a real nginx: a user's tabs on different nodes, reached from any.

Three ``hub serve --redis`` processes and Debian's nginx with the configuration ``hub
nginx-config`` renders (:func:`support.cluster.start_cluster`), on a redis-server of the test's
own. One user opens tabs through nginx with the official socket.io-client in Node, over
long-polling only, WebSocket only and the default upgrade; nginx spreads them over the nodes.
A backend then posts emits to each node's ``/internal/emit`` in turn. Each tab must get each
emit exactly once and in order, whichever node it is on and whichever node was asked; the
answer must count every tab (``{"delivered": 3}``, complete); ``except`` must leave a tab on
another node out; and no tab may lose its session on the way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from interop.harness import CONNECT_TIMEOUT, STEP_TIMEOUT, ClientProcess, node_command, open_client
from support.cluster import EMIT_TOKEN, Cluster, LogLine, Node, start_cluster
from support.redis_server import RedisServer, redis_server

AUTH = {"Authorization": f"Bearer {EMIT_TOKEN}"}
USER = "alice"
TRANSPORTS: dict[str, dict[str, Any]] = {
    "polling": {"transports": ["polling"]},
    "websocket": {"transports": ["websocket"]},
    "upgrade": {},
}
EXTRA_TABS = 3
"""Tabs opened beyond the three when nginx happened to put all of them on one node."""


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("nginx-cluster")
    with start_cluster(directory, ("n1", "n2", "n3"), node_args=("--redis", redis.url)) as nodes:
        yield nodes


async def internal(node: Node, method: str, path: str, body: Any = None) -> httpx.Response:
    """A request to one node's internal API, directly (not through nginx)."""
    async with httpx.AsyncClient(base_url=node.url, headers=AUTH, timeout=STEP_TIMEOUT) as http:
        return await http.request(method, "/internal/" + path, json=body)


async def all_on_redis(cluster: Cluster, redis: RedisServer) -> None:
    """Every node is ready (on Redis) and subscribed to the main namespace's requests."""
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
        with trio.fail_after(CONNECT_TIMEOUT):
            for node in cluster.nodes:
                while (await http.get(f"{node.url}/ready")).status_code != 200:
                    await trio.sleep(0.05)
            while not redis.command("PUBSUB", "NUMSUB", "socket.io-request#/#").endswith(b"3\n"):
                await trio.sleep(0.05)


async def holders(cluster: Cluster, tabs: dict[str, str]) -> dict[str, str]:
    """The node that holds each tab's socket (tab name -> node id), each listed on one node."""
    where: dict[str, list[str]] = {name: [] for name in tabs}
    for node in cluster.nodes:
        response = await internal(node, "GET", f"users/{USER}/sockets")
        assert response.status_code == 200, response.text
        listed = {socket["id"] for socket in response.json()["sockets"]}
        for name, socket_id in tabs.items():
            if socket_id in listed:
                where[name].append(node.id)
    assert all(len(nodes) == 1 for nodes in where.values()), where
    return {name: nodes[0] for name, nodes in where.items()}


async def emit(node: Node, body: dict[str, Any]) -> dict[str, Any]:
    response = await internal(node, "POST", "emit", body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@asynccontextmanager
async def open_tabs(
    nursery: trio.Nursery, cluster: Cluster
) -> AsyncIterator[tuple[dict[str, ClientProcess], dict[str, str]]]:
    """The user's tabs through nginx, on at least two nodes: (clients, node of each)."""
    async with AsyncExitStack() as stack:
        clients: dict[str, ClientProcess] = {}
        ids: dict[str, str] = {}

        async def add(name: str, options: dict[str, Any]) -> None:
            client = await stack.enter_async_context(
                open_client(
                    nursery,
                    node_command(),
                    {"url": cluster.url, "auth": {"token": cluster.token(USER)}, **options},
                    name=f"{name} tab",
                )
            )
            ids[name] = (await client.expect("connect", timeout=CONNECT_TIMEOUT))["id"]
            if not options:
                await client.expect("upgrade", transport="websocket", timeout=CONNECT_TIMEOUT)
            clients[name] = client

        for name, options in TRANSPORTS.items():
            await add(name, options)
        where = await holders(cluster, ids)
        for extra in range(EXTRA_TABS):
            if len(set(where.values())) > 1:
                break
            await add(f"extra{extra}", {})
            where = await holders(cluster, ids)
        assert len(set(where.values())) > 1, where
        yield clients, where


def lost_nothing(client: ClientProcess) -> None:
    """The tab kept its first session: one Engine.IO open, no error, no disconnect."""
    assert len(client.seen("open")) == 1, client.report()
    for trouble in ("connect_error", "disconnect", "reconnect_attempt", "manager_error"):
        assert client.seen(trouble) == [], client.report()


async def test_each_tab_gets_each_emit_once_from_whichever_node(
    cluster: Cluster, redis: RedisServer, nursery: trio.Nursery
) -> None:
    await all_on_redis(cluster, redis)
    async with open_tabs(nursery, cluster) as (tabs, where):
        sent = []
        for round_ in range(3):
            for node in cluster.nodes:
                key = f"{node.id}-{round_}"
                body = {"event": "cluster-news", "data": {"key": key}, "to": [f"user:{USER}"]}
                answer = await emit(node, body)
                # Counted on every node, the asking one's own tabs and the others' alike.
                assert answer == {"delivered": len(tabs)}, (node.id, answer, where)
                sent.append(key)
        fence = {"event": "fence", "data": {}, "to": [f"user:{USER}"]}
        assert await emit(cluster.nodes[0], fence) == {"delivered": len(tabs)}
        for name, client in tabs.items():
            await client.expect("event", name="fence", timeout=STEP_TIMEOUT)
            received = [event["args"][0]["key"] for event in client.events("cluster-news")]
            # Once each and in the order sent, whether sent by its own node or another.
            assert received == sent, (name, where[name], received)
            lost_nothing(client)

    def upgraded(line: LogLine) -> bool:
        return line.transport == "websocket" and line.status == 101

    routed = await cluster.check_affinity(upgraded)
    assert any(line.transport == "polling" for line in routed)
    assert any(upgraded(line) for line in routed)


async def test_except_and_rooms_reach_across_nodes(
    cluster: Cluster, redis: RedisServer, nursery: trio.Nursery
) -> None:
    await all_on_redis(cluster, redis)
    async with open_tabs(nursery, cluster) as (tabs, where):
        # One tab joins the project through its own node; an emit to the user except the
        # project's room, asked of a node that does not hold that tab, leaves it out.
        member = "websocket"
        tab = tabs[member]
        await tab.send(op="emitWithAck", event="join-project", args=[{"projectId": "demo"}],
                       tag="join")  # fmt: skip
        assert (await tab.expect("ack", tag="join"))["args"] == [{"ok": True}]
        elsewhere = next(node for node in cluster.nodes if node.id != where[member])
        body = {
            "event": "not-the-project",
            "data": {},
            "to": [f"user:{USER}"],
            "except": ["project:demo"],
        }
        assert await emit(elsewhere, body) == {"delivered": len(tabs) - 1}
        project = {"event": "project-only", "data": {}, "to": ["project:demo"]}
        assert await emit(elsewhere, project) == {"delivered": 1}
        await tab.expect("event", name="project-only")
        for name, client in tabs.items():
            if name != member:
                await client.expect("event", name="not-the-project")
        assert tab.events("not-the-project") == []

        # The internal API of any node makes the user's tabs on every node join a room.
        response = await internal(
            elsewhere, "POST", "rooms/join", {"userId": USER, "rooms": ["batch:7"]}
        )
        assert response.status_code == 200, response.text
        batch = {"event": "batch-news", "data": {}, "to": ["batch:7"]}
        with trio.fail_after(STEP_TIMEOUT):
            while (answer := await emit(cluster.nodes[0], batch))["delivered"] < len(tabs):
                await trio.sleep(0.05)
        assert answer == {"delivered": len(tabs)}
        for client in tabs.values():
            await client.expect("event", name="batch-news")
            lost_nothing(client)
