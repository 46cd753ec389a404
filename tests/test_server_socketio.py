"""The Socket.IO layer over a loopback socket: raw WebSocket frames against :class:`hub.Server`.

Every assertion is on the frames a client reads (``40{"sid":...}``, ``43<id>[...]``...) or on
what the application's handlers were given.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from support.sio import SID, RawSio, start_server
from support.wire import WAIT, Poller, RawWs, error_body

import hub
from hub import AckTimeout, ConnectionRefused, Server, ServerOptions, Socket

QUIET = ServerOptions(ping_interval=10, ping_timeout=5, connect_timeout=5)
"""No heartbeat traffic during a test, unless it asks for it."""


class Record:
    """What handlers saw, with a way to wait until enough has been seen."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = trio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, count: int) -> list[Any]:
        with trio.fail_after(WAIT):
            while len(self.items) < count:
                await self._changed.wait()
        return self.items


def server_with_record(options: ServerOptions = QUIET) -> tuple[Server, Record, Record]:
    """A server with ``/`` and ``/custom``: records (namespace, auth) on connect and
    (namespace, reason) on disconnect; ``join`` joins rooms; ``sum`` acks the sum."""
    server = Server(options)
    connects = Record()
    disconnects = Record()
    for namespace in (server.main, server.of("/custom")):

        def connect(socket: Socket, auth: dict[str, Any]) -> None:
            connects.add((socket.namespace.name, auth))

        def disconnect(socket: Socket, reason: str) -> None:
            disconnects.add((socket.namespace.name, reason))

        def join(socket: Socket, *rooms: str) -> str:
            socket.join(*rooms)
            return "joined"

        def add(socket: Socket, *numbers: int) -> int:
            return sum(numbers)

        namespace.on("connect", connect)
        namespace.on("disconnect", disconnect)
        namespace.on("join", join)
        namespace.on("sum", add)
    return server, connects, disconnects


# --- connecting -------------------------------------------------------------------------------

# (CONNECT sent, prefix of the answer, (namespace, auth) the connect handler got)
CONNECTS: list[tuple[str, str, tuple[str, dict[str, Any]]]] = [
    ("40", "40", ("/", {})),
    ('40{"token":"abc"}', "40", ("/", {"token": "abc"})),
    ("40/custom,", "40/custom,", ("/custom", {})),
    ("40/custom", "40/custom,", ("/custom", {})),
    (
        '40/custom,{"token":"abc","n":[1,2]}',
        "40/custom,",
        ("/custom", {"token": "abc", "n": [1, 2]}),
    ),
]


@pytest.mark.parametrize(("sent", "prefix", "seen"), CONNECTS)
async def test_connect(
    nursery: trio.Nursery, sent: str, prefix: str, seen: tuple[str, dict[str, Any]]
) -> None:
    server, connects, _ = server_with_record()
    address = await start_server(nursery, server)
    client = await RawSio.open(nursery, address)
    assert client.open_fields["upgrades"] == []
    await client.send(sent)
    answer = await client.receive_text()
    assert answer.startswith(prefix)
    assert SID.fullmatch(answer[len(prefix) :])
    assert await connects.wait_for(1) == [seen]
    namespace = server.namespaces[seen[0]]
    (socket,) = namespace.sockets.values()
    assert socket.id == json.loads(answer[len(prefix) :])["sid"]
    assert socket.connected
    assert socket.id in socket.rooms
    assert socket.transport == "websocket"
    assert socket.handshake.auth == seen[1]
    assert socket.handshake.address == "127.0.0.1"
    assert socket.handshake.query["EIO"] == "4"


async def test_connect_to_two_namespaces_on_one_connection(nursery: trio.Nursery) -> None:
    server, connects, _ = server_with_record()
    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    await client.send("40/custom,")
    answer = await client.receive_text()
    assert answer.startswith("40/custom,{")
    assert [name for name, _ in await connects.wait_for(2)] == ["/", "/custom"]


async def test_connect_twice_is_ignored(nursery: trio.Nursery) -> None:
    server, connects, _ = server_with_record()
    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    await client.send("40")
    await client.nothing_for(0.1)
    assert len(connects.items) == 1


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        ("40/x,", '44/x,{"message":"Invalid namespace"}'),
        ("40/x", '44/x,{"message":"Invalid namespace"}'),
        ('40/random,{"token":"1"}', '44/random,{"message":"Invalid namespace"}'),
    ],
)
async def test_unknown_namespace(nursery: trio.Nursery, sent: str, answer: str) -> None:
    server, _, _ = server_with_record()
    address = await start_server(nursery, server)
    client = await RawSio.open(nursery, address)
    await client.send(sent)
    assert await client.receive_text() == answer
    # The connection stays: the main namespace can still be joined.
    await client.send("40")
    assert SID.fullmatch((await client.receive_text())[2:])


