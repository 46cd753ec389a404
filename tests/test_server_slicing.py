"""Large rooms are written in slices that yield to the scheduler, and every socket still gets the
namespace's packets in the order they were emitted."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import trio
import trio.lowlevel
import trio_websocket

import hub

CLIENTS = 120
SLICE = 16


class _Client:
    def __init__(self, ws: trio_websocket.WebSocketConnection, sid: str) -> None:
        self.ws = ws
        self.sid = sid
        self.events: list[list[Any]] = []
        self.got = trio.Event()
        self.expected = 0

    async def read(self) -> None:
        while True:
            try:
                message = str(await self.ws.get_message())
            except trio_websocket.ConnectionClosed:
                return
            if message == "2":
                await self.ws.send_message("3")
            elif message.startswith("42"):
                self.events.append(json.loads(message[2:]))
                if len(self.events) >= self.expected:
                    self.got.set()


async def _connect(nursery: trio.Nursery, port: int) -> _Client:
    ws = await trio_websocket.connect_websocket(
        nursery, "127.0.0.1", port, "/socket.io/?EIO=4&transport=websocket", use_ssl=False
    )
    assert str(await ws.get_message()).startswith("0{")
    await ws.send_message("40")
    connected = str(await ws.get_message())
    assert connected.startswith("40{")
    return _Client(ws, json.loads(connected[2:])["sid"])


async def _room(nursery: trio.Nursery, **options: Any) -> tuple[hub.Server, list[_Client]]:
    server = hub.Server(ping_interval=30, ping_timeout=30, **options)

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        socket.join("all")

    _, port = await nursery.start(server.serve, "127.0.0.1", 0)
    clients = [await _connect(nursery, port) for _ in range(CLIENTS)]
    for client in clients:
        nursery.start_soon(client.read)
    for number, client in enumerate(clients):
        server.main.sockets[client.sid].join(f"pair:{number // 2}")
    return server, clients


async def _receive_all(clients: list[_Client], expected: int) -> None:
    with trio.fail_after(20):
        for client in clients:
            client.expected = expected
            while len(client.events) < expected:
                client.got = trio.Event()  # (one set for an earlier count says nothing now)
                await client.got.wait()


async def test_sliced_broadcasts_keep_each_sockets_order(nursery: trio.Nursery) -> None:
    server, clients = await _room(nursery, broadcast_slice=SLICE)
    sockets = [server.main.sockets[client.sid] for client in clients]
    # All in one scheduler step: a large broadcast, small ones and direct emits behind it, and
    # a second large one. Each client must see them in exactly this order.
    assert server.to("all").emit("big", 1) == CLIENTS
    for pair in range(CLIENTS // 2):
        assert server.to(f"pair:{pair}").emit("small", pair) == 2
    for number, socket in enumerate(sockets):
        socket.emit("direct", number)
    assert server.to("all").except_("pair:0").emit("big", 2) == CLIENTS - 2
    await _receive_all(clients[:2], 3)
    await _receive_all(clients[2:], 4)
    for number, client in enumerate(clients):
        want = [["big", 1], ["small", number // 2], ["direct", number]]
        if number >= 2:
            want.append(["big", 2])
        assert client.events == want, number


async def test_a_large_broadcast_yields_between_slices(nursery: trio.Nursery) -> None:
    server, clients = await _room(nursery, broadcast_slice=SLICE)
    steps: list[str] = []

    class Steps(trio.abc.Instrument):
        def before_io_wait(self, timeout: float) -> None:
            steps.append("round")  # one per turn of trio's scheduler loop

        def after_task_step(self, task: trio.lowlevel.Task) -> None:
            if task.name.endswith("_drain"):
                steps.append("drain")
            elif task.name.endswith("ticker"):
                steps.append("ticker")

    async def ticker() -> None:
        while True:
            await trio.lowlevel.checkpoint()

    nursery.start_soon(ticker)
    await trio.sleep(0.05)
    instrument = Steps()
    trio.lowlevel.add_instrument(instrument)
    try:
        server.to("all").emit("big", 1)
        await _receive_all(clients, 1)
    finally:
        trio.lowlevel.remove_instrument(instrument)
    slices = math.ceil(CLIENTS / SLICE)
    drain_steps = [i for i, name in enumerate(steps) if name == "drain"]
    # The delivery task ran in one step per slice, each in a turn of the scheduler of its own
    # (trio may run a turn's tasks in reverse order, so two steps can still be neighbours).
    assert len(drain_steps) == slices
    assert all("round" in steps[a:b] for a, b in itertools.pairwise(drain_steps))
    # And a task that is always ready ran in every turn the delivery took.
    during = steps[drain_steps[0] : drain_steps[-1]]
    assert during.count("ticker") >= slices - 2
    assert all(client.events == [["big", 1]] for client in clients)


async def test_a_room_within_one_slice_is_written_inline(nursery: trio.Nursery) -> None:
    server, clients = await _room(nursery, broadcast_slice=CLIENTS)
    server.to("all").emit("big", 1)
    assert not server.main.adapter.backlog  # written before emit returned
    server, clients = await _room(nursery, broadcast_slice=CLIENTS - 1)
    server.to("all").emit("big", 1)
    assert server.main.adapter.backlog  # one socket more than a slice: queued
    await _receive_all(clients, 1)


async def test_sockets_that_leave_mid_delivery_do_not_stop_it(nursery: trio.Nursery) -> None:
    server, clients = await _room(nursery, broadcast_slice=SLICE)
    server.to("all").emit("big", 1)
    server.main.sockets[clients[-1].sid].disconnect(close=True)
    await _receive_all(clients[:-1], 1)
    server.to("all").emit("big", 2)
    await _receive_all(clients[:-1], 2)
    assert all(client.events == [["big", 1], ["big", 2]] for client in clients[:-1])


async def test_an_emitter_faster_than_the_delivery_keeps_the_backlog_bounded(
    nursery: trio.Nursery,
) -> None:
    server, clients = await _room(nursery, broadcast_slice=SLICE)
    adapter = server.main.adapter
    most = 0
    for number in range(40):  # one broadcast per scheduler turn, as an emitting loop does
        server.to("all").emit("big", number)
        most = max(most, adapter._queued)
        await trio.lowlevel.checkpoint()
    await _receive_all(clients, 40)
    # Never more than about one broadcast's worth waiting (memory and added latency bounded),
    # and every client has every broadcast, in order.
    assert most <= 2 * CLIENTS
    for client in clients:
        assert client.events == [["big", number] for number in range(40)]


async def test_a_broadcast_emitted_while_one_waits_is_written_with_it(
    nursery: trio.Nursery,
) -> None:
    server, clients = await _room(nursery, broadcast_slice=SLICE)
    adapter = server.main.adapter
    sockets = [server.main.sockets[client.sid] for client in clients]
    leaving, joining = sockets[0], sockets[1]
    joining.leave("all")
    server.to("all").emit("big", 1)  # more than a slice: queued
    assert adapter._queued == CLIENTS - 1
    leaving.leave("all")
    joining.join("all")
    # Emitted before the first was written: both go out now, together where both are due.
    assert server.to("all").emit("big", 2) == CLIENTS - 1
    assert not adapter.backlog
    assert adapter._queued == 0
    await _receive_all(clients[2:], 2)
    await _receive_all(clients[:2], 1)
    assert clients[0].events == [["big", 1]]  # it left before the second
    assert clients[1].events == [["big", 2]]  # it joined after the first
    for client in clients[2:]:
        assert client.events == [["big", 1], ["big", 2]]


async def test_a_batch_of_emits_keeps_each_sockets_order(nursery: trio.Nursery) -> None:
    server, clients = await _room(nursery, broadcast_slice=SLICE)
    adapter = server.main.adapter
    sockets = [server.main.sockets[client.sid] for client in clients]
    with adapter.batched():  # as the emit endpoint sends a batch: nothing awaited within
        for pair in range(CLIENTS // 2):
            assert server.to(f"pair:{pair}").emit("small", pair, 1) == 2
        server.to("pair:1").volatile.emit("volatile", 1)  # written after what was kept
        assert server.to("all").emit("big", 1) == CLIENTS  # more than a slice: queued
        for pair in range(CLIENTS // 2):
            server.to(f"pair:{pair}").emit("small", pair, 2)
        sockets[0].emit("direct", 0)
        server.to("pair:2").emit("small", 2, 3)
    assert not adapter._batch
    for number, client in enumerate(clients):
        pair = number // 2
        want = [["small", pair, 1], ["big", 1], ["small", pair, 2]]
        if pair == 1:
            want.insert(1, ["volatile", 1])
        if number == 0:
            want.append(["direct", 0])
        if pair == 2:
            want.append(["small", 2, 3])
        await _receive_all([client], len(want))
        assert client.events == want, number


async def test_a_batch_to_small_rooms_is_written_when_it_ends(nursery: trio.Nursery) -> None:
    server, clients = await _room(nursery, broadcast_slice=SLICE)
    adapter = server.main.adapter
    sockets = [server.main.sockets[client.sid] for client in clients]
    with adapter.batched():
        for n in range(5):
            server.to("pair:0").emit("small", n)
        server.to("pair:1").volatile.emit("volatile", 1)  # nothing waits: written
        server.to("pair:0").emit("small", 5)
        with adapter.batched():  # a batch within a batch is the same batch
            server.to("pair:1").emit("small", 6)
        # Kept until the end, one write per socket then.
        assert all(socket.client.engine.write_frame is not None for socket in sockets[:4])
        assert set(adapter._batch or {}) == set(sockets[:4])
    await _receive_all(clients[:2], 6)
    await _receive_all(clients[2:4], 2)
    for client in clients[:2]:
        assert client.events == [["small", n] for n in range(6)]
    for client in clients[2:4]:
        assert client.events == [["volatile", 1], ["small", 6]]
    assert all(client.events == [] for client in clients[4:])
