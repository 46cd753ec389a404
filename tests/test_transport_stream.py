"""RawStream: writes go straight to the kernel, queue in order when it is full, stay bounded,
and a heartbeat overtakes a queued burst (never cutting into a frame the kernel took in part)."""

from __future__ import annotations

import socket

import trio

from hub.transport.stream import RawStream


def _pair(nursery: trio.Nursery) -> tuple[RawStream, socket.socket]:
    ours, theirs = socket.socketpair()
    # Small kernel buffers, so that a burst queues in the stream quickly.
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stream = RawStream(ours, max_buffered=1 << 20)
    stream.writer_nursery = nursery
    return stream, theirs


async def _read_all(sock: socket.socket, size: int) -> bytes:
    sock.setblocking(False)
    data = bytearray()
    with trio.fail_after(5):
        while len(data) < size:
            await trio.lowlevel.wait_readable(sock)
            data += sock.recv(65536)
    return bytes(data)


async def test_writes_go_straight_out_when_nothing_is_queued(nursery: trio.Nursery) -> None:
    stream, peer = _pair(nursery)
    stream.send_nowait(b"hello")
    assert stream.buffered == 0
    assert await _read_all(peer, 5) == b"hello"
    stream.close()
    peer.close()


async def test_queue_keeps_order_and_the_writer_drains_it(nursery: trio.Nursery) -> None:
    stream, peer = _pair(nursery)
    chunks = [bytes([i]) * 1000 for i in range(200)]
    for chunk in chunks:
        stream.send_nowait(chunk)
    assert stream.buffered > 0  # the kernel did not take it all; the writer task drains it
    assert await _read_all(peer, 200_000) == b"".join(chunks)
    stream.close()
    peer.close()


async def test_urgent_overtakes_the_queue_but_not_a_partly_sent_chunk(
    nursery: trio.Nursery,
) -> None:
    stream, peer = _pair(nursery)
    burst = [bytes([65 + i % 26]) * 5000 for i in range(40)]
    for chunk in burst:
        stream.send_nowait(chunk)
    stream.send_urgent(b"PING")  # before the writer task has run
    total = sum(map(len, burst)) + 4
    received = await _read_all(peer, total)
    at = received.index(b"PING")
    # The ping comes right after the end of a chunk, long before the end of the burst...
    boundaries = {sum(map(len, burst[:n])) for n in range(len(burst) + 1)}
    assert at in boundaries
    assert at < total // 2
    # ... and every chunk arrives whole and in order around it.
    assert received[:at] + received[at + 4 :] == b"".join(burst)
    stream.close()
    peer.close()


async def test_over_the_bound_the_peer_is_a_slow_consumer(nursery: trio.Nursery) -> None:
    ours, theirs = socket.socketpair()
    stream = RawStream(ours, max_buffered=100_000)
    stream.writer_nursery = nursery
    for _ in range(1000):
        stream.send_nowait(b"x" * 1000)
    assert stream.closed
    assert stream.close_reason == "slow consumer"
    assert stream.buffered == 0  # what was queued is dropped, not kept
    theirs.close()