async def test_dynamic_namespace(nursery: trio.Nursery) -> None:
    server = Server(QUIET)
    server.of(lambda name: name.startswith("/room-"))
    address = await start_server(nursery, server)
    client = await RawSio.open(nursery, address)
    await client.send("40/room-1,")
    assert (await client.receive_text()).startswith("40/room-1,{")
    await client.send("40/other,")
    assert await client.receive_text() == '44/other,{"message":"Invalid namespace"}'


async def test_connect_refused_by_handler(nursery: trio.Nursery) -> None:
    server = Server(QUIET)

    @server.on("connect")
    def connect(socket: Socket, auth: dict[str, Any]) -> None:
        socket.emit("never sent")
        raise ConnectionRefused("no", data={"code": "X"})

    address = await start_server(nursery, server)
    client = await RawSio.open(nursery, address)
    await client.send("40")
    assert await client.receive_text() == '44{"message":"no","data":{"code":"X"}}'
    await client.nothing_for(0.1)  # what the refused handler emitted is dropped
    assert server.main.sockets == {}


async def test_connect_refused_by_middleware(nursery: trio.Nursery) -> None:
    server = Server(QUIET)
    custom = server.of("/custom")

    async def middleware(socket: Socket, auth: dict[str, Any]) -> None:
        await trio.sleep(0.01)
        if auth.get("token") != "good":
            raise ConnectionRefused("bad token")

    custom.use(middleware)
    address = await start_server(nursery, server)
    client = await RawSio.open(nursery, address)
    await client.send('40/custom,{"token":"bad"}')
    assert await client.receive_text() == '44/custom,{"message":"bad token"}'
    await client.send('40/custom,{"token":"good"}')
    assert (await client.receive_text()).startswith("40/custom,{")


async def test_connect_handler_failure_is_an_internal_error(nursery: trio.Nursery) -> None:
    server = Server(QUIET)

    @server.on("connect")
    def connect(socket: Socket, auth: dict[str, Any]) -> None:
        raise KeyError("bug")

    address = await start_server(nursery, server)
    client = await RawSio.open(nursery, address)
    await client.send("40")
    assert await client.receive_text() == '44{"message":"Internal server error"}'


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_emits_from_the_connect_handler_follow_connect(
    nursery: trio.Nursery, asynchronous: bool
) -> None:
    server = Server(QUIET)

    if asynchronous:

        @server.on("connect")
        async def connect_async(socket: Socket, auth: dict[str, Any]) -> None:
            socket.emit("hello", 1)
            await trio.sleep(0.05)
            socket.emit("world", b"\x01")

    else:

        @server.on("connect")
        def connect(socket: Socket, auth: dict[str, Any]) -> None:
            socket.emit("hello", 1)
            socket.emit("world", b"\x01")

    address = await start_server(nursery, server)
    client = await RawSio.open(nursery, address)
    await client.send("40")
    first = await client.receive_text()
    assert first.startswith("40{")
    assert await client.receive() == '42["hello",1]'
    assert await client.receive() == '451-["world",{"_placeholder":true,"num":0}]'
    assert await client.receive() == b"\x01"


async def test_disconnect_from_the_connect_handler(nursery: trio.Nursery) -> None:
    server, _, disconnects = server_with_record()

    @server.on("connect")
    def connect(socket: Socket, auth: dict[str, Any]) -> None:
        socket.emit("welcome")
        socket.disconnect()

    address = await start_server(nursery, server)
    client = await RawSio.open(nursery, address)
    await client.send("40")
    assert (await client.receive_text()).startswith("40{")
    assert await client.receive_text() == '42["welcome"]'
    assert await client.receive_text() == "41"
    assert await disconnects.wait_for(1) == [("/", "server namespace disconnect")]
    assert server.main.sockets == {}


# --- events and acks --------------------------------------------------------------------------

# (frame sent, frame answered)
ACKS: list[tuple[str, str]] = [
    ('421["sum",1,2]', "431[3]"),
    ('420["sum"]', "430[0]"),
    ('4212345["sum",5]', "4312345[5]"),
    ('42/custom,7["sum",2,2]', "43/custom,7[4]"),
    ('421["join","a"]', '431["joined"]'),
]


