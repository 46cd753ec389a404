"""Observers: what a server tells the tools that watch it (the Admin UI, the status page).

An observer is registered with ``server.observers.append(observer)``, before the server runs.
The server calls its methods synchronously, inline, at the moment a thing happens; so a method
must be quick, must never wait, and should not raise (an exception is logged and the server goes
on). With no observer registered each hook costs one test of an empty list::

    class Joins(Observer):
        def on_join(self, socket: Socket, room: str) -> None:
            print(socket.id, "joined", room)

    server.observers.append(Joins())

The list is shared by the server and every one of its namespaces (``namespace.observers`` is
the same object), so a hook reached from a socket does not walk up to the server.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import trio

    from hub.server.broadcast import BroadcastOperator
    from hub.server.socket import Socket
    from hub.transport.engine import EngineSocket

__all__ = ["Observer", "notify"]

log = logging.getLogger("hub.server")


class Observer:
    """Override the hooks you need; each does nothing by default."""

    def on_serve(self, nursery: trio.Nursery) -> None:
        """The server runs; ``nursery`` (the server's) may own the observer's own tasks."""

    def on_open(self, engine: EngineSocket) -> None:
        """An Engine.IO connection was opened (``engine.transport`` says over what)."""

    def on_close(self, engine: EngineSocket, reason: str) -> None:
        """An Engine.IO connection ended, with the socket.io reason (``"transport close"``...)."""

    def on_connect(self, socket: Socket) -> None:
        """A socket connected to its namespace (after the connect handler accepted it)."""

    def on_refuse(self, socket: Socket, payload: dict[str, Any]) -> None:
        """A middleware or connect handler refused a socket; ``payload`` is the CONNECT_ERROR
        payload the client gets (``{"message": ..., "data": ...}``)."""

    def on_disconnect(self, socket: Socket, reason: str) -> None:
        """A socket left its namespace. Called before it leaves its rooms: ``socket.rooms``
        still holds them (the observer is not told of each of those leaves)."""

    def on_join(self, socket: Socket, room: str) -> None:
        """A socket joined a room (also its own id's, at connect)."""

    def on_leave(self, socket: Socket, room: str) -> None:
        """A socket left a room (not called for the rooms it leaves by disconnecting)."""

    def on_event(self, socket: Socket, event: str, args: tuple[Any, ...]) -> None:
        """A socket sent an event (before its handler runs)."""

    def on_emit(self, socket: Socket, event: str, args: tuple[Any, ...]) -> None:
        """An event was sent to one socket with ``socket.emit``."""

    def on_broadcast(
        self, operator: BroadcastOperator, event: str, args: tuple[Any, ...], reached: int
    ) -> None:
        """A broadcast was written to ``reached`` sockets of this node (``operator`` says to
        which rooms, except which)."""


def notify(observers: list[Observer], hook: str, *args: Any) -> None:
    """Call ``hook`` on each observer; one that raises is logged, and the others still run."""
    for observer in observers:
        try:
            getattr(observer, hook)(*args)
        except Exception:
            log.exception("observer %r failed in %s", observer, hook)
