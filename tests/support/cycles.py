"""Connect / disconnect cycles against an in-process server, and what they leave behind.

Each cycle opens a session, connects to the main namespace, joins a room, and leaves: over
WebSocket (a close frame) or over long-polling (the client's close packet). After a warm-up, the
live objects the server keeps (sessions, sockets, rooms), the trio tasks and the memory that
tracemalloc sees must come back to where they were.

Short runs are in ``tests/test_server_leaks.py``; the long run is ``make leaks``::

    python tests/support/cycles.py --cycles 20000
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
import trio_websocket

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import hub


@attrs.frozen
class Footprint:
    """What the server holds at one moment."""

    sessions: int
    sockets: int
    rooms: int
    tasks: int
    traced_bytes: int


def count_tasks(root: trio.lowlevel.Task | None = None) -> int:
    """The trio tasks under ``root`` (the run's root task by default), itself included."""
    count = 0
    start = root or trio.lowlevel.current_root_task()
    assert start is not None
    pending = [start]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


async def footprint(server: hub.Server) -> Footprint:
    for _ in range(5):  # let the tasks of the sessions just closed finish
        await trio.sleep(0.02)
    gc.collect()
    return Footprint(
        sessions=len(server.engine.sockets),
        sockets=sum(len(ns.sockets) for ns in server.namespaces.values()),
        rooms=sum(len(ns.adapter.rooms) for ns in server.namespaces.values()),
        tasks=count_tasks(),
        traced_bytes=tracemalloc.get_traced_memory()[0],
    )


def cycling_server() -> hub.Server:
    server = hub.Server(ping_interval=30, ping_timeout=30)

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        socket.join("room")

    return server


async def websocket_cycle(nursery: trio.Nursery, address: str) -> None:
    host, port = address.rsplit(":", 1)
    ws = await trio_websocket.connect_websocket(
        nursery, host, int(port), "/socket.io/?EIO=4&transport=websocket", use_ssl=False
    )
    await ws.get_message()
    await ws.send_message("40")
    await ws.get_message()
    await ws.aclose()


async def polling_cycle(http: httpx.AsyncClient) -> None:
    opened = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
    sid = json.loads(opened.text[1:])["sid"]
    params = {"EIO": "4", "transport": "polling", "sid": sid}
    await http.post("/socket.io/", params=params, content="40")
    await http.get("/socket.io/", params=params)
    await http.post("/socket.io/", params=params, content="1")


async def run_cycles(
    nursery: trio.Nursery, server: hub.Server, address: str, transport: str, cycles: int
) -> None:
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        for _ in range(cycles):
            if transport == "websocket":
                await websocket_cycle(nursery, address)
            else:
                await polling_cycle(http)


async def measure(transport: str, cycles: int, warmup: int) -> dict[str, Any]:
    """Run ``warmup`` then ``cycles`` cycles; the footprint before and after, and the time."""
    tracemalloc.start()
    server = cycling_server()
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.serve, "127.0.0.1", 0)
        address = f"{host}:{port}"
        await run_cycles(nursery, server, address, transport, warmup)
        before = await footprint(server)
        started = time.perf_counter()
        await run_cycles(nursery, server, address, transport, cycles)
        elapsed = time.perf_counter() - started
        after = await footprint(server)
        nursery.cancel_scope.cancel()
    tracemalloc.stop()
    return {
        "transport": transport,
        "cycles": cycles,
        "seconds": round(elapsed, 1),
        "before": attrs.asdict(before),
        "after": attrs.asdict(after),
        "traced_growth_bytes": after.traced_bytes - before.traced_bytes,
        "bytes_per_cycle": round((after.traced_bytes - before.traced_bytes) / cycles, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--transports", default="websocket,polling")
    args = parser.parse_args()
    for transport in args.transports.split(","):
        result = trio.run(measure, transport, args.cycles, args.warmup)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
