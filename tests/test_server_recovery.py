"""Connection state recovery with the official client, socket.io-client@4 in Node.

A client whose connection drops and comes back within the maximum disconnection duration gets
the same socket id, rooms and data (``socket.recovered`` true on both sides) and every event it
missed, in order; past that duration, or after a final disconnect, it starts afresh.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from interop.harness import (
    CONNECT_TIMEOUT,
    ClientProcess,
    Seen,
    each_server_mode,
    node_client,
    node_command,
    serve,
)

import hub

FAST_RECONNECT: dict[str, Any] = {"reconnectionDelay": 100, "reconnectionDelayMax": 200}
TRANSPORTS = [
    pytest.param(["websocket"], id="websocket"),
    pytest.param(["polling"], id="polling"),
]

_server_mode = each_server_mode(node_command)


def recovering_server(seen: Seen, **recovery: Any) -> hub.Server:
    server = hub.Server(recovery=hub.RecoveryOptions(**recovery))

    @server.use
    def middleware(socket: hub.Socket, auth: dict[str, Any]) -> None:
        seen.add("middleware", socket.recovered)

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        seen.add("connect", socket)
        if not socket.recovered:
            socket.join("news")
            socket.data["joined"] = len(seen.get("connect"))

    @server.on("disconnect")
    def disconnect(socket: hub.Socket, reason: str) -> None:
        seen.add("disconnect", reason)

    return server


async def wait_events(client: ClientProcess, name: str, count: int) -> None:
    while len(client.events(name)) < count:
        with trio.fail_after(CONNECT_TIMEOUT):
            await client._changed.wait()


async def connects(client: ClientProcess, count: int) -> list[dict[str, Any]]:
    while len(client.seen("connect")) < count:
        with trio.fail_after(CONNECT_TIMEOUT):
            await client._changed.wait()
    return client.seen("connect")


def values(client: ClientProcess, name: str) -> list[Any]:
    """The first argument of each ``name`` event the client got (the offset follows it)."""
    return [record["args"][0] for record in client.events(name)]


async def _drop_and_emit_meanwhile(
    server: hub.Server, seen: Seen, client: ClientProcess, drop: str
) -> hub.Socket:
    first: hub.Socket = (await seen.wait("connect"))[0]
    await client.expect("connect", timeout=CONNECT_TIMEOUT)
    server.to("news").emit("news", 1)
    await client.expect("event", name="news")
    if drop == "server":
        first.disconnect(close=True)  # the server ends the connection ("forced server close")
    else:
        await client.send(op="drop")  # as a network failure would, from the client's side
    await seen.wait("disconnect")
    # While it is away: what it must get back, in order, and what it must not.
    server.to("news").emit("news", 2)
    server.to("elsewhere").emit("news", "not for it")
    server.to("news").except_(first.id).emit("news", "not for it either")
    server.to("news").volatile.emit("news", "volatile: never replayed")
    server.to("news").emit("news", 3)
    server.emit("everyone", "hello")
    return first


@pytest.mark.parametrize("transports", TRANSPORTS)
@pytest.mark.parametrize("drop", ["server", "client"])
async def test_a_short_disconnection_is_recovered_with_what_was_missed(
    nursery: trio.Nursery, transports: list[str], drop: str
) -> None:
    seen = Seen()
    server = recovering_server(seen)
    url = await serve(nursery, server)
    async with node_client(nursery, url, transports=transports, **FAST_RECONNECT) as client:
        first = await _drop_and_emit_meanwhile(server, seen, client, drop)
        second = (await seen.wait("connect", 2))[1]
        opened = await connects(client, 2)
        assert second.recovered
        assert second.id == first.id
        assert second.rooms == {first.id, "news"}
        assert second.data == {"joined": 1}
        assert opened[1]["id"] == opened[0]["id"]
        assert opened[1]["recovered"] is True
        await client.expect("event", name="everyone")
        server.to("news").emit("news", 4)
        await wait_events(client, "news", 4)
        assert values(client, "news") == [1, 2, 3, 4]
        assert values(client, "everyone") == ["hello"]
        assert seen.get("middleware") == [False]  # socket.io's default: skipped on recovery
    reason = seen.get("disconnect")[0]
    assert reason == ("forced server close" if drop == "server" else "transport close")


async def test_direct_emits_are_replayed_too(nursery: trio.Nursery) -> None:
    seen = Seen()
    server = recovering_server(seen)
    url = await serve(nursery, server)
    async with node_client(nursery, url, transports=["websocket"], **FAST_RECONNECT) as client:
        first = (await seen.wait("connect"))[0]
        first.emit("direct", 1)
        await client.expect("event", name="direct")
        first.disconnect(close=True)
        await seen.wait("disconnect")
        first.emit("direct", 2)  # to the socket object the application kept: replayed
        server.to(first.id).emit("direct", 3)
        second = (await seen.wait("connect", 2))[1]
        second.emit("direct", 4)
        await wait_events(client, "direct", 4)
        assert values(client, "direct") == [1, 2, 3, 4]


async def test_past_the_maximum_duration_the_client_starts_afresh(nursery: trio.Nursery) -> None:
    seen = Seen()
    server = recovering_server(seen, max_disconnection_duration=0.3)
    url = await serve(nursery, server)
    slow: dict[str, Any] = {
        "reconnectionDelay": 800,
        "reconnectionDelayMax": 800,
        "randomizationFactor": 0,
    }
    async with node_client(nursery, url, transports=["websocket"], **slow) as client:
        first = (await seen.wait("connect"))[0]
        server.to("news").emit("news", 1)
        await client.expect("event", name="news")
        first.disconnect(close=True)
        await seen.wait("disconnect")
        server.to("news").emit("news", "missed for good")
        second = (await seen.wait("connect", 2, timeout=CONNECT_TIMEOUT))[1]
        opened = await connects(client, 2)
        assert not second.recovered
        assert second.id != first.id
        assert opened[1]["recovered"] is False
        assert second.data == {"joined": 2}
        assert seen.get("middleware") == [False, False]
        server.to("news").emit("news", 2)
        await wait_events(client, "news", 2)
        assert values(client, "news") == [1, 2]


async def test_middlewares_run_on_recovery_when_asked(nursery: trio.Nursery) -> None:
    seen = Seen()
    server = recovering_server(seen, skip_middlewares=False)
    url = await serve(nursery, server)
    async with node_client(nursery, url, transports=["websocket"], **FAST_RECONNECT) as client:
        first = (await seen.wait("connect"))[0]
        server.to("news").emit("news", 1)
        await client.expect("event", name="news")
        first.disconnect(close=True)
        second = (await seen.wait("connect", 2))[1]
        assert second.recovered
        assert seen.get("middleware") == [False, True]


async def test_a_final_disconnect_is_not_recovered(nursery: trio.Nursery) -> None:
    seen = Seen()
    server = recovering_server(seen)
    url = await serve(nursery, server)
    async with node_client(nursery, url, transports=["websocket"], **FAST_RECONNECT) as client:
        first = (await seen.wait("connect"))[0]
        server.to("news").emit("news", 1)
        await client.expect("event", name="news")
        await client.send(op="close")
        assert await seen.wait("disconnect") == ["client namespace disconnect"]
    assert server.main.adapter.recovery is not None
    assert server.main.adapter.recovery.saved() == []
    assert first.id not in server.main.sockets


async def test_without_recovery_no_offset_is_added(nursery: trio.Nursery) -> None:
    server = hub.Server()
    seen = Seen()

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        seen.add("connect", socket)

    url = await serve(nursery, server)
    async with node_client(nursery, url, transports=["websocket"]) as client:
        socket = (await seen.wait("connect"))[0]
        socket.emit("direct", 1)
        server.emit("all", 2)
        await wait_events(client, "all", 1)
        assert [r["args"] for r in client.events()] == [[1], [2]]
        assert socket.pid is None
