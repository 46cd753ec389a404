"""Long-polling GETs held by the native server: no task waits for them, the connection's task
watches the peer, and the endpoint answers them a step after their session changes.

Every test speaks HTTP/1.1 to the real native server on a loopback socket (h11 on a bare TCP
stream, so which connection carries which request is under the test's control).
"""

from __future__ import annotations

import json

import h11
import trio
from support.wire import WAIT, RawHttp, start_engine

from hub.conformance import EchoHandler
from hub.transport.engine import EngineSocket
from hub.transport.native import Limits


class Emitter(EchoHandler):
    """Echoes, and on ``burst N`` sends ``m0`` ... ``m<N-1>``: all in one step (``burst``) or
    with a scheduler step between two (``stream``, from a task of the session)."""

    def on_message(self, socket: EngineSocket, data: str | bytes) -> None:
        if isinstance(data, str) and data.startswith("burst "):
            for index in range(int(data.split()[1])):
                socket.send_message(f"m{index}")
        elif isinstance(data, str) and data.startswith("stream "):
            assert socket.nursery is not None
            socket.nursery.start_soon(self._stream, socket, int(data.split()[1]))
        else:
            socket.send_message(data)

    async def _stream(self, socket: EngineSocket, count: int) -> None:
        for index in range(count):
            socket.send_message(f"m{index}")
            await trio.lowlevel.checkpoint()


async def open_session(address: str) -> tuple[RawHttp, str]:
    conn = await RawHttp.connect(address)
    status, body = await conn.request("GET", "/engine.io/?EIO=4&transport=polling")
    assert status == 200
    return conn, f"/engine.io/?EIO=4&transport=polling&sid={json.loads(body[1:])['sid']}"


def raw_get(target: str, *headers: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: t", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_held_get_carries_everything_one_step_queued(nursery: trio.Nursery) -> None:
    _, address = await start_engine(nursery, Emitter())
    first, target = await open_session(address)
    second = await RawHttp.connect(address)
    got: list[tuple[int, bytes]] = []

    async def get() -> None:
        got.append(await first.request("GET", target))

    async with trio.open_nursery() as inner:
        inner.start_soon(get)
        await trio.sleep(0.05)  # the GET is held
        assert got == []
        assert await second.request("POST", target, b"4burst 5") == (200, b"ok")
    # Engine.IO v4: one payload, the packets in order, separated by the record separator.
    assert got == [(200, b"\x1e".join(b"4m%d" % i for i in range(5)))]


async def test_a_stream_arrives_whole_and_in_order(nursery: trio.Nursery) -> None:
    _, address = await start_engine(nursery, Emitter())
    conn, target = await open_session(address)
    count = 3000
    assert await conn.request("POST", target, b"4stream %d" % count) == (200, b"ok")
    received: list[bytes] = []
    answers = 0
    with trio.fail_after(10 * WAIT):
        while len(received) < count:
            status, body = await conn.request("GET", target)
            assert status == 200
            answers += 1
            received += body.split(b"\x1e")
    assert received == [b"4m%d" % i for i in range(count)]
    assert answers <= count
    await conn.aclose()


async def test_get_with_packets_queued_is_answered_at_once(nursery: trio.Nursery) -> None:
    _, address = await start_engine(nursery, Emitter())
    conn, target = await open_session(address)
    assert await conn.request("POST", target, b"4burst 2") == (200, b"ok")
    start = trio.current_time()
    assert await conn.request("GET", target) == (200, b"4m0\x1e4m1")
    assert trio.current_time() - start < 0.5  # not at the next ping (25 s away)


async def test_held_get_is_answered_when_a_packet_comes(nursery: trio.Nursery) -> None:
    engine, address = await start_engine(nursery, Emitter())
    conn, target = await open_session(address)
    sid = target.rsplit("=", 1)[1]
    answered: list[float] = []

    async def get() -> None:
        assert await conn.request("GET", target) == (200, b"4late")
        answered.append(trio.current_time())

    async with trio.open_nursery() as inner:
        inner.start_soon(get)
        await trio.sleep(0.1)
        assert answered == []
        sent = trio.current_time()
        engine.sockets[sid].send_message("late")
    assert answered[0] - sent < 0.1


async def test_hung_up_held_get_ends_the_session_at_once(nursery: trio.Nursery) -> None:
    engine, address = await start_engine(nursery, Emitter())
    conn, target = await open_session(address)
    sid = target.rsplit("=", 1)[1]
    await conn.stream.send_all(raw_get(target))
    await trio.sleep(0.05)
    assert sid in engine.sockets
    await conn.aclose()
    with trio.fail_after(WAIT):
        while sid in engine.sockets:
            await trio.sleep(0.01)
    other = await RawHttp.connect(address)
    status, body = await other.request("GET", target)
    assert (status, json.loads(body)) == (400, {"code": 1, "message": "Session ID unknown"})


async def test_request_pipelined_behind_a_held_get_waits_for_its_answer(
    nursery: trio.Nursery,
) -> None:
    _, address = await start_engine(nursery, Emitter())
    first, target = await open_session(address)
    second = await RawHttp.connect(address)
    responses: list[tuple[int, bytes]] = []

    async def pipeline() -> None:
        responses.extend(await first.pipeline([("GET", target, b""), ("POST", target, b"4x")]))

    async with trio.open_nursery() as inner:
        inner.start_soon(pipeline)
        await trio.sleep(0.05)
        assert responses == []  # the GET is held; the POST behind it waits its turn
        assert await second.request("POST", target, b"4y") == (200, b"ok")
    assert responses == [(200, b"4y"), (200, b"ok")]
    assert await first.request("GET", target) == (200, b"4x")


async def test_held_get_with_connection_close_closes_after_its_answer(
    nursery: trio.Nursery,
) -> None:
    _, address = await start_engine(nursery, Emitter())
    first, target = await open_session(address)
    second = await RawHttp.connect(address)
    await first.stream.send_all(raw_get(target, "Connection: close"))
    await trio.sleep(0.05)
    assert await second.request("POST", target, b"4bye") == (200, b"ok")
    data = b""
    with trio.fail_after(WAIT):
        while chunk := await first.stream.receive_some(65536):
            data += chunk  # until the server closes
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target=target, headers=[("Host", "t")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    response = client.next_event()
    assert isinstance(response, h11.Response)
    assert (response.status_code, dict(response.headers)[b"connection"]) == (200, b"close")
    assert client.next_event() == h11.Data(data=b"4bye")


async def test_keep_alive_timeout_runs_after_a_held_answer(nursery: trio.Nursery) -> None:
    _, address = await start_engine(nursery, Emitter(), limits=Limits(keepalive_timeout=0.3))
    first, target = await open_session(address)
    second = await RawHttp.connect(address)
    async with trio.open_nursery() as inner:
        inner.start_soon(first.request, "GET", target)
        await trio.sleep(0.2)  # held for most of the keep-alive time: no matter, it is held
        assert await second.request("POST", target, b"4a") == (200, b"ok")
    start = trio.current_time()
    with trio.fail_after(WAIT):
        assert await first.stream.receive_some(65536) == b""  # closed, idle after the answer
    assert trio.current_time() - start > 0.2
