"""Nothing is kept for a client that has gone: one that vanishes without closing (its process
stopped) is let go within pingInterval + pingTimeout with all it held, and connect / disconnect
cycles leave sessions, sockets, rooms, tasks and memory where they were."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import trio
from interop.harness import CONNECT_TIMEOUT, Seen, node_command, open_client
from support.cycles import count_tasks, cycling_server, footprint, run_cycles

import hub

PING_INTERVAL = 0.3
PING_TIMEOUT = 0.3
CYCLES = 1000


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_client_that_vanishes_is_let_go_with_all_it_held(
    nursery: trio.Nursery, transport: str
) -> None:
    node_command()
    seen = Seen()
    # A client gone silent also leaves HTTP connections behind (polling): idle between
    # requests, just opened with no request yet, or with a request half sent, if it stopped
    # mid-write. Each is let go at its timeout.
    server = hub.Server(
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
        keepalive_timeout=1,
        header_timeout=1,
        body_timeout=1,
    )

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        socket.join("room")
        seen.add("connect", socket)

    @server.on("disconnect")
    def disconnect(socket: hub.Socket, reason: str) -> None:
        seen.add("disconnect", (reason, trio.current_time()))

    host, port = await nursery.start(server.serve, "127.0.0.1", 0)
    assert server._nursery is not None
    serving = server._nursery.parent_task  # the server's own tasks, not the test's
    tasks_before = count_tasks(serving)
    options = {"url": f"http://{host}:{port}", "transports": [transport], "reconnection": False}
    async with open_client(nursery, node_command(), options) as client:
        await client.expect("connect", timeout=CONNECT_TIMEOUT)
        await seen.wait("connect")
        client.process.send_signal(signal.SIGSTOP)  # gone without a word, as a frozen laptop
        stopped = trio.current_time()
        try:
            ((reason, at),) = await seen.wait("disconnect", timeout=5)
            after = await footprint(server)
            # The session's tasks are gone now; the TCP connection's own task waits for the
            # answer to its close frame (a WebSocket), at most the close timeout (5 s), or for
            # the rest of a request (polling), at most the timeouts above.
            with trio.move_on_after(6):
                while count_tasks(serving) > tasks_before:
                    await trio.sleep(0.05)
            tasks_after = count_tasks(serving)
        finally:
            client.process.send_signal(signal.SIGCONT)
    assert reason == "ping timeout"
    # Noticed by the first ping it does not answer: within one interval plus the timeout.
    assert at - stopped <= PING_INTERVAL + PING_TIMEOUT + 0.1
    assert (after.sessions, after.sockets, after.rooms) == (0, 0, 0)
    assert tasks_after == tasks_before


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_connect_disconnect_cycles_leave_nothing_behind(
    nursery: trio.Nursery, transport: str
) -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        server = cycling_server()
        host, port = await nursery.start(server.serve, "127.0.0.1", 0)
        address = f"{host}:{port}"
        await run_cycles(nursery, server, address, transport, 300)  # caches, pools, heaps
        before = await footprint(server)
        await run_cycles(nursery, server, address, transport, CYCLES)
        after = await footprint(server)
    finally:
        tracemalloc.stop()
    assert (after.sessions, after.sockets, after.rooms) == (0, 0, 0)
    assert after.tasks == before.tasks
    # Flat: well under 100 bytes a cycle, where one session kept would be kilobytes a cycle
    # (what varies is garbage of bounded size: deadlines of sessions just closed, until the
    # timer heap is compacted, and the client's own buffers).
    growth = after.traced_bytes - before.traced_bytes
    assert growth < CYCLES * 100, (growth, before, after)
