"""The ``hub`` command.

``hub serve`` starts a Socket.IO server; ``hub conformance`` starts the app that the official
protocol test suites run against.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import trio

from hub.server import Server, ServerOptions, Socket

__all__ = ["demo_server", "main"]


def demo_server(options: ServerOptions) -> Server:
    """A small server to try clients against: echo with ack, rooms, broadcast."""
    server = Server(options)

    @server.on("connect")
    def connect(socket: Socket, auth: dict[str, Any]) -> None:
        logging.getLogger("hub").info("connect %s from %s", socket.id, socket.handshake.address)

    @server.on("echo")
    def echo(socket: Socket, *args: Any) -> tuple[Any, ...]:
        socket.emit("echo", *args)
        return args

    @server.on("join")
    def join(socket: Socket, room: str) -> dict[str, bool]:
        socket.join(str(room))
        return {"ok": True}

    @server.on("say")
    def say(socket: Socket, room: str, *args: Any) -> int:
        return server.to(str(room)).emit("said", *args)

    return server


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="A Socket.IO server on Trio.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the Socket.IO server")
    serve.add_argument("--host", default=os.environ.get("HUB_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("HUB_PORT", "3000")))
    serve.add_argument("--path", default="/socket.io/")
    serve.add_argument("--cors-origin", action="append", default=None, metavar="ORIGIN")
    conformance = commands.add_parser(
        "conformance", help="run the app of the official protocol test suites"
    )
    conformance.add_argument("--host", default="localhost")
    conformance.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        if args.command == "serve":
            origins = args.cors_origin
            options = ServerOptions(path=args.path, cors_origins=origins or "*")
            server = demo_server(options)
            trio.run(server.serve, args.host, args.port)
        elif args.command == "conformance":
            from hub.conformance import serve_conformance

            print(f"conformance app on http://{args.host}:{args.port}", flush=True)
            trio.run(serve_conformance, args.host, args.port)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
