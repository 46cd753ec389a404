"""A hub node in one cluster with Node's own tools, over a real redis-server.

- A Node service using ``@socket.io/redis-emitter`` 5 reaches the sockets of hub nodes (the
  official socket.io-client on one, a raw client on another).
- A Node ``socket.io`` 4.8 server with ``@socket.io/redis-adapter`` 8 and a hub node share
  broadcasts, rooms, socket listings, server-side events and acknowledgements, both ways; the
  clients of each (socket.io-client on the Node server) see what the other node sends.
- In such a mixed cluster, a hub node reconnecting to Redis is still counted (by its heartbeats,
  which Node nodes never see) and a counted emit it missed is said incomplete; the Node node is
  counted by ``PUBSUB NUMSUB`` and reads the uid that hub adds to its answers without harm.

The Node side runs ``tests/support/redis_node.mjs``; the clients run
``tests/interop/node_client.mjs``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from interop.harness import (
    CONNECT_TIMEOUT,
    ClientProcess,
    node_command,
    open_client,
    plain,
    wire_bytes,
)
from support.hub_nodes import Member, Node, redis_node_command, start_node
from support.redis_server import RedisServer, redis_server

from hub.cluster import ClusterIncomplete


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(autouse=True)
def _require_node() -> None:
    redis_node_command()


@asynccontextmanager
async def node_tool(
    nursery: trio.Nursery, redis: RedisServer, role: str, **options: Any
) -> AsyncIterator[ClientProcess]:
    """``redis_node.mjs`` as an emitter or a socket.io server, ready."""
    command = redis_node_command()
    async with open_client(
        nursery, command, {"redisUrl": redis.url, "role": role, **options}, name=role
    ) as process:
        await process.expect("listening" if role == "server" else "ready", CONNECT_TIMEOUT)
        yield process


@asynccontextmanager
async def socketio_client(
    nursery: trio.Nursery, url: str, name: str
) -> AsyncIterator[ClientProcess]:
    """The official client, on WebSocket, connected."""
    options = {"url": url, "transports": ["websocket"]}
    async with open_client(nursery, node_command(), options, name=name) as client:
        await client.expect("connect", CONNECT_TIMEOUT)
        yield client


async def ask(tool: ClientProcess, tag: int, **command: Any) -> dict[str, Any]:
    """Run one command of redis_node.mjs and return its answer."""
    await tool.send(tag=tag, **command)
    done = await tool.expect("done", tag=tag)
    return done


async def joined(client: ClientProcess, tag: str, *rooms: str) -> None:
    """The socket.io-client on a hub node asks its node to put it in ``rooms``."""
    await client.send(op="emit", event="join", args=list(rooms), ack=True, tag=tag)
    assert (await client.expect("ack", tag=tag))["args"] == ["joined"]


async def test_a_node_emitter_reaches_hub_sockets(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a = await start_node(nursery, redis.url)
    b = await start_node(nursery, redis.url)
    seen: list[list[Any]] = []
    a.cluster.on("reindex", lambda *args: seen.append(list(args)))

    async with (
        socketio_client(nursery, f"http://{a.address}", "client-a") as on_a,
        node_tool(nursery, redis, "emitter") as emitter,
    ):
        await joined(on_a, "j1", "project:1")
        on_b = await Member.connect(nursery, b, "project:1")
        muted = await Member.connect(nursery, b, "project:1", "muted")

        await ask(
            emitter,
            1,
            op="emit",
            to=["project:1"],
            event="thumbnail-update",
            args=[{"imageId": "i1", "png": wire_bytes(b"\x89PNG\r\n")}, wire_bytes(b"\x00\xff")],
        )
        event = await on_a.expect("event", name="thumbnail-update")
        assert plain(event["args"]) == [{"imageId": "i1", "png": b"\x89PNG\r\n"}, b"\x00\xff"]
        assert await on_b.expect("thumbnail-update") == [
            {"imageId": "i1", "png": b"\x89PNG\r\n"},
            b"\x00\xff",
        ]
        assert await muted.expect("thumbnail-update") == [
            {"imageId": "i1", "png": b"\x89PNG\r\n"},
            b"\x00\xff",
        ]

        # except, and several rooms (the namespace's channel instead of a room's)
        await ask(emitter, 2, op="emit", to=["project:1", "x"], event="n", args=[1])
        await ask(
            emitter, 3, op="emit", to=["project:1"], event="quiet", args=[], **{"except": ["muted"]}
        )
        assert await on_b.expect("n") == [1]
        assert await on_b.expect("quiet") == []
        assert await muted.expect("n") == [1]
        await on_a.expect("event", name="quiet")
        await muted.quiet()

        # the emitter's socketsJoin and disconnectSockets reach hub sockets too
        await ask(emitter, 4, op="socketsJoin", to=["muted"], rooms=["batch:5"])
        with trio.fail_after(5):
            while len(await b.server.to("batch:5").everywhere.fetch_sockets()) < 1:
                await trio.sleep(0.02)
        await ask(emitter, 5, op="serverSideEmit", event="reindex", args=["project:1"])
        await ask(emitter, 6, op="disconnectSockets", to=["batch:5"], close=False)
        assert await muted.client.receive_text() == "41"
        with trio.fail_after(5):
            while not seen:
                await trio.sleep(0.01)
        assert seen == [["project:1"]]


@asynccontextmanager
async def mixed_cluster(
    nursery: trio.Nursery, redis: RedisServer
) -> AsyncIterator[tuple[Node, Member, ClientProcess, ClientProcess]]:
    """A hub node with a raw client in ``room``, and a Node socket.io node with the official
    client in ``room``: (hub node, hub client, Node server, its client)."""
    node = await start_node(nursery, redis.url)
    on_hub = await Member.connect(nursery, node, "room")
    async with node_tool(nursery, redis, "server", rooms=["room"]) as server:
        port = server.seen("listening")[0]["port"]
        async with socketio_client(nursery, f"http://127.0.0.1:{port}", "client-node") as on_node:
            await server.expect("connection")
            yield node, on_hub, server, on_node


async def test_hub_and_node_socketio_nodes_share_broadcasts(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    async with mixed_cluster(nursery, redis) as (node, on_hub, server, on_node):
        # hub -> Node's clients, binary included
        node.server.to("room").emit("from-hub", {"k": "v"}, b"\x01\x02\x03")
        assert await on_hub.expect("from-hub") == [{"k": "v"}, b"\x01\x02\x03"]
        event = await on_node.expect("event", name="from-hub")
        assert plain(event["args"]) == [{"k": "v"}, b"\x01\x02\x03"]

        # Node -> hub's clients, binary included
        await ask(server, 1, op="emit", to=["room"], event="from-node", args=[wire_bytes(b"\xfe")])
        assert await on_hub.expect("from-node") == [b"\xfe"]
        await on_node.expect("event", name="from-node")

        # except with a socket id, across the two kinds of node
        await ask(
            server, 2, op="emit", to=["room"], event="not-hub", args=[], **{"except": [on_hub.sid]}
        )
        await on_node.expect("event", name="not-hub")
        node.server.to("room").except_(on_node.seen("connect")[0]["id"]).emit("not-node")
        assert await on_hub.expect("not-node") == []
        await on_hub.quiet()
        assert on_node.events("not-node") == []

        # a counted emit counts the Node node's sockets too
        assert await node.server.to("room").everywhere.emit("counted", 1) == 2
        assert await on_hub.expect("counted") == [1]
        assert (await on_node.expect("event", name="counted"))["args"] == [1]


async def test_hub_and_node_socketio_nodes_act_on_each_others_sockets(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    async with mixed_cluster(nursery, redis) as (node, on_hub, server, on_node):
        node_socket = on_node.seen("connect")[0]["id"]

        # Each lists the other's sockets and counts the other node.
        found = await node.server.to("room").everywhere.fetch_sockets()
        assert {(s.id, s.local) for s in found} == {(on_hub.sid, True), (node_socket, False)}
        assert await node.cluster.server_count() == 2
        listed = await ask(server, 1, op="fetchSockets", to=["room"])
        assert {s["id"] for s in listed["sockets"]} == {on_hub.sid, node_socket}
        hub_entry = next(s for s in listed["sockets"] if s["id"] == on_hub.sid)
        assert hub_entry["rooms"] == sorted([on_hub.sid, "room"])
        assert hub_entry["address"] == "127.0.0.1"
        assert (await ask(server, 2, op="serverCount"))["count"] == 2

        # Server-side events with answers, both ways.
        node.cluster.on("hello", lambda *args: {"from": "hub", "args": list(args)})
        answers = await ask(server, 3, op="serverSideEmitWithAck", event="hello", args=[1])
        assert answers["answers"] == [{"from": "hub", "args": [1]}]
        assert await node.cluster.server_side_emit_with_ack("hello", 2) == [
            {"from": "node", "args": [2]}
        ]

        # Node's emit with acknowledgements gets the hub client's answer.
        await server.send(tag=4, op="emitWithAck", to=["room"], event="confirm", args=[9])
        packet = await on_hub.client.receive_text()
        assert packet.startswith("42"), packet
        assert packet.endswith('["confirm",9]'), packet
        ack_id = packet[2 : packet.index("[")]
        await on_hub.client.send(f"43{ack_id}" + '[{"ok":true}]')
        done = await server.expect("done", tag=4)
        assert sorted(done["answers"], key=str) == sorted([9, {"ok": True}], key=str)

        # hub makes the Node node's socket join a room, then disconnects it.
        await node.server.to(node_socket).everywhere.join("project:3")
        with trio.fail_after(5):
            while not await node.server.to("project:3").everywhere.fetch_sockets():
                await trio.sleep(0.02)
        node.server.to("project:3").emit("joined-remotely")
        await on_node.expect("event", name="joined-remotely")
        await node.server.to("project:3").everywhere.disconnect()
        assert (await on_node.expect("disconnect"))["reason"] == "io server disconnect"

        # The Node node disconnects the hub's socket.
        await ask(server, 5, op="disconnectSockets", to=[on_hub.sid], close=False)
        assert await on_hub.client.receive_text() == "41"
        assert on_hub.sid not in node.server.main.sockets


async def test_a_hub_node_reconnecting_is_missed_in_a_mixed_cluster(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    # Two hub nodes and a Node node. Node nodes send no heartbeats (and never see hub's): they
    # are counted by PUBSUB NUMSUB; hub nodes also by their heartbeats.
    fast = {"reconnect_delay": 0.05, "max_reconnect_delay": 0.3, "connect_timeout": 1.0}
    slow = {"reconnect_delay": 3.0, "max_reconnect_delay": 3.0, "connect_timeout": 1.0}
    a = await start_node(nursery, redis.url, **fast)
    b = await start_node(nursery, redis.url, **slow)
    on_b = await Member.connect(nursery, b, "room")
    async with node_tool(nursery, redis, "server", rooms=["room"]) as server:
        port = server.seen("listening")[0]["port"]
        async with socketio_client(nursery, f"http://127.0.0.1:{port}", "client-node") as on_node:
            await server.expect("connection")
            with trio.fail_after(5):
                while b.cluster.uid not in a.cluster.link("/").peers.alive(trio.current_time()):
                    await trio.sleep(0.01)
            assert await a.server.to("room").everywhere.emit("first") == 2
            assert await on_b.expect("first") == []
            await on_node.expect("event", name="first")

            # Every subscription cut: hub node A and the Node node come back at once, B later.
            redis.command("CLIENT", "KILL", "TYPE", "pubsub")
            with trio.fail_after(5):
                while b.cluster.connected or not a.cluster.connected:
                    await trio.sleep(0.005)
                while (await ask(server, 1, op="serverCount"))["count"] < 2:
                    await trio.sleep(0.05)
            # The Node node answers with its count; B cannot have had it, and that is said.
            with pytest.raises(ClusterIncomplete) as caught:
                await a.server.to("room").everywhere.emit("second")
            assert caught.value.missing == {b.cluster.uid}
            assert caught.value.partial == 1  # the Node node's client
            await on_node.expect("event", name="second")

            with trio.fail_after(6):
                while not b.cluster.connected:
                    await trio.sleep(0.01)
            assert await a.server.to("room").everywhere.emit("third") == 2
            assert await on_b.expect("third") == []  # and not "second"
            await on_node.expect("event", name="third")
            # Node still counts every node by NUMSUB, and lists B's socket.
            assert (await ask(server, 2, op="serverCount"))["count"] == 3
            listed = await ask(server, 3, op="fetchSockets", to=["room"])
            assert on_b.sid in {s["id"] for s in listed["sockets"]}
