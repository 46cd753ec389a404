"""The status page: what the hub is doing, live, at ``/``.

The page (``hub/app/static/status.html`` and ``status.js``) runs the official client bundle
(``socket.io-client/dist/socket.io.min.js`` from npm, served at ``/static/socket.io.min.js``)
and connects to the hub's own namespace ``/status``, which pushes ``stats`` every second:

- connections (Engine.IO clients, by transport), users, sockets, and sockets per namespace;
- rooms of the main namespace (how many, the largest), without the room each socket has for
  its id;
- events per second, in (sent by clients) and out (written to sockets), over the last minute
  (``history`` on connect, then one point a second), drawn as a small chart;
- the last broadcasts (``/internal/emit``, ``hub.emit(...)``: event, rooms, sockets reached,
  and in development the start of the payload);
- the last refused connections (time, namespace, ``code``, message, address).

Traffic of the hub's own tools (``/admin``, ``/status``) is not counted as traffic.

On in development (``HUB_STATUS_PAGE=0`` turns it off); in production only with
``HUB_STATUS_PAGE=1``, and then ``/status`` asks for the Admin UI's credentials (the page
shows a login form), so the page tells nothing to whoever can reach the port.

:func:`install_tools` puts the Admin UI (:mod:`hub.app.admin`) and the status page on a
:class:`~hub.app.hub.Hub` before it serves.
"""

from __future__ import annotations

import html
import json
import logging
import socket as socket_module
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from hub.app.admin import (
    DEV_ADMIN_PASSWORD,
    STATUS_NAMESPACE,
    TOOL_NAMESPACES,
    AdminSettings,
    AdminUI,
    Guard,
    admin_ui_app,
    iso,
)
from hub.app.assets import HUB_STATIC, SECURITY_HEADERS, StaticFiles, find_node_modules, not_found
from hub.protocol import Event
from hub.server.observer import Observer
from hub.server.socket import Socket, encode_outgoing
from hub.transport.http import Request, Response, WebSocket

if TYPE_CHECKING:
    from hub.app.hub import Hub
    from hub.server.broadcast import BroadcastOperator

__all__ = ["StatusPage", "StatusSite", "install_tools"]

log = logging.getLogger("hub.status")

HISTORY = 60
"""Seconds of events per second kept (and drawn)."""
RECENT = 20
"""Broadcasts and refusals kept for the page."""
TOP_ROOMS = 15
"""Rooms listed (the largest)."""
PREVIEW = 160
"""Characters of a broadcast's payload shown in development."""
CLIENT_BUNDLE = "socket.io-client/dist/socket.io.min.js"


class StatusPage(Observer):
    """The ``/status`` namespace of a hub and the counters behind it.

    Args:
        hub: the hub (its server, config and connected users).
        guard: the credentials check (production); None lets anyone in (development).
        server_id: this node's name on the page.
    """

    def __init__(self, hub: Hub, *, guard: Guard | None, server_id: str) -> None:
        self.hub = hub
        self.server = hub.server
        self.server_id = server_id
        self.development = not hub.config.production
        self.namespace = self.server.of(STATUS_NAMESPACE)
        if guard is not None:
            self.namespace.use(guard)
        self.namespace.on("connect", self._on_viewer)
        # Counted during the current second, then moved to the history.
        self._in = 0
        self._out = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.broadcasts: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.refusals: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._started = time.monotonic()
        self.server.observers.append(self)

    def __repr__(self) -> str:
        return f"<StatusPage {self.server_id}>"

    # -- what the page gets -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The page's ``stats``: now, and the last second's rate."""
        server = self.server
        engine_sockets = server.engine.sockets
        polling = sum(1 for engine in engine_sockets.values() if engine.transport == "polling")
        main = server.main
        rooms = [
            (name, len(members))
            for name, members in main.adapter.rooms.items()
            if name not in main.sockets  # each socket's own room
        ]
        rooms.sort(key=lambda room: (-room[1], room[0]))
        last = self.history[-1] if self.history else {"time": iso(), "in": 0, "out": 0}
        return {
            "node": self.server_id,
            "env": str(self.hub.config.env),
            "uptime": round(time.monotonic() - self._started),
            "time": iso(),
            "clients": len(engine_sockets),
            "polling": polling,
            "websocket": len(engine_sockets) - polling,
            "users": len(self.hub.connections),
            "sockets": len(main.sockets),
            "namespaces": [
                {"name": namespace.name, "sockets": len(namespace.sockets)}
                for namespace in server.namespaces.values()
            ],
            "rooms": {
                "count": len(rooms),
                "top": [{"name": name, "sockets": size} for name, size in rooms[:TOP_ROOMS]],
            },
            "rate": last,
            "broadcasts": list(self.broadcasts),
            "refusals": list(self.refusals),
        }

    def _on_viewer(self, socket: Socket, auth: dict[str, Any]) -> None:
        socket.emit("history", list(self.history))
        socket.emit("stats", self.snapshot())

    def on_serve(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._run)

    async def _run(self) -> None:
        """Once a second: close the second's counts and push ``stats`` to the viewers."""
        tick = trio.current_time()
        while True:
            tick += 1.0
            await trio.sleep_until(tick)
            self.history.append({"time": iso(), "in": self._in, "out": self._out})
            self._in = self._out = 0
            viewers = self.namespace.sockets
            if viewers:
                # This node's viewers only (a cluster's other nodes have their own page),
                # encoded once for all.
                packet = Event("stats", (self.snapshot(),), namespace=STATUS_NAMESPACE)
                self.namespace.adapter.deliver(
                    encode_outgoing(packet), frozenset(), frozenset(), frozenset(), viewers.values()
                )

    # -- observing the server ------------------------------------------------------------

    def on_event(self, socket: Socket, event: str, args: tuple[Any, ...]) -> None:
        if socket.namespace.name not in TOOL_NAMESPACES:
            self._in += 1

    def on_emit(self, socket: Socket, event: str, args: tuple[Any, ...]) -> None:
        if socket.namespace.name not in TOOL_NAMESPACES:
            self._out += 1

    def on_broadcast(
        self, operator: BroadcastOperator, event: str, args: tuple[Any, ...], reached: int
    ) -> None:
        name = operator.namespace.name
        if name in TOOL_NAMESPACES:
            return
        self._out += reached
        entry: dict[str, Any] = {
            "time": iso(),
            "namespace": name,
            "event": event,
            "to": sorted(operator.rooms),
            "except": sorted(operator.except_rooms),
            "delivered": reached,
        }
        if self.development:
            payload = args[0] if len(args) == 1 else list(args)
            entry["data"] = json.dumps(payload, default=str, separators=(",", ":"))[:PREVIEW]
        self.broadcasts.appendleft(entry)

    def on_refuse(self, socket: Socket, payload: dict[str, Any]) -> None:
        data = payload.get("data")
        code = data.get("code") if isinstance(data, dict) else None
        self.refusals.appendleft(
            {
                "time": iso(),
                "namespace": socket.namespace.name,
                "code": str(code) if code is not None else None,
                "message": str(payload.get("message", "")),
                "address": socket.handshake.address,
            }
        )