@pytest.mark.parametrize(("sent", "answer"), ACKS)
async def test_event_handler_ack(nursery: trio.Nursery, sent: str, answer: str) -> None:
    server, _, _ = server_with_record()
    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    await client.send("40/custom,")
    await client.receive_text()
    await client.send(sent)
    assert await client.receive_text() == answer


async def test_ack_values(nursery: trio.Nursery) -> None:
    server = Server(QUIET)

    @server.on("none")
    def none(socket: Socket) -> None:
        return None

    @server.on("tuple")
    def several(socket: Socket) -> tuple[Any, ...]:
        return (1, "two", {"three": [3]})

    @server.on("slow")
    async def slow(socket: Socket, value: Any) -> Any:
        await trio.sleep(0.02)
        return value

    @server.on("*")
    def catch_all(socket: Socket, event: str, *args: Any) -> list[Any]:
        return [event, *args]

    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    for sent, answer in [
        ('421["none"]', "431[]"),
        ('422["tuple"]', '432[1,"two",{"three":[3]}]'),
        ('423["slow",{"é":"€"}]', '433[{"é":"€"}]'),
        ('424["other",true,null]', '434[["other",true,null]]'),
    ]:
        await client.send(sent)
        assert await client.receive_text() == answer


async def test_event_without_ack_id_gets_no_ack(nursery: trio.Nursery) -> None:
    server, _, _ = server_with_record()
    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    await client.send('42["sum",1]')
    await client.send('42["no handler"]')
    await client.nothing_for(0.1)


async def test_event_to_unjoined_namespace_is_ignored(nursery: trio.Nursery) -> None:
    server, _, _ = server_with_record()
    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    await client.send('42/custom,1["sum",1]')
    await client.nothing_for(0.1)
    await client.send('421["sum",1]')
    assert await client.receive_text() == "431[1]"


