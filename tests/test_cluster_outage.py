"""Redis going away and coming back under running hub nodes: a real redis-server, killed,
started again, paused.

Each test has a Redis of its own. What is checked is what users would notice: the sockets of a
node keep getting its events, a new client still connects, nothing from the outage arrives late,
cross-node delivery comes back by itself, the log says it once, the status says it, and shutting
down does not wait for Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.hub_nodes import CROSS_NODE, Member, Node, start_node
from support.redis_server import RedisServer, free_port, redis_binary, redis_server

from hub.cluster import ClusterUnavailable

FAST = {"reconnect_delay": 0.05, "max_reconnect_delay": 0.3, "connect_timeout": 1.0}
"""Reconnection settings that keep the tests short."""


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


async def until(condition: object, timeout: float = CROSS_NODE) -> None:
    """Wait until ``condition()`` is true."""
    assert callable(condition)
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


def outage_lines(caplog: pytest.LogCaptureFixture, node: Node, what: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "hub.cluster"
        and record.levelno == logging.WARNING
        and node.cluster.uid in record.getMessage()
        and what in record.getMessage()
    ]


async def test_redis_killed_and_started_again_mid_run(
    nursery: trio.Nursery, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub.cluster")
    a = await start_node(nursery, redis.url, **FAST)
    b = await start_node(nursery, redis.url, **FAST)
    a1 = await Member.connect(nursery, a, "room")
    b1 = await Member.connect(nursery, b, "room")
    a.server.to("room").emit("before", 0)
    assert await a1.expect("before") == [0]
    assert await b1.expect("before") == [0]

    redis.kill()
    await until(lambda: not a.cluster.connected and not b.cluster.connected)
    status = a.cluster.status
    assert status.error
    assert status.outages == 1

    # Node A keeps serving its own sockets, at once, and takes new clients.
    for n in range(20):
        assert a.server.to("room").emit("during", n) == 1
    for n in range(20):
        assert await a1.expect("during", timeout=1) == [n]
    late = await Member.connect(nursery, a, "room")
    a.server.to("room").emit("still", "here")
    assert await a1.expect("still") == ["here"]
    assert await late.expect("still") == ["here"]
    assert a.cluster.status.dropped >= 21
    with pytest.raises(ClusterUnavailable) as caught:
        await a.server.to("room").everywhere.emit("counted")
    assert caught.value.partial == 2  # a1 and late got it
    await a1.expect("counted")
    await late.expect("counted")
    await b1.quiet(0.5)  # nothing crossed

    redis.start()
    await until(lambda: a.cluster.connected and b.cluster.connected)
    assert a.cluster.status.error is None
    assert await a.cluster.server_count() == 2

    a.server.to("room").emit("after", 1)
    b.server.to("room").emit("back", 2)
    for member in (a1, late):
        assert await member.expect("after") == [1]
        assert await member.expect("back") == [2]
    # Node B gets what was sent after Redis came back (its own first), and nothing of the
    # outage, late.
    assert {(await b1.event())[0], (await b1.event())[0]} == {"after", "back"}
    await b1.quiet()

    # Said once per node when it went, once when it came back.
    for node in (a, b):
        assert len(outage_lines(caplog, node, "cannot be reached")) == 1
        assert len(outage_lines(caplog, node, "reachable again")) == 1


async def test_redis_down_at_start(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub.cluster")
    redis = RedisServer(redis_binary(), tmp_path)  # its port, nothing listening yet
    started = trio.current_time()
    a = await start_node(nursery, redis.url, **FAST)
    assert trio.current_time() - started < 3  # serving without waiting for Redis
    assert not a.cluster.connected
    a1 = await Member.connect(nursery, a, "room")
    a.server.to("room").emit("local", 1)
    assert await a1.expect("local") == [1]
    await trio.sleep(0.5)  # a few reconnection attempts
    assert len(outage_lines(caplog, a, "cannot be reached")) == 1

    try:
        redis.start()
        await until(lambda: a.cluster.connected)
        b = await start_node(nursery, redis.url, **FAST)
        b1 = await Member.connect(nursery, b, "room")
        a.server.to("room").emit("shared", 2)
        assert await b1.expect("shared") == [2]
        assert await a1.expect("shared") == [2]
    finally:
        redis.kill()


async def test_a_hung_redis_neither_blocks_emits_nor_delays_shutdown(
    redis: RedisServer,
) -> None:
    async with trio.open_nursery() as nursery:
        a = await start_node(nursery, redis.url, request_timeout=0.5, max_queued=5, **FAST)
        a1 = await Member.connect(nursery, a, "room")
        redis.pause()  # connections open, nothing answered
        try:
            started = trio.current_time()
            for n in range(50):
                assert a.server.to("room").emit("n", n) == 1
            assert trio.current_time() - started < 0.5
            for n in range(50):
                assert await a1.expect("n", timeout=1) == [n]
            assert a.cluster.status.queued <= 5  # the publish queue is bounded
            await until(lambda: not a.cluster.connected, timeout=5)
            assert a.cluster.status.dropped >= 45
            # Shutting down does not wait for the hung Redis (the client is closed first: its
            # own closing handshake is not what is measured).
            await a1.client.aclose()
            started = trio.current_time()
            nursery.cancel_scope.cancel()
        finally:
            redis.resume()
    assert trio.current_time() - started < 1.0


def test_a_cluster_refuses_nonsense_settings() -> None:
    from hub.cluster import RedisCluster

    with pytest.raises(ValueError, match="timeouts"):
        RedisCluster(f"redis://127.0.0.1:{free_port()}", request_timeout=0)
    with pytest.raises(ValueError, match="reconnect_delay"):
        RedisCluster("redis://127.0.0.1:1", reconnect_delay=2, max_reconnect_delay=1)


async def test_a_node_comes_back_after_many_outages(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    # coredis's pool does not take back the place of a connection that broke while lent out;
    # a link that lent its subscription and publisher connections from one pool ran out of
    # places after one to two outages each (64 places) and never came back.
    fast = {"reconnect_delay": 0.01, "max_reconnect_delay": 0.02, "connect_timeout": 1.0}
    a = await start_node(nursery, redis.url, **fast)
    b = await start_node(nursery, redis.url, **fast)
    b1 = await Member.connect(nursery, b, "room")
    for outage in range(70):
        redis.command("CLIENT", "KILL", "TYPE", "pubsub")
        redis.command("CLIENT", "KILL", "TYPE", "normal")
        await until(lambda: not a.cluster.connected, timeout=2)
        await until(lambda: a.cluster.connected and b.cluster.connected)
        a.server.to("room").emit("n", outage)  # the publisher finds its connection closed
    assert a.cluster.status.outages >= 70
    with trio.fail_after(CROSS_NODE):
        while await a.cluster.server_count() != 2:
            await trio.sleep(0.01)
    assert await a.server.to("room").everywhere.emit("still-here") == 1
    seen = []
    while (event := await b1.event())[0] != "still-here":
        seen.append(event)
    assert all(name == "n" for name, _ in seen)
