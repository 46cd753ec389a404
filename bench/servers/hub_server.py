"""hub under test: its native listener, or (``--asgi``) ``server.asgi()`` under hypercorn's
trio worker. Behaviour: see ``common.py``."""

from __future__ import annotations

from typing import Any, cast

import hypercorn.config
import hypercorn.trio
import trio

import hub
from bench.servers.common import BACKLOG, PING_INTERVAL, PING_TIMEOUT, ROOM, Burst, arguments, ticks


def build(ping_interval: float = PING_INTERVAL, ping_timeout: float = PING_TIMEOUT) -> hub.Server:
    server = hub.Server(ping_interval=ping_interval, ping_timeout=ping_timeout)

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        socket.join(ROOM)

    @server.on("burst")
    async def burst(socket: hub.Socket, request: Burst) -> str:
        room = server.to(ROOM)
        for payload in ticks(request):
            room.emit("tick", payload)
            await trio.lowlevel.checkpoint()
        return "done"

    return server


async def main() -> None:
    args = arguments("hub, as the benchmark serves it", asgi=True)
    server = build(args.ping_interval, args.ping_timeout)
    if not args.asgi:
        await server.serve(args.host, args.port)  # listens with a backlog of 1024 too
        return
    config = hypercorn.config.Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.backlog = BACKLOG
    config.accesslog = None
    await hypercorn.trio.serve(cast(Any, server.asgi()), config)


if __name__ == "__main__":
    trio.run(main)
