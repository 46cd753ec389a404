"""Two and three hub nodes in one trio process sharing rooms through a real redis-server.

Clients are raw WebSocket clients of each node (:class:`support.hub_nodes.Member`); every
assertion is on the frames a client receives or on what the cluster operations return.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import coredis
import pytest
import trio
from support.hub_nodes import Member, Node, start_node
from support.redis_server import RedisServer, redis_server
from support.sio import RawSio, start_server

import hub
from hub.cluster import ClusterTimeout, RemoteSocket


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


async def two_nodes(nursery: trio.Nursery, redis: RedisServer, **options: Any) -> tuple[Node, Node]:
    a = await start_node(nursery, redis.url, **options)
    b = await start_node(nursery, redis.url, **options)
    assert a.cluster.connected
    assert b.cluster.connected
    # The nodes of the previous test (same Redis) are gone once Redis has seen them close.
    with trio.fail_after(5):
        while await a.cluster.server_count() != 2:
            await trio.sleep(0.01)
    return a, b


async def test_a_broadcast_reaches_each_socket_of_every_node_once(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a, b = await two_nodes(nursery, redis)
    a1 = await Member.connect(nursery, a, "room")
    b1 = await Member.connect(nursery, b, "room", "other")
    b2 = await Member.connect(nursery, b, "other")
    b3 = await Member.connect(nursery, b)

    assert a.server.to("room").emit("news", {"n": 1}) == 1  # the local count
    assert await a1.expect("news") == [{"n": 1}]
    assert await b1.expect("news") == [{"n": 1}]

    # Two rooms: a socket in both gets it once; the other node decides who is in which.
    a.server.to("room", "other").emit("news", 2)
    for member in (a1, b1, b2):
        assert await member.expect("news") == [2]

    # To every socket, from the other node.
    b.server.emit("all", "x")
    for member in (a1, b1, b2, b3):
        assert await member.expect("all") == ["x"]

    for member in (a1, b1, b2, b3):
        await member.quiet()
    assert a.cluster.status.dropped == 0
    assert b.cluster.status.dropped == 0


async def test_except_rooms_and_the_sender_are_left_out_on_every_node(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a, b = await two_nodes(nursery, redis)

    @a.server.on("relay")
    def relay(socket: hub.Socket, room: str, text: str) -> None:
        socket.to(room).emit("relayed", text)  # socket.io's socket.to: not the sender

    a1 = await Member.connect(nursery, a, "room")
    a2 = await Member.connect(nursery, a, "room", "muted")
    b1 = await Member.connect(nursery, b, "room")
    b2 = await Member.connect(nursery, b, "room", "muted")

    a.server.to("room").except_("muted").emit("loud", 1)
    assert await a1.expect("loud") == [1]
    assert await b1.expect("loud") == [1]

    await a1.client.send('42["relay","room","hi"]')
    assert await a2.expect("relayed") == ["hi"]
    assert await b1.expect("relayed") == ["hi"]
    assert await b2.expect("relayed") == ["hi"]

    # A socket id as an except room, from the node that does not hold the socket.
    b.server.to("room").except_(a1.sid, b2.sid).emit("some", 3)
    assert await a2.expect("some") == [3]
    assert await b1.expect("some") == [3]

    for member in (a1, a2, b1, b2):
        await member.quiet()


async def test_binary_arguments_survive_the_trip(nursery: trio.Nursery, redis: RedisServer) -> None:
    a, b = await two_nodes(nursery, redis)
    b1 = await Member.connect(nursery, b, "files")
    big = bytes(range(256)) * 400
    payload = {"name": "scan.png", "chunks": [b"\x00\x01", b"", big], "meta": {"raw": b"\xff"}}

    a.server.to("files").emit("upload", payload, b"\x89PNG")
    assert await b1.expect("upload") == [payload, b"\x89PNG"]


async def test_counted_emit_says_how_many_sockets_it_reached_on_all_nodes(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a, b = await two_nodes(nursery, redis)
    c = await start_node(nursery, redis.url)
    tabs = [
        await Member.connect(nursery, a, "user:1"),
        await Member.connect(nursery, b, "user:1"),
        await Member.connect(nursery, b, "user:1"),
        await Member.connect(nursery, c, "user:1", "away"),
    ]
    other = await Member.connect(nursery, c, "user:2")

    assert await a.server.to("user:1").everywhere.emit("note", {"id": 7}) == 4
    for tab in tabs:
        assert await tab.expect("note") == [{"id": 7}]

    assert await b.server.to("user:1").except_("away").everywhere.emit("note", 8) == 3
    for tab in tabs[:3]:
        assert await tab.expect("note") == [8]

    assert await c.server.to("user:3").everywhere.emit("nobody") == 0

    for member in (*tabs, other):
        await member.quiet()


async def test_remote_join_leave_and_disconnect(nursery: trio.Nursery, redis: RedisServer) -> None:
    a, b = await two_nodes(nursery, redis)
    b1 = await Member.connect(nursery, b, "user:1")
    b2 = await Member.connect(nursery, b, "user:1")
    b3 = await Member.connect(nursery, b, "user:2")

    # Node A puts user 1's sockets, all on node B, in a project room.
    await a.server.to("user:1").everywhere.join("project:9")
    with trio.fail_after(5):
        while len(await a.server.to("project:9").everywhere.fetch_sockets()) < 2:
            await trio.sleep(0.02)
    a.server.to("project:9").emit("progress", 50)
    assert await b1.expect("progress") == [50]
    assert await b2.expect("progress") == [50]

    # Access revoked for one tab: it leaves, the other stays.
    await a.server.to(b1.sid).everywhere.leave("project:9")
    with trio.fail_after(5):
        while len(await a.server.to("project:9").everywhere.fetch_sockets()) > 1:
            await trio.sleep(0.02)
    a.server.to("project:9").emit("progress", 60)
    assert await b2.expect("progress") == [60]
    await b1.quiet()

    # Logout: user 1's sockets get a Socket.IO DISCONNECT; user 2's stays.
    await a.server.to("user:1").everywhere.disconnect()
    assert await b1.client.receive_text() == "41"
    assert await b2.client.receive_text() == "41"
    await b3.quiet()

    # close=True ends the Engine.IO connection (the stock client then reconnects).
    await a.server.to(b3.sid).everywhere.disconnect(close=True)
    assert await b3.client.closed_code() == 1000


async def test_fetch_sockets_lists_every_node(nursery: trio.Nursery, redis: RedisServer) -> None:
    a, b = await two_nodes(nursery, redis)
    for node, name in ((a, "a"), (b, "b")):

        @node.server.on("whoami")
        def whoami(socket: hub.Socket, user: str, node_name: str = name) -> str:
            socket.data.update(user=user, node=node_name)
            return "ok"

    a1 = await Member.connect(nursery, a, "project:1")
    b1 = await Member.connect(nursery, b, "project:1", "batch:2")
    b2 = await Member.connect(nursery, b)
    for member, user in ((a1, "ann"), (b1, "bob"), (b2, "cid")):
        assert await member.ask("whoami", user) == ["ok"]

    found = await a.server.to("project:1").everywhere.fetch_sockets()
    assert {(s.id, s.local, s.data["user"], s.data["node"]) for s in found} == {
        (a1.sid, True, "ann", "a"),
        (b1.sid, False, "bob", "b"),
    }
    remote = next(s for s in found if s.id == b1.sid)
    assert isinstance(remote, RemoteSocket)
    assert remote.rooms == {b1.sid, "project:1", "batch:2"}
    assert remote.handshake.address == "127.0.0.1"
    assert remote.handshake.query["EIO"] == "4"

    everyone = await b.server.except_("batch:2").everywhere.fetch_sockets()
    assert {s.id for s in everyone} == {a1.sid, b2.sid}

    assert await a.cluster.all_rooms() >= {"project:1", "batch:2", a1.sid, b1.sid, b2.sid}


async def test_server_side_events_and_node_count(nursery: trio.Nursery, redis: RedisServer) -> None:
    a, b = await two_nodes(nursery, redis)
    seen: list[tuple[str, Any]] = []

    @b.cluster.on("cache:clear")
    def clear(key: str) -> None:
        seen.append(("clear", key))

    @b.cluster.on("ping")
    async def ping(n: int) -> dict[str, int]:
        await trio.sleep(0.01)
        return {"pong": n + 1}

    assert await a.cluster.server_count() == 2
    await a.cluster.server_side_emit("cache:clear", "user:1")
    with trio.fail_after(5):
        while not seen:
            await trio.sleep(0.01)
    assert seen == [("clear", "user:1")]
    assert await a.cluster.server_side_emit_with_ack("ping", 1) == [{"pong": 2}]

    # A third node answers too, and leaves the count when it stops.
    async with trio.open_nursery() as inner:
        c = await start_node(inner, redis.url)
        c.cluster.on("ping", lambda n: {"pong": n * 10})
        assert await a.cluster.server_count() == 3
        answers = await a.cluster.server_side_emit_with_ack("ping", 2)
        assert sorted(answers, key=lambda answer: answer["pong"]) == [{"pong": 3}, {"pong": 20}]
        inner.cancel_scope.cancel()
    with trio.fail_after(5):
        while await a.cluster.server_count() != 2:
            await trio.sleep(0.02)

    with pytest.raises(ValueError, match="reserved"):
        await a.cluster.server_side_emit("disconnect")


async def test_a_namespace_made_later_is_shared_too(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a, b = await two_nodes(nursery, redis)
    for node in (a, b):
        admin = node.server.of("/admin")  # after the nodes started: subscribed on the fly
        admin.on("join", lambda socket, room: socket.join(room) or "joined")
    a1 = await Member.connect(nursery, a, "ops", namespace="/admin")
    b1 = await Member.connect(nursery, b, "ops", namespace="/admin")
    main = await Member.connect(nursery, b, "ops")

    with trio.fail_after(5):
        while await a.cluster.server_count("/admin") < 2:
            await trio.sleep(0.02)
    a.server.of("/admin").to("ops").emit("alert", "disk")
    assert await a1.expect("alert") == ["disk"]
    assert await b1.expect("alert") == ["disk"]
    await main.quiet()


async def test_a_node_that_does_not_answer_times_out_with_a_clear_error(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a, b = await two_nodes(nursery, redis, request_timeout=0.5)
    a1 = await Member.connect(nursery, a, "room")
    b1 = await Member.connect(nursery, b, "room")

    # A subscriber of the request channel that never answers, as a hung node would be.
    async with (
        coredis.Redis.from_url(redis.url) as client,
        client.pubsub(channels=["socket.io-request#/#"]),
    ):
        assert await a.cluster.server_count() == 3
        started = trio.current_time()
        with pytest.raises(ClusterTimeout) as caught:
            await a.server.to("room").everywhere.fetch_sockets()
        assert 0.4 < trio.current_time() - started < 3
        assert "1 of 2 other nodes answered within 0.5 s" in caught.value.message
        assert {s.id for s in caught.value.partial} == {a1.sid, b1.sid}

        with pytest.raises(ClusterTimeout) as counted:
            await a.server.to("room").everywhere.emit("hello")
        assert counted.value.partial == 2  # both sockets were reached all the same
        assert await a1.expect("hello") == []
        assert await b1.expect("hello") == []


async def test_everywhere_without_a_cluster_is_this_node(nursery: trio.Nursery) -> None:
    server = hub.Server()
    assert server.cluster is None
    server.on("join", lambda socket, *rooms: socket.join(*rooms) or "joined")
    address = await start_server(nursery, server)
    client, sid = await RawSio.connected(nursery, address)
    await client.send('420["join","room"]')
    assert await client.receive_text() == '430["joined"]'

    assert await server.to("room").everywhere.emit("hi", 1) == 1
    assert await client.receive_text() == '42["hi",1]'
    assert [s.id for s in await server.to("room").everywhere.fetch_sockets()] == [sid]
    await server.to("room").everywhere.join("more")
    assert server.to("more").sockets()[0].id == sid
    await server.to("more").everywhere.disconnect()
    assert await client.receive_text() == "41"
