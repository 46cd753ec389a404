"""python-socketio 5 under test: its ASGI app under uvicorn (uvloop, httptools, websockets).
Behaviour: see ``common.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
import uvicorn

from bench.servers.common import BACKLOG, PING_INTERVAL, PING_TIMEOUT, ROOM, Burst, arguments, ticks


def build(
    ping_interval: float = PING_INTERVAL, ping_timeout: float = PING_TIMEOUT
) -> socketio.AsyncServer:
    sio = socketio.AsyncServer(
        async_mode="asgi",
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        http_compression=False,
    )

    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        await sio.enter_room(sid, ROOM)

    async def burst(sid: str, request: Burst) -> str:
        for payload in ticks(request):
            await sio.emit("tick", payload, room=ROOM)
            await asyncio.sleep(0)  # emit only queues; let the sockets' writer tasks run
        return "done"

    sio.on("connect", connect)
    sio.on("burst", burst)
    return sio


def main() -> None:
    args = arguments("python-socketio, as the benchmark serves it")
    config = uvicorn.Config(
        socketio.ASGIApp(build(args.ping_interval, args.ping_timeout)),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets",
        ws_ping_interval=None,  # Engine.IO pings; no second heartbeat
        ws_per_message_deflate=False,
        lifespan="off",
        backlog=BACKLOG,
        access_log=False,
        log_level="warning",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
