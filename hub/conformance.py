"""The conformance app: what the official Engine.IO and Socket.IO test suites run against.

It behaves as the reference test server of ``socketio/engine.io-protocol`` and
``socketio/socket.io-protocol`` (folder ``test-suite/``), on one port (3000, or ``PORT``):

- ``/engine.io/``: a bare Engine.IO endpoint that echoes every message, text and binary.
- ``/socket.io/``: a Socket.IO server with the main namespace and ``/custom``; on connect it emits
  ``auth`` with the CONNECT payload; ``message`` is answered with ``message-back`` and the same
  arguments; ``message-with-ack`` is acked with its arguments.

Both use pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1,000,000 bytes, and the Socket.IO
connect timeout is 1000 ms. Run it with ``make conformance`` or ``python -m hub.conformance``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import trio

from hub.engineio.session import SessionOptions
from hub.server import Server, ServerOptions, Socket
from hub.transport.asgi import ASGIApp
from hub.transport.engine import EngineOptions, EngineServer, EngineSocket
from hub.transport.native import serve
from hub.transport.router import Router

__all__ = [
    "ENGINE_OPTIONS",
    "EchoHandler",
    "conformance_asgi",
    "conformance_server",
    "main",
    "serve_conformance",
]

ENGINE_OPTIONS = EngineOptions(
    session=SessionOptions(ping_interval=0.3, ping_timeout=0.2, max_payload=1_000_000)
)


class EchoHandler:
    """Echoes every Engine.IO message back to its sender."""

    def on_open(self, socket: EngineSocket) -> None:
        pass

    def on_message(self, socket: EngineSocket, data: str | bytes) -> None:
        socket.send_message(data)

    async def on_close(self, socket: EngineSocket, reason: str) -> None:
        pass


def conformance_server() -> Server:
    """The Socket.IO server of the reference test server."""
    server = Server(
        ServerOptions(
            ping_interval=0.3,
            ping_timeout=0.2,
            max_payload=1_000_000,
            connect_timeout=1.0,
            cors_origins="*",
        )
    )
    for namespace in (server.main, server.of("/custom")):

        @namespace.on("connect")
        def connect(socket: Socket, auth: dict[str, Any]) -> None:
            socket.emit("auth", auth)

        @namespace.on("message")
        def message(socket: Socket, *args: Any) -> None:
            socket.emit("message-back", *args)

        @namespace.on("message-with-ack")
        def message_with_ack(socket: Socket, *args: Any) -> tuple[Any, ...]:
            return args

    return server


def conformance_asgi() -> ASGIApp:
    """The conformance app as an ASGI app (for hypercorn's trio worker)."""
    engine = EngineServer(EchoHandler(), ENGINE_OPTIONS)
    server = conformance_server()
    router = Router([("/engine.io/", engine), ("/socket.io/", server.app)])

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            await nursery.start(server.run)
            task_status.started()

    return ASGIApp(router, run)


async def serve_conformance(
    host: str = "127.0.0.1",
    port: int = 3000,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the conformance app until cancelled."""
    engine = EngineServer(EchoHandler(), ENGINE_OPTIONS)
    server = conformance_server()
    router = Router([("/engine.io/", engine), ("/socket.io/", server.app)])
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await nursery.start(server.run)
        bound = await nursery.start(serve, router, host, port)
        task_status.started(bound)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    port = int(os.environ.get("PORT", "3000"))
    host = os.environ.get("HOST", "localhost")
    print(f"conformance app on http://{host}:{port} (/engine.io/ and /socket.io/)", flush=True)
    trio.run(serve_conformance, host, port)


if __name__ == "__main__":
    main()