class StatusSite:
    """The page and its files: ``/`` and ``/static/...`` (the hub's own files, and the
    client bundle from npm at ``/static/socket.io.min.js``). Every other path is a 404.

    Args:
        path: the hub's Socket.IO path, written into the page.
        environ: where ``HUB_NODE_MODULES`` may be.
    """

    def __init__(self, *, path: str, environ: Mapping[str, str]) -> None:
        template = (HUB_STATIC / "status.html").read_text(encoding="utf-8")
        page = template.replace("__HUB_PATH__", html.escape(path, quote=True))
        self.page = Response(
            200,
            (
                ("Content-Type", "text/html; charset=utf-8"),
                ("Cache-Control", "no-cache"),
                *SECURITY_HEADERS,
            ),
            page.encode(),
        )
        self.static = StaticFiles("/static/", HUB_STATIC)
        node_modules = find_node_modules(environ, needs=CLIENT_BUNDLE)
        self.client: StaticFiles | None = None
        if node_modules is not None:
            self.client = StaticFiles("/static/", (node_modules / CLIENT_BUNDLE).parent)
        else:
            log.warning(
                "status page: %s is not installed (npm install): the page cannot connect",
                CLIENT_BUNDLE,
            )

    async def handle_websocket(self, request: Request, websocket: WebSocket) -> None:
        await websocket.reject(not_found())

    async def handle_http(self, request: Request) -> Response:
        if request.path == "/":
            if request.method != "GET":
                return Response.text(405, "method not allowed", (("Allow", "GET"),))
            return self.page
        if request.path.startswith("/static/socket.io.min.js"):
            return await self.client.handle_http(request) if self.client else not_found()
        if request.path.startswith("/static/"):
            return await self.static.handle_http(request)
        return not_found()


def install_tools(hub: Hub, environ: Mapping[str, str], *, demo: bool = False) -> AdminSettings:
    """Put the Admin UI and the status page on ``hub``, as ``environ`` configures them.

    Call it before ``hub.serve()``: it registers namespaces, routes and observers.

    Args:
        hub: the hub.
        environ: ``HUB_ADMIN_USERNAME``, ``HUB_ADMIN_PASSWORD_HASH``, ``HUB_ADMIN_READONLY``,
            ``HUB_STATUS_PAGE``, ``HUB_NODE_MODULES`` (see :meth:`AdminSettings.from_env`).
        demo: ``hub serve --demo``: in development, the Admin UI's default credentials.

    Returns:
        The settings used.

    Raises:
        hub.app.config.ConfigError: see :meth:`AdminSettings.from_env`.
    """
    config = hub.config
    settings = AdminSettings.from_env(environ, production=config.production, demo=demo)
    server_id = config.node_id or socket_module.gethostname()
    guard = Guard(settings.credentials) if settings.credentials is not None else None
    base = f"http://{config.host}:{config.port}"
    if guard is not None:
        AdminUI(hub.server, settings, guard, server_id=server_id)
        routes = admin_ui_app(environ, path=config.path)
        for prefix, app in routes:
            hub.server.route(prefix, app)
        where = (
            f"{base}/admin-ui/"
            if routes
            else "https://admin.socket.io (npm install serves it here)"
        )
        who = f"user {guard.credentials.username}"
        if settings.default_credentials:
            who += f", password {DEV_ADMIN_PASSWORD} (the development default)"
        log.info(
            "Admin UI: %s, namespace %s, %s%s", where, "/admin", who,
            ", read-only" if settings.readonly else "",
        )  # fmt: skip
    else:
        log.info(
            "Admin UI off: set HUB_ADMIN_USERNAME and HUB_ADMIN_PASSWORD_HASH"
            " (or run hub serve --demo in development)"
        )
    if settings.status_page:
        StatusPage(hub, guard=guard if config.production else None, server_id=server_id)
        hub.server.route("/", StatusSite(path=config.path, environ=environ))
        log.info("status page: %s/", base)
    return settings
