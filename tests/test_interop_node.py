"""hub against the official Node client, socket.io-client@4, run as a subprocess.

Each test starts a hub server on a loopback port, drives ``tests/interop/node_client.mjs`` and
asserts on what the client printed it observed (and on what the server's handlers saw).
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
    plain,
    serve,
    wire_bytes,
)
from interop.servers import ALL_BYTES, add_custom_namespace, echo_server, refusing_server

import hub

SINGLE_TRANSPORTS = [
    pytest.param(["websocket"], id="websocket"),
    pytest.param(["polling"], id="polling"),
]

# Short reconnection delays, so that a reconnection (or its absence) shows quickly.
FAST_RECONNECT: dict[str, Any] = {"reconnectionDelay": 100, "reconnectionDelayMax": 200}

_server_mode = each_server_mode(node_command)


# -- transports --------------------------------------------------------------------------------


@pytest.mark.parametrize("transports", SINGLE_TRANSPORTS)
async def test_single_transport(nursery: trio.Nursery, transports: list[str]) -> None:
    seen = Seen()
    server = echo_server(seen)

    @server.on("hello")
    def hello(socket: hub.Socket, name: str) -> None:
        socket.emit("welcome", f"hi {name}", {"transport": socket.transport})

    url = await serve(nursery, server)
    async with node_client(nursery, url, transports=transports) as client:
        connected = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        assert connected["transport"] == transports[0]
        (socket,) = await seen.wait("connect")
        assert connected["id"] == socket.id
        assert socket.transport == transports[0]

        await client.send(op="emit", event="hello", args=["node"])
        welcome = await client.expect("event", name="welcome")
        assert welcome["args"] == ["hi node", {"transport": transports[0]}]

        await client.send(op="emit", event="echo", args=[1, "two", {"three": [3]}], ack=True, tag=1)
        ack = await client.expect("ack", tag=1)
        assert ack["args"] == [1, "two", {"three": [3]}]
        assert seen.get("echo") == [(transports[0], (1, "two", {"three": [3]}))]

        await client.send(op="state", tag="end")
        state = await client.expect("state", tag="end")
        assert state["transport"] == transports[0]
        assert state["connected"] is True
        assert not client.seen("upgrade")
        assert not client.seen("disconnect")

        # The client leaves: socket.io-client sends DISCONNECT, then closes the connection.
        await client.send(op="close")
        await client.expect("closed")
        assert await seen.wait("disconnect") == [(socket.id, "client namespace disconnect")]


async def test_default_transports_upgrade_to_websocket(nursery: trio.Nursery) -> None:
    seen = Seen()
    url = await serve(nursery, echo_server(seen))
    async with node_client(nursery, url) as client:
        opened = await client.expect("open", timeout=CONNECT_TIMEOUT)
        assert opened["transport"] == "polling"
        await client.expect("connect")
        upgrade = await client.expect("upgrade")
        assert upgrade == {"ev": "upgrade", "transport": "websocket", "current": "websocket"}

        # After the upgrade, an event arrives over the WebSocket.
        await client.send(op="emit", event="echo", args=["after upgrade"], ack=True, tag=1)
        assert (await client.expect("ack", tag=1))["args"] == ["after upgrade"]
        assert seen.get("echo") == [("websocket", ("after upgrade",))]
        (socket,) = seen.get("connect")
        assert socket.transport == "websocket"

        await client.send(op="state", tag="end")
        state = await client.expect("state", tag="end")
        assert state["transport"] == "websocket"
        assert state["id"] == socket.id
        assert not client.seen("disconnect")


# -- binary ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transports", SINGLE_TRANSPORTS)
async def test_binary_both_ways(nursery: trio.Nursery, transports: list[str]) -> None:
    seen = Seen()
    server = echo_server(seen)

    @server.on("send-binary")
    def send_binary(socket: hub.Socket) -> None:
        socket.emit(
            "binary",
            {"nested": {"data": ALL_BYTES, "list": [b"", b"\x00", "text"]}, "n": 1},
            b"\xff\xfe",
        )

    url = await serve(nursery, server)
    async with node_client(nursery, url, transports=transports) as client:
        await client.expect("connect", timeout=CONNECT_TIMEOUT)

        # Client to server and back: a Buffer, a Uint8Array nested in an object, an empty one.
        args = [
            wire_bytes(ALL_BYTES),
            {"inner": wire_bytes(b"\x00\x01\x02", "Uint8Array"), "s": "x"},
            wire_bytes(b""),
        ]
        await client.send(op="emit", event="echo", args=args, ack=True, tag="bin")
        ack = await client.expect("ack", tag="bin")
        assert plain(ack["args"]) == [ALL_BYTES, {"inner": b"\x00\x01\x02", "s": "x"}, b""]
        ((_transport, received),) = seen.get("echo")
        assert received == (ALL_BYTES, {"inner": b"\x00\x01\x02", "s": "x"}, b"")
        assert all(isinstance(part, bytes) for part in (received[0], received[1]["inner"]))

        # Server to client: bytes nested in an object, and a top-level argument.
        await client.send(op="emit", event="send-binary")
        event = await client.expect("event", name="binary")
        assert plain(event["args"]) == [
            {"nested": {"data": ALL_BYTES, "list": [b"", b"\x00", "text"]}, "n": 1},
            b"\xff\xfe",
        ]
        # socket.io-client hands binary over as Node Buffers (or ArrayBuffers): never a string.
        assert event["args"][1]["$type"] in ("Buffer", "ArrayBuffer")


# -- acknowledgements --------------------------------------------------------------------------


@pytest.mark.parametrize("transports", SINGLE_TRANSPORTS)
async def test_acks_both_ways(nursery: trio.Nursery, transports: list[str]) -> None:
    seen = Seen()
    server = echo_server(seen)

    @server.on("sum")
    def add(socket: hub.Socket, a: int, b: int) -> int:
        return a + b

    @server.on("pair")
    async def pair(socket: hub.Socket, value: str) -> tuple[str, str]:
        await trio.lowlevel.checkpoint()
        return value, value.upper()

    @server.on("no-reply")
    def no_reply(socket: hub.Socket) -> None:
        return None

    url = await serve(nursery, server)
    async with node_client(nursery, url, transports=transports) as client:
        await client.expect("connect", timeout=CONNECT_TIMEOUT)
        (socket,) = await seen.wait("connect")

        # Client asks, server acknowledges: callback and promise APIs, several ack arguments.
        await client.send(op="emit", event="sum", args=[2, 3], ack=True, tag="cb")
        await client.send(op="emitWithAck", event="sum", args=[40, 2], tag="promise", timeout=5000)
        await client.send(op="emit", event="pair", args=["ab"], ack=True, tag="pair")
        await client.send(op="emit", event="no-reply", ack=True, tag="empty")
        assert (await client.expect("ack", tag="cb"))["args"] == [5]
        assert (await client.expect("ack", tag="promise"))["args"] == [42]
        assert (await client.expect("ack", tag="pair"))["args"] == ["ab", "AB"]
        assert (await client.expect("ack", tag="empty"))["args"] == []

        # Server asks, the client's handler answers through its callback.
        with trio.fail_after(8):
            answer = await socket.call("question", 41, {"b": "x"}, timeout=5)
        assert answer == (41, {"b": "x"})
        question = await client.expect("event", name="question")
        assert question["ack"] is True

        # Two calls at once: each gets its own answer.
        results: dict[str, tuple[Any, ...]] = {}

        async def ask(tag: str) -> None:
            results[tag] = await socket.call("question", tag, timeout=5)

        with trio.fail_after(8):
            async with trio.open_nursery() as calls:
                calls.start_soon(ask, "one")
                calls.start_soon(ask, "two")
        assert results == {"one": ("one",), "two": ("two",)}


async def test_server_call_times_out_when_client_does_not_answer(nursery: trio.Nursery) -> None:
    seen = Seen()
    url = await serve(nursery, echo_server(seen))
    async with node_client(
        nursery, url, transports=["websocket"], reply={"ignore": "ignore"}
    ) as client:
        await client.expect("connect", timeout=CONNECT_TIMEOUT)
        (socket,) = await seen.wait("connect")
        with trio.fail_after(5):
            start = trio.current_time()
            with pytest.raises(hub.AckTimeout):
                await socket.call("ignore", 1, timeout=0.5)
            elapsed = trio.current_time() - start
        assert 0.5 <= elapsed < 4
        event = await client.expect("event", name="ignore")
        assert event["ack"] is True
        assert event["args"] == [1]
        # The connection is still fine afterwards.
        assert await socket.call("answered", 2, timeout=5) == (2,)


# -- namespaces --------------------------------------------------------------------------------


@pytest.mark.parametrize("transports", SINGLE_TRANSPORTS)
async def test_custom_namespace(nursery: trio.Nursery, transports: list[str]) -> None:
    seen = Seen()
    server = echo_server(seen)
    add_custom_namespace(server, seen)

    url = await serve(nursery, server)
    async with node_client(nursery, url + "/custom", transports=transports) as client:
        connected = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        (socket,) = await seen.wait("custom-connect")
        assert connected["id"] == socket.id
        assert socket.namespace.name == "/custom"
        assert (await client.expect("event", name="where"))["args"] == ["/custom"]

        await client.send(op="emit", event="echo", args=[1], ack=True, tag=1)
        assert (await client.expect("ack", tag=1))["args"] == ["custom", 1]
        assert seen.get("custom-echo") == [(1,)]
        # Only /custom was joined: the main namespace saw nothing.
        assert seen.get("connect") == []
        assert seen.get("echo") == []


async def test_unknown_namespace_is_refused(nursery: trio.Nursery) -> None:
    seen = Seen()
    url = await serve(nursery, echo_server(seen))
    async with node_client(nursery, url + "/nope", transports=["websocket"]) as client:
        error = await client.expect("connect_error", timeout=CONNECT_TIMEOUT)
        assert error["message"] == "Invalid namespace"
        # A refusal by the server is final: the client does not try again by itself.
        assert error["active"] is False
    assert not client.seen("connect")


# -- connecting: auth and refusal ---------------------------------------------------------------


@pytest.mark.parametrize("transports", SINGLE_TRANSPORTS)
async def test_connect_refused_with_data(nursery: trio.Nursery, transports: list[str]) -> None:
    attempts: list[dict[str, Any]] = []
    url = await serve(nursery, refusing_server(attempts))
    async with node_client(nursery, url, transports=transports, auth={"token": "bad"}) as client:
        error = await client.expect("connect_error", timeout=CONNECT_TIMEOUT)
        assert error["message"] == "Not authorized"
        assert error["data"] == {"code": "X"}
        assert error["active"] is False
    assert attempts == [{"token": "bad"}]
    assert not client.seen("connect")


async def test_auth_payload(nursery: trio.Nursery) -> None:
    seen = Seen()
    server = echo_server(seen)
    url = await serve(nursery, server)
    auth = {"token": "abc", "nested": {"n": [1, 2]}}
    async with node_client(nursery, url, transports=["websocket"], auth=auth) as client:
        await client.expect("connect", timeout=CONNECT_TIMEOUT)
        assert await seen.wait("auth") == [auth]
        (socket,) = seen.get("connect")
        assert socket.handshake.auth == auth


async def test_no_auth_is_an_empty_dict(nursery: trio.Nursery) -> None:
    seen = Seen()
    url = await serve(nursery, echo_server(seen))
    async with node_client(nursery, url, transports=["websocket"]) as client:
        await client.expect("connect", timeout=CONNECT_TIMEOUT)
        assert await seen.wait("auth") == [{}]


# -- rooms -------------------------------------------------------------------------------------


async def test_rooms(nursery: trio.Nursery) -> None:
    seen = Seen()
    server = hub.Server()

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        for room in auth["rooms"]:
            socket.join(room)
        seen.add("connect", (auth["name"], socket))

    @server.on("shout")
    def shout(socket: hub.Socket, text: str) -> None:
        socket.to("r1").emit("shout", text)

    url = await serve(nursery, server)
    members = {"a": ["r1"], "b": ["r2"], "c": ["r1", "vip"]}
    async with (
        node_client(
            nursery,
            url,
            name="a",
            transports=["websocket"],
            auth={"name": "a", "rooms": members["a"]},
        ) as a,
        node_client(
            nursery,
            url,
            name="b",
            transports=["polling"],
            auth={"name": "b", "rooms": members["b"]},
        ) as b,
        node_client(
            nursery,
            url,
            name="c",
            transports=["websocket"],
            auth={"name": "c", "rooms": members["c"]},
        ) as c,
    ):
        clients = {"a": a, "b": b, "c": c}
        for client in clients.values():
            await client.expect("connect", timeout=CONNECT_TIMEOUT)
        sockets = dict(await seen.wait("connect", count=3))

        assert server.to("r1").emit("news", 1) == 2
        assert server.to("r1").except_("vip").emit("news", 2) == 1
        assert server.to("r1", "r2").emit("news", 3) == 3  # c is in r1 only once
        assert server.except_("r1").emit("news", 4) == 1
        assert sockets["b"].to("r1").emit("news", 5) == 2  # b is not in r1: no exclusion

        # a shouts to r1: c gets it, a (the sender, a member) does not.
        await a.send(op="emit", event="shout", args=["from a"])
        await c.expect("event", name="shout")

        # Events to one connection arrive in order: after "end", nothing else is on its way.
        assert server.emit("end") == 3
        for client in clients.values():
            await client.expect("event", name="end")

        def received(client: ClientProcess) -> list[list[Any]]:
            return [
                [line["name"], *line["args"]] for line in client.events() if line["name"] != "end"
            ]

        assert received(a) == [["news", 1], ["news", 2], ["news", 3], ["news", 5]]
        assert received(b) == [["news", 3], ["news", 4]]
        assert received(c) == [["news", 1], ["news", 3], ["news", 5], ["shout", "from a"]]


# -- disconnection -----------------------------------------------------------------------------


@pytest.mark.parametrize("transports", SINGLE_TRANSPORTS)
async def test_server_disconnect_is_final(nursery: trio.Nursery, transports: list[str]) -> None:
    seen = Seen()
    url = await serve(nursery, echo_server(seen))
    async with node_client(nursery, url, transports=transports, **FAST_RECONNECT) as client:
        await client.expect("connect", timeout=CONNECT_TIMEOUT)
        (socket,) = await seen.wait("connect")
        socket.disconnect()
        disconnect = await client.expect("disconnect")
        assert disconnect["reason"] == "io server disconnect"
        assert disconnect["active"] is False
        assert await seen.wait("disconnect") == [(socket.id, "server namespace disconnect")]

        # Reconnection would start within ~200 ms; give it ten times that to show up.
        await trio.sleep(2)
        await client.send(op="state", tag="after")
        state = await client.expect("state", tag="after")
        assert state["connected"] is False
        assert state["active"] is False
    assert not client.seen("reconnect_attempt")
    assert len(client.seen("connect")) == 1
    assert len(seen.get("connect")) == 1


async def test_disconnect_in_the_connect_handler(nursery: trio.Nursery) -> None:
    """``socket.disconnect()`` in the connect handler is not lost.

    In socket.io the "connection" handler may call ``socket.disconnect()``: the client gets its
    CONNECT, then a DISCONNECT ("io server disconnect"), and stays away. Emits made in hub's
    connect handler are held until the CONNECT is sent; a disconnect must not be dropped.
    """
    server = hub.Server()

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        socket.emit("hello")
        socket.disconnect()

    url = await serve(nursery, server)
    async with node_client(nursery, url, transports=["websocket"], reconnection=False) as client:
        await client.expect("connect", timeout=CONNECT_TIMEOUT)
        await client.expect("event", name="hello")
        disconnect = await client.expect("disconnect")
        assert disconnect["reason"] == "io server disconnect"


@pytest.mark.parametrize("transports", SINGLE_TRANSPORTS)
async def test_engine_close_makes_the_client_reconnect(
    nursery: trio.Nursery, transports: list[str]
) -> None:
    seen = Seen()
    url = await serve(nursery, echo_server(seen))
    async with node_client(nursery, url, transports=transports, **FAST_RECONNECT) as client:
        first = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        (socket,) = await seen.wait("connect")
        socket.disconnect(close=True)

        disconnect = await client.expect("disconnect")
        assert disconnect["active"] is True
        (gone,) = await seen.wait("disconnect")
        assert gone[0] == socket.id

        await client.expect("reconnect_attempt")
        second = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        await client.expect("reconnect")
        sockets = await seen.wait("connect", count=2)
        assert second["id"] != first["id"]
        assert second["id"] == sockets[1].id
        assert sockets[1].client is not socket.client

        # The new connection works.
        await client.send(op="emit", event="echo", args=["again"], ack=True, tag=1)
        assert (await client.expect("ack", tag=1))["args"] == ["again"]

    # socket.io-client reports an Engine.IO close packet from the server as "transport close"
    # (engine.io's polling transport holds the close until the next GET: never a 400).
    assert disconnect["reason"] == "transport close", client.report()


@pytest.mark.parametrize("transports", SINGLE_TRANSPORTS)
async def test_events_sent_before_an_engine_close_are_delivered(
    nursery: trio.Nursery, transports: list[str]
) -> None:
    """What the server sent before closing reaches the client first ("you are kicked: why").

    engine.io's ``Socket.close()`` waits for its write buffer to drain before it closes the
    transport; over polling the close packet goes out after the buffered packets.
    """
    seen = Seen()
    server = echo_server(seen)

    @server.on("kick")
    def kick(socket: hub.Socket) -> None:
        socket.emit("bye", "token expired")
        socket.emit("bye", {"code": 4001})
        socket.disconnect(close=True)

    url = await serve(nursery, server)
    async with node_client(nursery, url, transports=transports, reconnection=False) as client:
        await client.expect("connect", timeout=CONNECT_TIMEOUT)
        await client.send(op="emit", event="kick")
        disconnect = await client.expect("disconnect")
        assert disconnect["reason"] == "transport close"
        byes = [line["args"] for line in client.events("bye")]
        assert byes == [["token expired"], [{"code": 4001}]]
        # ... and before the disconnect.
        assert client.lines.index(disconnect) > client.lines.index(client.events("bye")[-1])


# -- polling under load ------------------------------------------------------------------------

BURST = 200


@pytest.mark.parametrize("when", ["in-connect-handler", "after-connect"])
async def test_polling_burst_arrives_complete_and_in_order(
    nursery: trio.Nursery, when: str
) -> None:
    server = hub.Server()

    def burst(socket: hub.Socket) -> None:
        for n in range(BURST):
            if n % 10 == 9:
                socket.emit("burst", n, {"bytes": n.to_bytes(2, "big")})
            else:
                socket.emit("burst", n, "x" * (n % 7))
        socket.emit("burst-end")

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        if when == "in-connect-handler":
            burst(socket)

    @server.on("go")
    def go(socket: hub.Socket) -> None:
        burst(socket)

    url = await serve(nursery, server)
    async with node_client(nursery, url, transports=["polling"]) as client:
        await client.expect("connect", timeout=CONNECT_TIMEOUT)
        if when == "after-connect":
            await client.send(op="emit", event="go")
        await client.expect("event", name="burst-end")
        received = [plain(line["args"]) for line in client.events("burst")]
        expected = [
            [n, {"bytes": n.to_bytes(2, "big")}] if n % 10 == 9 else [n, "x" * (n % 7)]
            for n in range(BURST)
        ]
        assert [args[0] for args in received] == list(range(BURST))
        assert received == expected