async def test_binary_event_with_attachments(nursery: trio.Nursery) -> None:
    server = Server(QUIET)
    seen = Record()

    @server.on("upload")
    def upload(socket: Socket, meta: dict[str, Any], first: bytes, second: bytes) -> Any:
        seen.add((meta, first, second))
        socket.emit("echo", {"data": first})
        return [second, first]

    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    await client.send(
        '452-9["upload",{"name":"f"},{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    )
    await client.send(b"\x00\x01")
    await client.send(b"\xff" * 3)
    assert await seen.wait_for(1) == [({"name": "f"}, b"\x00\x01", b"\xff\xff\xff")]
    assert await client.receive() == '451-["echo",{"data":{"_placeholder":true,"num":0}}]'
    assert await client.receive() == b"\x00\x01"
    assert (
        await client.receive()
        == '462-9[[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]]'
    )
    assert await client.receive() == b"\xff\xff\xff"
    assert await client.receive() == b"\x00\x01"


# (frames): each malformed; the server closes the whole connection.
MALFORMED: list[list[str | bytes]] = [
    ["4abc"],
    ["42{}"],
    ['42abc["foo"]'],
    ["4"],
    ["49"],
    ['42["a"]x'],
    [b"\x01"],  # an attachment that no packet announced
    ['451-["a",{"_placeholder":true,"num":0}]', "42[]"],  # text where an attachment is due
    ['44{"message":"clients may not send this"}'],
    ['4511-["a"]'],  # more attachments than ServerOptions.max_attachments (10)
    ['451-["a"]'],  # an attachment announced, no placeholder for it
    ['4"3"'],
]


@pytest.mark.parametrize("frames", MALFORMED)
async def test_malformed_packet_closes_the_connection(
    nursery: trio.Nursery, frames: list[str | bytes]
) -> None:
    server, _, disconnects = server_with_record()
    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    for frame in frames:
        await client.send(frame)
    assert await client.receive() == "1"  # Engine.IO close
    assert await client.closed_code() == 1000
    assert await disconnects.wait_for(1) == [("/", "parse error")]
    assert server.main.sockets == {}


async def test_connect_timeout(nursery: trio.Nursery) -> None:
    server = Server(ServerOptions(ping_interval=10, ping_timeout=5, connect_timeout=0.2))
    address = await start_server(nursery, server)
    client = await RawSio.open(nursery, address)
    start = trio.current_time()
    assert await client.receive() == "1"
    assert await client.closed_code() == 1000
    assert 0.15 <= trio.current_time() - start < 0.5


async def test_close_handshake_sends_one_close_frame(nursery: trio.Nursery) -> None:
    # RFC 6455 5.5.1: an endpoint answers a Close "if [it] did not previously send a Close
    # frame"; after the handshake "the server MUST close the underlying TCP connection" (7.1.1).
    server = Server(ServerOptions(ping_interval=10, ping_timeout=5, connect_timeout=0.1))
    address = await start_server(nursery, server)
    client = await RawWs.connect(address, "/socket.io/?EIO=4&transport=websocket")
    messages, close = await client.until_close()  # the connect timeout closes the session
    assert [m[:1] for m in messages] == ["0", "1"]
    assert close.code == 1000
    await client.send(close.response())
    assert await client.rest() == b""  # no second Close frame; then the end of the stream


async def test_connect_in_time_cancels_the_connect_timeout(nursery: trio.Nursery) -> None:
    server = Server(ServerOptions(ping_interval=10, ping_timeout=5, connect_timeout=0.2))
    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    await client.nothing_for(0.35)
    await client.send('42["x"]')
    await client.nothing_for(0.05)


async def test_heartbeat_does_not_need_connect(nursery: trio.Nursery) -> None:
    server = Server(ServerOptions(ping_interval=0.1, ping_timeout=0.1, connect_timeout=1))
    address = await start_server(nursery, server)
    client = await RawSio.open(nursery, address)
    for _ in range(3):
        assert await client.receive() == "2"
        await client.send("3")


# --- disconnecting ------------------------------------------------------------------------------


async def test_disconnect_on_main_namespace_keeps_the_connection(nursery: trio.Nursery) -> None:
    server, _, disconnects = server_with_record()
    address = await start_server(nursery, server)
    client, first_sid = await RawSio.connected(nursery, address)
    await client.send("41")
    assert await disconnects.wait_for(1) == [("/", "client namespace disconnect")]
    await client.nothing_for(0.1)  # nothing is sent back
    assert server.main.sockets == {}
    assert first_sid not in server.main.adapter.rooms
    await client.send("40")
    answer = await client.receive_text()
    assert answer.startswith("40{")
    assert json.loads(answer[2:])["sid"] != first_sid


async def test_disconnect_reasons(nursery: trio.Nursery) -> None:
    server, _, disconnects = server_with_record()

    @server.on("kick")
    def kick(socket: Socket) -> None:
        socket.disconnect()

    address = await start_server(nursery, server)

    client, _ = await RawSio.connected(nursery, address)
    await client.send("40/custom,")
    await client.receive_text()
    await client.send("41/custom,")
    assert await disconnects.wait_for(1) == [("/custom", "client namespace disconnect")]

    await client.send('42["kick"]')
    assert await client.receive_text() == "41"
    assert (await disconnects.wait_for(2))[1] == ("/", "server namespace disconnect")

    other, _ = await RawSio.connected(nursery, address)
    await other.send("40/custom,")
    await other.receive_text()
    await other.aclose()
    reasons = (await disconnects.wait_for(4))[2:]
    assert sorted(reasons) == [("/", "transport close"), ("/custom", "transport close")]


async def test_engine_close_packet_is_transport_close(nursery: trio.Nursery) -> None:
    server, _, disconnects = server_with_record()
    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    await client.send("1")
    assert await disconnects.wait_for(1) == [("/", "transport close")]


async def test_ping_timeout_reason(nursery: trio.Nursery) -> None:
    server, _, disconnects = server_with_record(
        ServerOptions(ping_interval=0.1, ping_timeout=0.1, connect_timeout=5)
    )
    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    assert await client.receive() == "2"
    assert await disconnects.wait_for(1) == [("/", "ping timeout")]


async def test_server_disconnect_with_close_ends_the_connection(nursery: trio.Nursery) -> None:
    server, _, disconnects = server_with_record()

    @server.on("bye")
    def bye(socket: Socket) -> None:
        socket.disconnect(close=True)

    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    await client.send('42["bye"]')
    assert await client.receive() == "1"
    assert await client.closed_code() == 1000
    assert await disconnects.wait_for(1) == [("/", "forced server close")]


# --- server to client acks ----------------------------------------------------------------------


async def connected_socket(
    nursery: trio.Nursery, server: Server, address: str
) -> tuple[RawSio, Socket]:
    client, sid = await RawSio.connected(nursery, address)
    return client, server.main.sockets[sid]


async def test_call_gets_the_ack(nursery: trio.Nursery) -> None:
    server = Server(QUIET)
    address = await start_server(nursery, server)
    client, socket = await connected_socket(nursery, server, address)

    async def answer() -> None:
        assert await client.receive_text() == '420["question",1,{"a":"b"}]'
        await client.send('430["answer",2]')
        assert await client.receive_text() == '421["again"]'
        await client.send('461-1[{"_placeholder":true,"num":0}]')  # a BINARY_ACK
        await client.send(b"\x07")

    async with trio.open_nursery() as inner:
        inner.start_soon(answer)
        assert await socket.call("question", 1, {"a": "b"}) == ("answer", 2)
        assert await socket.call("again") == (b"\x07",)


async def test_call_times_out(nursery: trio.Nursery) -> None:
    server = Server(QUIET)
    address = await start_server(nursery, server)
    client, socket = await connected_socket(nursery, server, address)
    start = trio.current_time()
    with pytest.raises(AckTimeout):
        await socket.call("question", timeout=0.1)
    assert 0.1 <= trio.current_time() - start < 0.3
    assert await client.receive_text() == '420["question"]'
    # A late ack is dropped; the next call has its own id.
    await client.send("430[1]")

    async def answer() -> None:
        assert await client.receive_text() == '421["next"]'
        await client.send("431[2]")

    async with trio.open_nursery() as inner:
        inner.start_soon(answer)
        assert await socket.call("next") == (2,)


async def test_call_fails_when_the_client_leaves(nursery: trio.Nursery) -> None:
    server = Server(QUIET)
    address = await start_server(nursery, server)
    client, socket = await connected_socket(nursery, server, address)

    async def leave() -> None:
        await client.receive_text()
        await client.send("41")

    async with trio.open_nursery() as inner:
        inner.start_soon(leave)
        with pytest.raises(AckTimeout, match="disconnected"):
            await socket.call("question", timeout=WAIT)


# --- rooms and broadcasts -----------------------------------------------------------------------


async def test_rooms_and_broadcast_counts(nursery: trio.Nursery) -> None:
    server, _, _ = server_with_record()
    address = await start_server(nursery, server)
    clients: list[RawSio] = []
    sids: list[str] = []
    for rooms in (["a"], ["a", "b"], ["b"]):
        client, sid = await RawSio.connected(nursery, address)
        await client.send("421" + json.dumps(["join", *rooms]))
        assert await client.receive_text() == '431["joined"]'
        clients.append(client)
        sids.append(sid)
    a, ab, b = clients

    assert server.emit("all", 1) == 3
    for client in clients:
        assert await client.receive_text() == '42["all",1]'

    assert server.emit("to a", to="a") == 2
    assert await a.receive_text() == '42["to a"]'
    assert await ab.receive_text() == '42["to a"]'

    assert server.emit("a or b", to=["a", "b"]) == 3  # each socket once
    for client in clients:
        assert await client.receive_text() == '42["a or b"]'

    assert server.emit("a not b", to="a", skip="b") == 1
    assert await a.receive_text() == '42["a not b"]'

    assert server.emit("not a", skip="a") == 1
    assert await b.receive_text() == '42["not a"]'

    assert server.emit("one", {"x": b"\x02"}, to=sids[2]) == 1  # the room of a socket id
    assert await b.receive() == '451-["one",{"x":{"_placeholder":true,"num":0}}]'
    assert await b.receive() == b"\x02"

    assert server.emit("nobody", to="c") == 0
    assert server.to("a").except_("b").emit("op", 2) == 1
    assert await a.receive_text() == '42["op",2]'

    for client in clients:
        await client.nothing_for(0.05)

    # A socket that left is no longer reached.
    await ab.send("41")
    await ab.nothing_for(0.05)
    assert server.emit("to a", to="a") == 1
    assert await a.receive_text() == '42["to a"]'
    assert "b" in server.main.adapter.rooms
    await b.aclose()
    await trio.sleep(0.05)
    assert server.emit("to b", to="b") == 0
    assert "b" not in server.main.adapter.rooms


async def test_broadcast_from_socket_leaves_the_sender_out(nursery: trio.Nursery) -> None:
    server = Server(QUIET)
    counts = Record()

    @server.on("shout")
    def shout(socket: Socket, text: str) -> None:
        socket.join("room")
        counts.add(socket.to("room").emit("heard", text))

    address = await start_server(nursery, server)
    first, first_sid = await RawSio.connected(nursery, address)
    second, _ = await RawSio.connected(nursery, address)
    server.main.sockets[first_sid].join("room")
    await second.send('42["shout","hi"]')
    assert await counts.wait_for(1) == [1]
    assert await first.receive_text() == '42["heard","hi"]'
    await second.nothing_for(0.05)


async def test_broadcast_in_a_namespace(nursery: trio.Nursery) -> None:
    server, _, _ = server_with_record()
    address = await start_server(nursery, server)
    main, _ = await RawSio.connected(nursery, address)
    custom, _ = await RawSio.connected(nursery, address, "/custom")
    assert server.emit("x", namespace="/custom") == 1
    assert await custom.receive_text() == '42/custom,["x"]'
    await main.nothing_for(0.05)


async def test_emit_to_an_unknown_namespace_does_not_create_it(nursery: trio.Nursery) -> None:
    server, _, _ = server_with_record()
    address = await start_server(nursery, server)
    assert server.emit("x", namespace="/ghost") == 0
    client = await RawSio.open(nursery, address)
    await client.send("40/ghost,")
    assert await client.receive_text() == '44/ghost,{"message":"Invalid namespace"}'


# --- the Engine.IO endpoint of the server ----------------------------------------------------


@asynccontextmanager
async def connected_over_polling(address: str) -> AsyncIterator[Poller]:
    """A Socket.IO client on HTTP long-polling, connected to ``/`` of the server at ``address``."""
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        poller = Poller(http, "/socket.io/")
        await poller.handshake()
        assert (await poller.post("40")).text == "ok"
        assert (await poller.get()).text.startswith("40{")
        yield poller


async def test_connect_timeout_over_polling(nursery: trio.Nursery) -> None:
    server = Server(ServerOptions(ping_interval=10, ping_timeout=5, connect_timeout=0.2))
    address = await start_server(nursery, server)
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        poller = Poller(http, "/socket.io/")
        await poller.handshake()
        start = trio.current_time()
        assert (await poller.get()).text == "1"
        assert 0.15 <= trio.current_time() - start < 0.5
        assert error_body(await poller.get())["code"] == 1


async def test_malformed_packet_over_polling_closes(nursery: trio.Nursery) -> None:
    server, _, disconnects = server_with_record()
    address = await start_server(nursery, server)
    async with connected_over_polling(address) as poller:
        await poller.post('42{}\x1e42["sum",1]')
        # The close packet is the last thing the client gets; the event after it is dropped.
        assert (await poller.get()).text == "1"
        assert await disconnects.wait_for(1) == [("/", "parse error")]
        assert error_body(await poller.get())["code"] == 1


async def test_client_close_over_polling(nursery: trio.Nursery) -> None:
    server, _, disconnects = server_with_record()
    address = await start_server(nursery, server)
    async with connected_over_polling(address) as poller:
        assert (await poller.post("1")).text == "ok"
        assert await disconnects.wait_for(1) == [("/", "transport close")]


async def test_cors_options_of_the_server(nursery: trio.Nursery) -> None:
    server = hub.Server(
        hub.ServerOptions(cors_origins=["http://ok.example"], cors_credentials=True)
    )
    address = await start_server(nursery, server)
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        poller = Poller(http, "/socket.io/")
        response = await http.get(poller.url(), headers={"Origin": "http://ok.example"})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://ok.example"
        assert response.headers["access-control-allow-credentials"] == "true"
        response = await http.get(poller.url(), headers={"Origin": "http://no.example"})
        assert response.status_code == 403
        assert error_body(response) == {"code": 4, "message": "Forbidden"}


async def test_socketio_over_polling(nursery: trio.Nursery) -> None:
    server, connects, _ = server_with_record()
    address = await start_server(nursery, server)
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        poller = Poller(http, "/socket.io/")
        fields = await poller.handshake()
        assert fields["upgrades"] == ["websocket"]
        assert (await poller.post("40")).text == "ok"
        answer = (await poller.get()).text
        assert answer.startswith("40{")
        assert SID.fullmatch(answer[2:])
        assert (await poller.post('421["sum",1,2]\x1e422["sum",3]')).text == "ok"
        assert (await poller.get()).text == "431[3]\x1e432[3]"
        server.emit("bin", b"\x01\x02")
        assert (await poller.get()).text == '451-["bin",{"_placeholder":true,"num":0}]\x1ebAQI='
    assert await connects.wait_for(1) == [("/", {})]
