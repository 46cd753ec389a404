"""Hub nodes sharing a real Redis in one trio process, and raw clients of them, for tests.

:func:`start_node` serves a :class:`hub.Server` with a :class:`~hub.cluster.RedisCluster` on a
free loopback port. Its sockets join rooms when their client asks (``join`` / ``leave`` events,
acknowledged). :class:`Member` is a client made of raw WebSocket frames (:class:`RawSio`) that
reads each event off the wire, binary attachments included. :func:`redis_node_command` runs
``redis_node.mjs``: Node's own redis-emitter, or a socket.io server with the redis adapter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from interop.harness import CHECKOUT, node_command

import hub
from hub.cluster import RedisCluster
from support.sio import RawSio, start_server

__all__ = ["CROSS_NODE", "Member", "Node", "redis_node_command", "start_node"]

REDIS_NODE = Path(__file__).resolve().parent / "redis_node.mjs"

CROSS_NODE = 5.0
"""The longest a message may take from one node to another through Redis in a test."""


class Node:
    """A running hub server of the cluster: ``server``, its ``cluster`` and ``address``."""

    def __init__(self, server: hub.Server, address: str) -> None:
        self.server = server
        self.address = address
        assert server.cluster is not None
        self.cluster: RedisCluster = server.cluster


def _rooms_server(cluster: RedisCluster) -> hub.Server:
    server = hub.Server(cluster=cluster)

    @server.on("join")
    def join(socket: hub.Socket, *rooms: str) -> str:
        socket.join(*rooms)
        return "joined"

    @server.on("leave")
    def leave(socket: hub.Socket, *rooms: str) -> str:
        socket.leave(*rooms)
        return "left"

    return server


async def start_node(nursery: trio.Nursery, redis_url: str, **options: Any) -> Node:
    """Serve a node with a cluster on ``redis_url`` (``options`` go to RedisCluster), connected
    (or not, when Redis cannot be reached) when it returns."""
    server = _rooms_server(RedisCluster(redis_url, **options))
    address = await start_server(nursery, server)
    return Node(server, address)


def _fill(value: Any, attachments: list[bytes]) -> Any:
    if isinstance(value, list):
        return [_fill(item, attachments) for item in value]
    if isinstance(value, dict):
        if value.get("_placeholder") is True and isinstance(value.get("num"), int):
            return attachments[value["num"]]
        return {key: _fill(item, attachments) for key, item in value.items()}
    return value


class Member:
    """A raw WebSocket client of one node, in the rooms it asked for."""

    def __init__(self, client: RawSio, sid: str, namespace: str = "/") -> None:
        self.client = client
        self.sid = sid
        self.prefix = "" if namespace == "/" else namespace + ","
        self._acks = 0

    @classmethod
    async def connect(
        cls, nursery: trio.Nursery, node: Node, *rooms: str, namespace: str = "/"
    ) -> Member:
        client, sid = await RawSio.connected(nursery, node.address, namespace)
        member = cls(client, sid, namespace)
        if rooms:
            await member.join(*rooms)
        return member

    async def ask(self, event: str, *args: Any) -> Any:
        """Emit an event with an ack id and wait for the ack; returns its arguments."""
        ack = self._acks
        self._acks += 1
        await self.client.send(f"42{self.prefix}{ack}" + json.dumps([event, *args]))
        answer = await self.client.receive_text()
        assert answer.startswith(f"43{self.prefix}{ack}["), answer
        return json.loads(answer[len(f"43{self.prefix}{ack}") :])

    async def join(self, *rooms: str) -> None:
        assert await self.ask("join", *rooms) == ["joined"]

    async def leave(self, *rooms: str) -> None:
        assert await self.ask("leave", *rooms) == ["left"]

    async def event(self, timeout: float = CROSS_NODE) -> tuple[str, list[Any]]:
        """The next event from the server: its name and arguments (bytes put back in place)."""
        text = await self.client.receive_text(timeout)
        if text.startswith("42" + self.prefix):
            data = json.loads(text[2 + len(self.prefix) :])
        else:
            assert text.startswith("45"), f"not an event: {text!r}"
            count, _, rest = text[2:].partition("-")
            rest = rest.removeprefix(self.prefix)
            attachments = []
            for _ in range(int(count)):
                attachment = await self.client.receive(timeout)
                assert isinstance(attachment, bytes), attachment
                attachments.append(attachment)
            data = _fill(json.loads(rest), attachments)
        assert isinstance(data, list), text
        assert isinstance(data[0], str), text
        return data[0], data[1:]

    async def expect(self, name: str, timeout: float = CROSS_NODE) -> list[Any]:
        """The arguments of the next event, which must be ``name``."""
        got, args = await self.event(timeout)
        assert got == name, f"expected {name!r}, got {got!r} {args!r}"
        return args

    async def quiet(self, seconds: float = 0.3) -> None:
        """Nothing more arrives within ``seconds``."""
        await self.client.nothing_for(seconds)


def redis_node_command() -> list[str]:
    """The command that runs ``redis_node.mjs`` (Node's redis-emitter or a socket.io server with
    the redis adapter); skips, or fails under HUB_REQUIRE_ALL=1, without node or its packages."""
    command = node_command()  # node and socket.io-client
    for package in ("@socket.io/redis-adapter", "@socket.io/redis-emitter", "redis", "socket.io"):
        if not (CHECKOUT / "node_modules" / package / "package.json").exists():
            reason = f"the npm package {package} is not installed (run `make install`)"
            if os.environ.get("HUB_REQUIRE_ALL") == "1":
                pytest.fail(f"{reason} (required: HUB_REQUIRE_ALL=1)", pytrace=False)
            pytest.skip(reason)
    return [command[0], str(REDIS_NODE)]
