"""Namespaces: handlers, middleware and the sockets connected to one namespace."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from hub.server.adapter import LocalAdapter
from hub.server.broadcast import BroadcastOperator
from hub.server.observer import Observer
from hub.server.socket import Socket

if TYPE_CHECKING:
    from hub.cluster.link import ClusterNamespace

__all__ = ["Handler", "Middleware", "Namespace"]

log = logging.getLogger("hub.server")

Handler = Callable[..., Any]
"""An event handler: ``(socket, *args)``, plain or ``async``; what it returns is the ack."""

Middleware = Callable[[Socket, dict[str, Any]], Awaitable[None] | None]
"""``(socket, auth)`` before the connect handler; raise ConnectionRefused to refuse."""

H = TypeVar("H", bound=Handler)


class Namespace:
    """One namespace: its handlers, its middleware, its sockets and rooms.

    Handlers are registered with :meth:`on`: ``"connect"`` gets ``(socket, auth)`` and may
    raise :class:`~hub.server.socket.ConnectionRefused`; ``"disconnect"`` gets
    ``(socket, reason)``; any other event gets ``(socket, *args)``, and when the client asked
    for an acknowledgement, what the handler returns is sent back as the ack (a tuple for
    several arguments). A plain ``def`` handler runs at once, in order, before the next packet
    of that connection is read; an ``async def`` handler runs in a task of the connection.
    """

    def __init__(self, name: str, *, template: Namespace | None = None) -> None:
        self.name = name
        self.handlers: dict[str, Handler] = template.handlers if template else {}
        self.middleware: list[Middleware] = template.middleware if template else []
        self.sockets: dict[str, Socket] = {}
        self.adapter = LocalAdapter()
        # Its link to the other nodes, when the server has a cluster (Server(cluster=...)):
        # broadcasts are handed to it after local delivery (hub.cluster.link).
        self.cluster: ClusterNamespace | None = None
        # The server's observers (hub.server.observer): the server's own list, shared.
        self.observers: list[Observer] = []

    def __repr__(self) -> str:
        return f"<Namespace {self.name}>"

    @overload
    def on(self, event: str) -> Callable[[H], H]: ...

    @overload
    def on(self, event: str, handler: H) -> H: ...

    def on(self, event: str, handler: H | None = None) -> H | Callable[[H], H]:
        """Register a handler, directly or as a decorator: ``@ns.on("message")``."""

        def register(handler: H) -> H:
            self.handlers[event] = handler
            return handler

        if handler is not None:
            return register(handler)
        return register

    def use(self, middleware: Middleware) -> Middleware:
        """Add a middleware, run for each connection before the connect handler."""
        self.middleware.append(middleware)
        return middleware

    # -- broadcasting ----------------------------------------------------------------------

    def to(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        """A broadcast to the sockets in any of ``rooms``."""
        return BroadcastOperator(self).to(*rooms)

    in_ = to

    def except_(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        """A broadcast to every socket but those in ``rooms``."""
        return BroadcastOperator(self).except_(*rooms)

    def emit(self, event: str, *args: Any) -> int:
        """Send an event to every socket of the namespace; returns how many it reached."""
        return BroadcastOperator(self).emit(event, *args)

    def disconnect_sockets(self, *, close: bool = False) -> int:
        return BroadcastOperator(self).disconnect(close=close)

    # -- running handlers ------------------------------------------------------------------

    async def _run_connect(
        self, socket: Socket, auth: dict[str, Any], *, middleware: bool = True
    ) -> None:
        for run in self.middleware if middleware else ():
            result = run(socket, auth)
            if inspect.isawaitable(result):
                await result
        handler = self.handlers.get("connect")
        if handler is not None:
            result = handler(socket, auth)
            if inspect.isawaitable(result):
                await result

    async def _run_disconnect(self, socket: Socket, reason: str) -> None:
        handler = self.handlers.get("disconnect")
        if handler is None:
            return
        try:
            result = handler(socket, reason)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("disconnect handler of %s failed", self.name)
