"""The two ends of a cross-node message, over a real redis-server: the publisher of one node and
the bounded backlog of another.

- A burst published by one node reaches the other node's socket whole and in order (the
  publish queue is empty right after, nothing dropped), and operations that wait for their
  message keep their place among the broadcasts.
- A node that falls far behind what Redis sends it drops broadcasts beyond ``max_backlog``,
  counts them, says so once, catches up, and keeps answering requests.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from support.hub_nodes import Member, Node, start_node
from support.redis_server import RedisServer, redis_server

from hub.app.metrics import HubCollector, cluster_state
from hub.cluster.wire import EMITTER_UID, encode_broadcast
from hub.protocol import Event


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


async def two_nodes(
    nursery: trio.Nursery, redis: RedisServer, **b_options: Any
) -> tuple[Node, Node, Member]:
    """Node a, node b (``b_options`` go to its cluster) with a member of ``room``, once each
    node counts both."""
    b = await start_node(nursery, redis.url, **b_options)
    a = await start_node(nursery, redis.url)
    b1 = await Member.connect(nursery, b, "room")
    with trio.fail_after(5):
        while await a.cluster.server_count() != 2:
            await trio.sleep(0.01)
    return a, b, b1


async def test_a_burst_arrives_whole_and_in_order(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a, b, b1 = await two_nodes(nursery, redis)

    count = 3000
    for n in range(count):
        a.server.to("room").emit("n", n)
        if n == count // 2:
            # An operation that waits for its message, in the middle of the burst.
            await a.server.to("room").everywhere.join("joined")
    for n in range(count):
        assert await b1.expect("n") == [n]
    # Joined after the first half (the join came after them on the same connection).
    assert {s.id for s in await a.server.to("joined").everywhere.fetch_sockets()} == {b1.sid}
    status = a.cluster.status
    assert status.queued == 0
    assert status.dropped == 0
    assert b.cluster.status.dropped_received == 0


def publish_all(redis: RedisServer, messages: list[tuple[str, bytes]]) -> None:
    """Publish ``messages`` from outside the nodes, in one go, while this thread (and so every
    node of the test's trio loop) waits: they pile up for the subscribers."""
    lines = []
    for channel, payload in messages:
        parts = [b"PUBLISH", channel.encode(), payload]
        lines.append(f"*{len(parts)}\r\n".encode())
        for part in parts:
            lines.append(b"$%d\r\n%s\r\n" % (len(part), part))
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    subprocess.run(
        [cli, "-p", str(redis.port), "--pipe"], input=b"".join(lines), check=True, timeout=30,
        capture_output=True,
    )  # fmt: skip


async def test_a_node_far_behind_drops_broadcasts_says_so_and_catches_up(
    nursery: trio.Nursery, redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hub.cluster")
    a, b, b1 = await two_nodes(nursery, redis, max_backlog=20)

    count = 600
    burst = [
        ("socket.io#/#room#", encode_broadcast(EMITTER_UID, Event("n", (n,)), ["room"], []))
        for n in range(count)
    ]
    publish_all(redis, burst)
    publish_all(redis, [("socket.io#/#room#", encode_broadcast(EMITTER_UID, Event("end"), [], []))])

    received = []
    while True:
        name, args = await b1.event()
        if name == "end":
            break
        received.append(args[0])
    status = b.cluster.status
    # What was delivered is in order, each once; the rest was dropped and counted.
    assert received == sorted(set(received))
    assert status.dropped_received > 0
    assert len(received) + status.dropped_received == count
    assert len(received) < count
    assert status.backlog <= 20
    # Both are on the metrics page.
    state = cluster_state(b.cluster)
    assert state is not None
    samples = {s.name: s.value for f in HubCollector._cluster(state) for s in f.samples}
    assert samples["hub_cluster_messages_dropped_received_total"] == status.dropped_received
    assert samples["hub_cluster_receive_backlog"] == status.backlog
    warnings = [r.getMessage() for r in caplog.records if b.cluster.uid in r.getMessage()]
    assert len([w for w in warnings if "messages behind Redis" in w]) == 1, warnings
    assert len([w for w in warnings if "caught up" in w]) == 1, warnings

    # Caught up: broadcasts arrive again, and requests were never dropped.
    assert await a.server.to("room").everywhere.emit("after") == 1
    assert await b1.expect("after") == []
    assert b.cluster.connected
    assert b.cluster.status.dropped_received == status.dropped_received
