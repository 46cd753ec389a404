"""The hub servers that both client suites drive (``test_interop_node``, ``test_interop_python``).

Each records what its handlers saw in a :class:`~interop.harness.Seen`, so that a test asserts
on both sides of the wire.
"""

from __future__ import annotations

from typing import Any

import hub
from interop.harness import Seen

__all__ = ["ALL_BYTES", "add_custom_namespace", "echo_server", "refusing_server"]

ALL_BYTES = bytes(range(256))
"""Every byte value once: binary attachments must come through unchanged."""


def echo_server(seen: Seen, *, welcome: bool = False, **options: Any) -> hub.Server:
    """A server that records (dis)connections and acknowledges ``echo`` with its arguments.

    Args:
        seen: gets ``connect`` (the socket), ``auth``, ``echo`` (the transport and the
            arguments) and ``disconnect`` (the socket id and the reason).
        welcome: greet each connection with ``welcome`` and ``{"sid": <its id>}``.
        options: :class:`hub.ServerOptions` fields.
    """
    server = hub.Server(hub.ServerOptions(**options))

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        seen.add("connect", socket)
        seen.add("auth", auth)
        if welcome:
            socket.emit("welcome", {"sid": socket.id})

    @server.on("echo")
    def echo(socket: hub.Socket, *args: Any) -> tuple[Any, ...]:
        seen.add("echo", (socket.transport, args))
        return args

    @server.on("disconnect")
    def disconnect(socket: hub.Socket, reason: str) -> None:
        seen.add("disconnect", (socket.id, reason))

    return server


def add_custom_namespace(server: hub.Server, seen: Seen) -> None:
    """Open ``/custom`` on ``server``: it tells each socket its namespace (event ``where``) and
    acknowledges ``echo`` with ``"custom"`` before the arguments; ``seen`` gets
    ``custom-connect`` (the socket) and ``custom-echo`` (the arguments)."""
    custom = server.of("/custom")

    @custom.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        seen.add("custom-connect", socket)
        socket.emit("where", socket.namespace.name)

    @custom.on("echo")
    def echo(socket: hub.Socket, *args: Any) -> tuple[Any, ...]:
        seen.add("custom-echo", args)
        return ("custom", *args)


def refusing_server(attempts: list[dict[str, Any]]) -> hub.Server:
    """A server that refuses every connection: ``Not authorized``, data ``{"code": "X"}``;
    ``attempts`` gets the ``auth`` of each."""
    server = hub.Server()

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        attempts.append(auth)
        raise hub.ConnectionRefused("Not authorized", data={"code": "X"})

    return server
