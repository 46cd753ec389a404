"""hub against python-socketio's ``AsyncClient`` (asyncio), run as a subprocess.

As in ``test_interop_node`` (and with its servers, :mod:`interop.servers`), where both clients
must meet the same behaviour: a test asserts on what ``tests/interop/py_client.py`` printed it
observed, and on what the server's handlers saw.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from interop.harness import (
    CONNECT_TIMEOUT,
    Seen,
    each_server_mode,
    plain,
    python_client,
    python_command,
    serve,
    wire_bytes,
)
from interop.servers import ALL_BYTES, add_custom_namespace, echo_server, refusing_server

import hub

TRANSPORTS = [
    pytest.param(["websocket"], "websocket", id="websocket"),
    pytest.param(["polling"], "polling", id="polling"),
    pytest.param(None, "websocket", id="default"),
]
SINGLE_TRANSPORTS = [
    pytest.param(["websocket"], id="websocket"),
    pytest.param(["polling"], id="polling"),
]

_server_mode = each_server_mode(python_command)


def greeting_server(seen: Seen) -> hub.Server:
    """The echo server that greets each connection (``welcome``), and acknowledges ``sum``
    with the sum of its two arguments."""
    server = echo_server(seen, welcome=True)

    @server.on("sum")
    def add(socket: hub.Socket, a: int, b: int) -> int:
        return a + b

    return server


@pytest.mark.parametrize(("transports", "final"), TRANSPORTS)
async def test_connect_emit_and_acks(
    nursery: trio.Nursery, transports: list[str] | None, final: str
) -> None:
    seen = Seen()
    url = await serve(nursery, greeting_server(seen))
    async with python_client(nursery, url, transports=transports, auth={"token": "abc"}) as client:
        connected = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        (socket,) = await seen.wait("connect")
        assert connected["id"] == socket.id
        assert seen.get("auth") == [{"token": "abc"}]

        # A server emit from the connect handler (held until the CONNECT was sent).
        welcome = await client.expect("event", name="welcome")
        assert welcome["args"] == [{"sid": socket.id}]

        # await sio.call(...): one ack argument comes back as the value.
        await client.send(op="call", event="sum", args=[20, 22], tag="call")
        assert (await client.expect("call_result", tag="call"))["result"] == 42

        # emit with a callback: every ack argument.
        args = ["a", 1, {"b": [True, None]}]
        await client.send(op="emit", event="echo", args=args, ack=True, tag="cb")
        assert (await client.expect("ack", tag="cb"))["args"] == args

        # The server asks, the client's handler answers.
        with trio.fail_after(8):
            assert await socket.call("question", "q", 7, timeout=5) == ("q", 7)

        # python-engineio upgrades during connect() when it may: by now, the final transport.
        await client.send(op="state", tag="end")
        state = await client.expect("state", tag="end")
        assert state["transport"] == final
        assert state["connected"] is True
        assert socket.transport == final
        assert seen.get("echo") == [(final, tuple(args))]
        assert not client.seen("disconnect")

        # The client leaves with sio.disconnect(): it queues DISCONNECT and the Engine.IO close,
        # but over WebSocket python-engineio closes the socket without waiting for its write
        # loop, so the packets may never leave (its log: "Write loop: WebSocket connection was
        # closed, aborting"). Either way the server must see the socket go. Over polling both go
        # in one POST, and only if the POST of the acknowledgement above was answered before
        # this command: its write loop ends when disconnect() finds a POST in flight, and then
        # waits for its GET until the next ping (test_asgi_polling.py holds the server to it).
        await client.send(op="close")
        await client.expect("closed")
        ((sid, reason),) = await seen.wait("disconnect")
        assert sid == socket.id
        if final == "polling":
            assert reason == "client namespace disconnect"
        else:
            assert reason in ("client namespace disconnect", "transport close")
        assert await client.wait_exit() == 0


@pytest.mark.parametrize("transports", SINGLE_TRANSPORTS)
async def test_binary_round_trip(nursery: trio.Nursery, transports: list[str]) -> None:
    seen = Seen()
    server = greeting_server(seen)

    @server.on("send-binary")
    def send_binary(socket: hub.Socket) -> None:
        socket.emit("binary", {"nested": {"data": ALL_BYTES, "list": [b"", b"\x00"]}}, b"\xff")

    url = await serve(nursery, server)
    async with python_client(nursery, url, transports=transports) as client:
        await client.expect("connect", timeout=CONNECT_TIMEOUT)

        args = [wire_bytes(ALL_BYTES), {"inner": wire_bytes(b"\x00\x01"), "s": "x"}]
        await client.send(op="emit", event="echo", args=args, ack=True, tag="bin")
        ack = await client.expect("ack", tag="bin")
        assert plain(ack["args"]) == [ALL_BYTES, {"inner": b"\x00\x01", "s": "x"}]
        assert ack["args"][0]["$type"] == "bytes"
        ((_transport, received),) = seen.get("echo")
        assert received == (ALL_BYTES, {"inner": b"\x00\x01", "s": "x"})

        await client.send(op="emit", event="send-binary")
        event = await client.expect("event", name="binary")
        assert plain(event["args"]) == [
            {"nested": {"data": ALL_BYTES, "list": [b"", b"\x00"]}},
            b"\xff",
        ]


@pytest.mark.parametrize("transports", SINGLE_TRANSPORTS)
async def test_custom_namespace(nursery: trio.Nursery, transports: list[str]) -> None:
    seen = Seen()
    server = greeting_server(seen)
    add_custom_namespace(server, seen)

    url = await serve(nursery, server)
    async with python_client(nursery, url, namespace="/custom", transports=transports) as client:
        connected = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        (socket,) = await seen.wait("custom-connect")
        assert connected["id"] == socket.id
        assert (await client.expect("event", name="where"))["args"] == ["/custom"]
        await client.send(op="call", event="echo", args=[1, 2], tag=1)
        assert (await client.expect("call_result", tag=1))["result"] == ["custom", 1, 2]
        assert seen.get("connect") == []


async def test_unknown_namespace_is_refused(nursery: trio.Nursery) -> None:
    seen = Seen()
    url = await serve(nursery, greeting_server(seen))
    async with python_client(nursery, url, namespace="/nope", transports=["websocket"]) as client:
        error = await client.expect("connect_error", timeout=CONNECT_TIMEOUT)
        assert error["args"] == [{"message": "Invalid namespace"}]
        failed = await client.expect("connect_failed")
        assert failed["type"] == "ConnectionError"
        assert failed["args"] == ["One or more namespaces failed to connect: /nope"]


@pytest.mark.parametrize("transports", SINGLE_TRANSPORTS)
async def test_connect_refused_with_data(nursery: trio.Nursery, transports: list[str]) -> None:
    attempts: list[dict[str, Any]] = []
    url = await serve(nursery, refusing_server(attempts))
    async with python_client(nursery, url, transports=transports, auth={"token": "bad"}) as client:
        # python-socketio passes the CONNECT_ERROR payload to connect_error, then raises.
        error = await client.expect("connect_error", timeout=CONNECT_TIMEOUT)
        assert error["args"] == [{"message": "Not authorized", "data": {"code": "X"}}]
        failed = await client.expect("connect_failed")
        assert failed["type"] == "ConnectionError"
        assert failed["args"] == ["One or more namespaces failed to connect: /"]
        assert await client.wait_exit() == 0
    assert attempts == [{"token": "bad"}]
    assert not client.seen("connect")
