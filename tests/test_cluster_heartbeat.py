"""Hub nodes that know each other by their heartbeats, over a real redis-server.

``PUBSUB NUMSUB`` does not count a node that is reconnecting to Redis; the heartbeats do
(:mod:`hub.cluster.peers`). What a user would notice is checked: a counted emit that a node
reconnecting could not have received is said incomplete (quickly, with what was reached), not
complete; once that node is back the same emit reaches its sockets and is complete; a node that
stops is forgotten at once, one that vanishes after the heartbeat timeout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import coredis
import pytest
import trio
from support.hub_nodes import Member, Node, start_node
from support.redis_server import RedisServer, redis_server

from hub.cluster import ClusterIncomplete, RedisCluster
from hub.cluster.wire import HeartbeatType, encode_heartbeat

FAST = {"reconnect_delay": 0.05, "max_reconnect_delay": 0.3, "connect_timeout": 1.0}
SLOW_BACK = {"reconnect_delay": 3.0, "max_reconnect_delay": 3.0, "connect_timeout": 1.0}
"""A node that takes 2.4 to 3.6 s to subscribe again after losing its subscription."""


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


def known(node: Node, namespace: str = "/") -> frozenset[str]:
    return node.cluster.link(namespace).peers.alive(trio.current_time())


async def until_known(node: Node, *others: Node) -> None:
    with trio.fail_after(5):
        while known(node) != {other.cluster.uid for other in others}:
            await trio.sleep(0.01)


async def test_nodes_know_each_other_at_once(nursery: trio.Nursery, redis: RedisServer) -> None:
    a = await start_node(nursery, redis.url)
    b = await start_node(nursery, redis.url)
    # The newcomer's INITIAL_HEARTBEAT is answered at once: no wait for the 5 s interval.
    with trio.fail_after(2):
        await until_known(a, b)
        await until_known(b, a)
    # A namespace made later is announced as soon as it is subscribed to.
    for node in (a, b):
        node.server.of("/admin")
    with trio.fail_after(2):
        while known(a, "/admin") != {b.cluster.uid} or known(b, "/admin") != {a.cluster.uid}:
            await trio.sleep(0.01)


async def test_an_emit_a_reconnecting_node_cannot_have_is_said_incomplete(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a = await start_node(nursery, redis.url, **FAST)
    b = await start_node(nursery, redis.url, **SLOW_BACK)
    a1 = await Member.connect(nursery, a, "user:1")
    b1 = await Member.connect(nursery, b, "user:1")
    await until_known(a, b)
    assert await a.server.to("user:1").everywhere.emit("before") == 2
    assert await b1.expect("before") == []
    assert await a1.expect("before") == []

    # Every subscription is cut (as when Redis restarts): node A is back at once, B seconds later.
    redis.command("CLIENT", "KILL", "TYPE", "pubsub")
    with trio.fail_after(5):
        while a.cluster.connected or b.cluster.connected:
            await trio.sleep(0.005)
        while not a.cluster.connected:
            await trio.sleep(0.005)
    assert not b.cluster.connected

    # NUMSUB counts A alone; A still counts B, and says the emit did not reach it.
    assert await a.cluster.server_count() == 2
    started = trio.current_time()
    with pytest.raises(ClusterIncomplete) as caught:
        await a.server.to("user:1").everywhere.emit("while-b-reconnects")
    assert trio.current_time() - started < 2.5  # at once, not after the 5 s request timeout
    assert caught.value.partial == 1  # a1, on this node
    assert caught.value.missing == {b.cluster.uid}
    assert b.cluster.uid in caught.value.message
    assert await a1.expect("while-b-reconnects") == []

    # Once B is back, the same emit reaches its tab and is complete.
    with trio.fail_after(6):
        while not b.cluster.connected:
            await trio.sleep(0.01)
    assert await a.server.to("user:1").everywhere.emit("after") == 2
    assert await a1.expect("after") == []
    assert await b1.expect("after") == []  # and nothing of the emit it could not have
    await b1.quiet()


async def test_a_node_that_stops_is_forgotten_at_once(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a = await start_node(nursery, redis.url)
    async with trio.open_nursery() as inner:
        b = await start_node(inner, redis.url)
        b1 = await Member.connect(inner, b, "room")
        await until_known(a, b)
        assert await a.server.to("room").everywhere.emit("hello") == 1
        assert await b1.expect("hello") == []
        inner.cancel_scope.cancel()  # the server stops: its cluster says goodbye
    with trio.fail_after(2):
        while known(a):
            await trio.sleep(0.01)
    assert await a.cluster.server_count() == 1
    assert await a.server.to("room").everywhere.emit("alone") == 0  # complete: nobody else


async def test_a_silent_node_is_counted_until_the_heartbeat_timeout(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a = await start_node(nursery, redis.url, heartbeat_interval=0.2, heartbeat_timeout=1.0)
    # A node that said it is there, then vanished without a goodbye (killed) before it could
    # subscribe again: only its heartbeat was ever on Redis.
    async with coredis.Redis.from_url(redis.url) as client:
        heartbeat = encode_heartbeat("Gone42", HeartbeatType.HEARTBEAT)
        await client.publish("socket.io-heartbeat#/#", heartbeat)
    with trio.fail_after(2):
        while known(a) != {"Gone42"}:
            await trio.sleep(0.01)
    with pytest.raises(ClusterIncomplete):
        await a.server.to("room").everywhere.emit("x")
    with trio.fail_after(3):
        while known(a):
            await trio.sleep(0.05)
    assert await a.server.to("room").everywhere.emit("x") == 0


def test_heartbeat_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        RedisCluster("redis://127.0.0.1:1", heartbeat_interval=5, heartbeat_timeout=5)
    with pytest.raises(ValueError, match="heartbeat"):
        RedisCluster("redis://127.0.0.1:1", heartbeat_interval=0)
