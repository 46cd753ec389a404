"""A client that stops reading: bounded memory, a goodbye it can read, nobody else delayed; and
volatile events, dropped for a client that cannot take them now."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio_websocket

import hub
from hub.transport import stream as stream_module

PAD = "x" * 1000
ROOM = "all"


async def _client(
    nursery: trio.Nursery, port: int
) -> tuple[trio_websocket.WebSocketConnection, str]:
    # message_queue_size=1: when the test stops calling get_message, the client stops reading
    # from its socket, as a stalled browser tab does.
    ws = await trio_websocket.connect_websocket(
        nursery,
        "127.0.0.1",
        port,
        "/socket.io/?EIO=4&transport=websocket",
        use_ssl=False,
        message_queue_size=1,
    )
    opened = await ws.get_message()
    assert str(opened).startswith("0{")
    await ws.send_message("40")
    connected = str(await ws.get_message())
    assert connected.startswith("40{")
    return ws, json.loads(connected[2:])["sid"]


async def _read_until_closed(ws: trio_websocket.WebSocketConnection) -> None:
    while True:
        await ws.get_message()


async def _start(nursery: trio.Nursery, reasons: dict[str, str]) -> tuple[hub.Server, int]:
    server = hub.Server(ping_interval=30, ping_timeout=30, max_buffered=64_000)

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        socket.join(ROOM)

    @server.on("disconnect")
    def disconnect(socket: hub.Socket, reason: str) -> None:
        reasons[socket.id] = reason

    _, port = await nursery.start(server.serve, "127.0.0.1", 0)
    return server, port


async def test_a_stalled_reader_is_let_go_with_a_reason_and_others_go_on(
    nursery: trio.Nursery,
) -> None:
    reasons: dict[str, str] = {}
    server, port = await _start(nursery, reasons)
    stalled, stalled_id = await _client(nursery, port)
    healthy, healthy_id = await _client(nursery, port)
    slow = server.main.sockets[stalled_id]

    async def keep_reading() -> None:
        while True:
            await healthy.get_message()

    nursery.start_soon(keep_reading)
    # Far more than the kernel's buffers and the 64 kB bound: the stalled client overflows.
    for number in range(20_000):
        slow.emit("tick", number, PAD)
        if number % 500 == 0:
            await trio.lowlevel.checkpoint()
    # It reads again: what was already on its way, then a close frame that says why.
    with trio.fail_after(10), pytest.raises(trio_websocket.ConnectionClosed) as closed:
        await _read_until_closed(stalled)
    assert closed.value.reason is not None
    assert (closed.value.reason.code, closed.value.reason.reason) == (1008, "slow consumer")
    with trio.fail_after(5):
        while stalled_id not in reasons:
            await trio.sleep(0.01)
    assert reasons[stalled_id] == "slow consumer"
    # The other client was not held up and is still served.
    assert healthy_id not in reasons
    assert server.to(ROOM).emit("after", 1) == 1


async def test_the_goodbye_waits_a_bounded_time_for_a_reader_that_never_comes_back(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "GOODBYE_TIMEOUT", 0.3)
    reasons: dict[str, str] = {}
    server, port = await _start(nursery, reasons)
    _stalled, stalled_id = await _client(nursery, port)
    slow = server.main.sockets[stalled_id]
    for number in range(20_000):
        slow.emit("tick", number, PAD)
        if number % 500 == 0:
            await trio.lowlevel.checkpoint()
    with trio.fail_after(5):
        while stalled_id not in reasons:
            await trio.sleep(0.01)
    assert reasons[stalled_id] == "slow consumer"
    assert server.main.sockets == {}


async def test_volatile_events_are_dropped_for_a_client_that_cannot_take_them(
    nursery: trio.Nursery,
) -> None:
    reasons: dict[str, str] = {}
    server, port = await _start(nursery, reasons)
    stalled, stalled_id = await _client(nursery, port)
    slow = server.main.sockets[stalled_id]
    assert slow.emit_volatile("fresh", 0)  # nothing queued: it goes out
    # Stall it until its connection queues (under the slow-consumer bound).
    number = 0
    with trio.fail_after(10):
        while slow.emit_volatile("probe", number):
            slow.emit("tick", number, PAD)
            number += 1
            if number % 200 == 0:
                await trio.lowlevel.checkpoint()
    healthy, _ = await _client(nursery, port)
    # A volatile broadcast reaches the healthy client and skips the stalled one.
    assert server.to(ROOM).volatile.emit("stale-soon", "v") == 1
    assert str(await healthy.get_message()) == '42["stale-soon","v"]'
    # A plain broadcast still queues for it, and arrives once it reads.
    assert server.to(ROOM).emit("kept", "k") == 2
    seen: list[str] = []
    with trio.fail_after(10):
        while '42["kept","k"]' not in seen:
            seen.append(str(await stalled.get_message()))
    assert '42["stale-soon","v"]' not in seen
    assert stalled_id not in reasons
