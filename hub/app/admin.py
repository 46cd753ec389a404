"""The server side of the Socket.IO Admin UI (``@socket.io/admin-ui`` 0.5.1), on ``/admin``.

The Admin UI (the npm package's ``ui/dist``, served at ``/admin-ui/`` when it is installed, or
the hosted one) connects to the namespace ``/admin`` with the stock client and speaks the
protocol of the package's ``instrument()`` (its ``dist/index.js``), which this module speaks
for the hub:

- **Basic auth**: the CONNECT payload ``{username, password}`` is checked against a bcrypt hash
  (``HUB_ADMIN_USERNAME``, ``HUB_ADMIN_PASSWORD_HASH``; any ``$2a$``/``$2b$``/``$2y$`` hash,
  as made by ``htpasswd -bnBC 10 "" PASSWORD`` or bcryptjs). A success answers ``session``
  with a session id, which the UI offers (``{sessionId}``) when it reconnects. A wrong
  password is refused ``invalid credentials``, the message the UI recognises.
- **On connect**: ``config`` ``{supportedFeatures}``; in development also ``all_sockets``.
- **Every two seconds**: ``server_stats`` ``{serverId, hostname, pid, uptime, clientsCount,
  pollingClientsCount, aggregatedEvents, namespaces}``; ``aggregatedEvents`` counts
  ``rawConnection``, ``rawDisconnection`` (by reason), ``bytesIn`` and ``bytesOut`` (what the
  listener read and wrote, HTTP and WebSocket framing included) per second.
- **Development only** (``ALL_EVENTS``): ``socket_connected``, ``socket_updated`` (the transport
  after an upgrade), ``socket_disconnected``, ``room_joined``, ``room_left``,
  ``event_received`` and ``event_sent`` (``socket.emit``; not broadcasts, as in Node), for the
  sockets of every namespace but ``/admin`` and ``/status`` (which get the first five only).
- **Commands** (not in read-only mode, ``HUB_ADMIN_READONLY=1``): ``emit (nsp, filter, event,
  ...args)``, ``join (nsp, room, filter)``, ``leave (nsp, room, filter)``, ``_disconnect (nsp,
  close, filter)``; ``filter`` is a room (a socket id is one) or empty for the whole namespace.
  With a cluster they act on every node (``server.to(...).everywhere``); each is logged.

Headers that carry secrets (``Authorization``, ``Cookie``) and a ``token`` query parameter are
shown as ``[redacted]``: the UI displays each socket's handshake.

The Admin UI is on when credentials are configured, or in development with ``hub serve
--demo``, whose documented default is user ``admin``, password ``admin``.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import re
import secrets
import socket as socket_module
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import bcrypt
import trio

from hub.app.assets import SECURITY_HEADERS, StaticFiles, find_node_modules
from hub.app.config import ConfigError
from hub.app.logs import redact
from hub.cluster.errors import ClusterError
from hub.errors import LocalProtocolError
from hub.server.broadcast import BroadcastOperator
from hub.server.observer import Observer
from hub.server.socket import ConnectionRefused, Socket
from hub.transport.http import Response

if TYPE_CHECKING:
    from hub.cluster.remote import RemoteSocket
    from hub.server.server import Server
    from hub.transport.engine import EngineSocket

__all__ = [
    "ADMIN_NAMESPACE",
    "DEV_ADMIN_PASSWORD",
    "DEV_ADMIN_USERNAME",
    "AdminCredentials",
    "AdminSettings",
    "AdminUI",
    "Guard",
    "admin_ui_app",
    "serialize_socket",
]

log = logging.getLogger("hub.admin")

ADMIN_NAMESPACE = "/admin"
STATUS_NAMESPACE = "/status"
TOOL_NAMESPACES = frozenset({ADMIN_NAMESPACE, STATUS_NAMESPACE})
"""Namespaces of the hub's own tools: their events are not reported as traffic."""

# Development with --demo only: documented, so `make run` opens the Admin UI at once.
DEV_ADMIN_USERNAME = "admin"
DEV_ADMIN_PASSWORD = "admin"
DEV_ADMIN_PASSWORD_HASH = "$2b$10$DgnGwXCPp1WjTS7LFdNryuorQ.dRB4zbMdhJTl./SVvMZu5oGfhCO"

_BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12]\d|3[01])\$[./A-Za-z0-9]{53}")
BCRYPT_MAX_BYTES = 72
"""bcrypt reads the first 72 bytes of a password; bcryptjs cuts there too, so do we."""

SESSION_LIFETIME = 24 * 3600.0
MAX_SESSIONS = 1000
"""Sessions kept; past it the oldest is forgotten (its UI asks for the password again)."""
MAX_WAITING_CHECKS = 16
"""Password checks waiting for a thread; past it a login is refused at once ("busy")."""

REDACTED = "[redacted]"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
SECRET_QUERY = frozenset({"token", "access_token"})

STATS_INTERVAL = 2.0
"""Seconds between two ``server_stats``, as the package's ``initStatsEmitter``."""

ALL_FEATURES = ("EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT")


# -- configuration ----------------------------------------------------------------------------


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, not {raw!r}")


@attrs.frozen(repr=False)
class AdminCredentials:
    """The Admin UI's user name and the bcrypt hash of its password.

    Raises:
        ConfigError: the hash is not a bcrypt hash.
    """

    username: str
    password_hash: str = attrs.field()

    @password_hash.validator
    def _check_hash(self, attribute: object, value: str) -> None:
        if _BCRYPT_HASH.fullmatch(value) is None:
            raise ConfigError(
                "HUB_ADMIN_PASSWORD_HASH must be a bcrypt hash ($2b$10$ and 53 more characters),"
                " e.g. from: python -c \"import bcrypt; print(bcrypt.hashpw(b'PASSWORD',"
                ' bcrypt.gensalt()).decode())"'
            )

    def __repr__(self) -> str:
        return f"AdminCredentials(username={self.username!r})"  # never the hash

    def check(self, username: str, password: str) -> bool:
        """Whether they match; takes a bcrypt's time (~0.1 s at cost 10): run it in a thread."""
        hashed = self.password_hash.encode()
        matches = bcrypt.checkpw(password.encode()[:BCRYPT_MAX_BYTES], hashed)
        return hmac.compare_digest(username.encode(), self.username.encode()) and matches


@attrs.frozen
class AdminSettings:
    """What the Admin UI and the status page run with (:meth:`from_env`).

    Attributes:
        credentials: who may log in; None: the Admin UI is off.
        readonly: no commands (emit, join, leave, disconnect).
        development: the socket list and every event are reported (``ALL_EVENTS``).
        status_page: the status page is served at ``/`` (and ``/status`` answers).
        default_credentials: ``credentials`` are the development default (admin / admin).
    """

    credentials: AdminCredentials | None = None
    readonly: bool = False
    development: bool = True
    status_page: bool = True
    default_credentials: bool = False

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str], *, production: bool, demo: bool = False
    ) -> AdminSettings:
        """Read ``HUB_ADMIN_USERNAME``, ``HUB_ADMIN_PASSWORD_HASH``, ``HUB_ADMIN_READONLY`` and
        ``HUB_STATUS_PAGE``.

        In development the status page is on unless ``HUB_STATUS_PAGE=0``, and ``demo``
        (``hub serve --demo``) gives the Admin UI the default credentials when none are set. In
        production the status page is on only with ``HUB_STATUS_PAGE=1``, and then only with
        admin credentials, which it asks for.

        Raises:
            ConfigError: one of the two credentials without the other, a hash that is not
                bcrypt, a flag that is not 0 or 1, or the production status page without
                credentials.
        """
        username = environ.get("HUB_ADMIN_USERNAME", "").strip()
        password_hash = environ.get("HUB_ADMIN_PASSWORD_HASH", "").strip()
        if bool(username) != bool(password_hash):
            raise ConfigError("set both HUB_ADMIN_USERNAME and HUB_ADMIN_PASSWORD_HASH, or neither")
        credentials = AdminCredentials(username, password_hash) if username else None
        default = False
        if credentials is None and demo and not production:
            credentials = AdminCredentials(DEV_ADMIN_USERNAME, DEV_ADMIN_PASSWORD_HASH)
            default = True
        status_page = _flag(environ, "HUB_STATUS_PAGE", not production)
        if production and status_page and credentials is None:
            raise ConfigError(
                "HUB_STATUS_PAGE=1 in production needs HUB_ADMIN_USERNAME and"
                " HUB_ADMIN_PASSWORD_HASH: the status page asks for them"
            )
        return cls(
            credentials=credentials,
            readonly=_flag(environ, "HUB_ADMIN_READONLY", False),
            development=not production,
            status_page=status_page,
            default_credentials=default,
        )


# -- authentication ---------------------------------------------------------------------------


class Guard:
    """A namespace middleware that lets in the admin: by password, or by a session id.

    The CONNECT payload is ``{username, password}`` (a new session id is sent as ``session``)
    or ``{sessionId}`` (from an earlier login, valid for a day). Password checks run in a
    thread, two at a time, so a login never stalls the hub; with more than
    :data:`MAX_WAITING_CHECKS` waiting, a login is refused at once.

    Refusals (``connect_error`` in the client, ``err.message`` / ``err.data.code``):
    ``invalid credentials`` (``INVALID_CREDENTIALS``), ``session expired``
    (``SESSION_EXPIRED``), ``busy`` (``BUSY``); with nothing offered at all the message is empty
    (``CREDENTIALS_REQUIRED``), so the UI shows its login form without an error.
    """

    def __init__(
        self, credentials: AdminCredentials, *, session_lifetime: float = SESSION_LIFETIME
    ) -> None:
        self.credentials = credentials
        self.session_lifetime = session_lifetime
        self._sessions: OrderedDict[str, float] = OrderedDict()  # id -> expiry (trio clock)
        self._limiter = trio.CapacityLimiter(2)

    async def __call__(self, socket: Socket, auth: dict[str, Any]) -> None:
        session_id = auth.get("sessionId")
        if isinstance(session_id, str) and self._session_valid(session_id):
            return
        username, password = auth.get("username"), auth.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            if session_id:
                raise ConnectionRefused("session expired", {"code": "SESSION_EXPIRED"})
            raise ConnectionRefused("", {"code": "CREDENTIALS_REQUIRED"})
        if self._limiter.statistics().tasks_waiting >= MAX_WAITING_CHECKS:
            raise ConnectionRefused("busy", {"code": "BUSY"})
        check = functools.partial(self.credentials.check, username, password)
        if not await trio.to_thread.run_sync(check, limiter=self._limiter):
            log.warning(
                "%s: invalid credentials from %s", socket.namespace.name, socket.handshake.address
            )
            raise ConnectionRefused("invalid credentials", {"code": "INVALID_CREDENTIALS"})
        socket.emit("session", self._new_session())
        log.info(
            "%s: %s logged in from %s", socket.namespace.name, username, socket.handshake.address
        )

    def _session_valid(self, session_id: str) -> bool:
        expiry = self._sessions.get(session_id)
        if expiry is None:
            return False
        if expiry < trio.current_time():
            del self._sessions[session_id]
            return False
        return True

    def _new_session(self) -> str:
        session_id = secrets.token_hex(16)
        self._sessions[session_id] = trio.current_time() + self.session_lifetime
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id


# -- what the UI is told ----------------------------------------------------------------------


def iso(when: float | None = None) -> str:
    """A time as JavaScript's ``Date.toJSON()`` writes it (what the package sends)."""
    moment = datetime.fromtimestamp(time.time() if when is None else when, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plain(value: Any) -> Any:
    """``value`` as JSON can carry it (what is not JSON becomes its ``str``)."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (ValueError, RecursionError):
        return None


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: REDACTED if name in SECRET_HEADERS else value for name, value in headers.items()}


def _query(query: Mapping[str, str]) -> dict[str, str]:
    return {name: REDACTED if name in SECRET_QUERY else value for name, value in query.items()}


def _handshake(
    headers: Mapping[str, str], query: Mapping[str, str], address: str, issued: float, path: str
) -> dict[str, Any]:
    shown = _headers(headers)
    shown_query = _query(query)
    return {
        "address": address,
        "headers": shown,
        "query": shown_query,
        "issued": int(issued * 1000),
        "secure": headers.get("x-forwarded-proto", "").lower() == "https",
        "time": iso(issued),
        "url": f"{path}?{urllib.parse.urlencode(shown_query)}" if shown_query else path,
        "xdomain": "origin" in headers,
    }


def serialize_socket(socket: Socket) -> dict[str, Any]:
    """A socket of this node as the package's ``serialize()`` describes it."""
    engine = socket.client.engine
    handshake = socket.handshake
    data = plain(socket.data)
    return {
        "id": socket.id,
        "clientId": engine.sid[:12],
        "transport": socket.transport,
        "nsp": socket.namespace.name,
        "data": data if isinstance(data, dict) else {},
        "handshake": _handshake(
            handshake.headers,
            handshake.query,
            handshake.address,
            handshake.issued,
            engine.request.raw_path or engine.request.path,
        ),
        # Its own room too: the newcomer asking for the list has not joined it yet.
        "rooms": sorted(socket.rooms | {socket.id}),
    }


def serialize_remote(remote: RemoteSocket, nsp: str) -> dict[str, Any]:
    """A socket of another node (``fetch_sockets``): its transport and client are known only
    when that node says so (a Node node running the package puts them in ``data._admin``)."""
    data = plain(remote.data)
    data = data if isinstance(data, dict) else {}
    known = data.pop("_admin", None)
    known = known if isinstance(known, dict) else {}
    handshake = remote.handshake
    return {
        "id": remote.id,
        "clientId": str(known.get("clientId") or remote.id[:12]),
        "transport": str(known.get("transport") or ""),
        "nsp": nsp,
        "data": data,
        "handshake": _handshake(
            handshake.headers, handshake.query, handshake.address, handshake.issued, ""
        ),
        "rooms": sorted(remote.rooms),
    }


class EventBuffer:
    """Counts of engine events per second and type, until ``server_stats`` takes them.

    Bounded: at most :attr:`limit` (second, type, subtype) keys; more are not counted.
    """

    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._counts: dict[tuple[int, str, str | None], int] = {}

    def push(self, kind: str, subtype: str | None = None, count: int = 1) -> None:
        key = (int(time.time()) * 1000, kind, subtype)
        if key in self._counts:
            self._counts[key] += count
        elif len(self._counts) < self.limit:
            self._counts[key] = count

    def take(self) -> list[dict[str, Any]]:
        values = [
            {"timestamp": second, "type": kind, "subType": subtype, "count": count}
            if subtype is not None
            else {"timestamp": second, "type": kind, "count": count}
            for (second, kind, subtype), count in self._counts.items()
        ]
        self._counts.clear()
        return values


# -- the namespace ----------------------------------------------------------------------------


class AdminUI(Observer):
    """The ``/admin`` namespace of ``server``, and the observer that feeds it.

    Args:
        server: the Socket.IO server (the hub's); register before it runs.
        settings: credentials (required), read-only, development.
        guard: the credentials check (shared with the status page).
        server_id: the name of this node in the UI's server list.
    """

    def __init__(
        self, server: Server, settings: AdminSettings, guard: Guard, *, server_id: str
    ) -> None:
        self.server = server
        self.settings = settings
        self.server_id = server_id
        self.namespace = server.of(ADMIN_NAMESPACE)
        self.events = EventBuffer()
        self.features = [] if settings.readonly else list(ALL_FEATURES)
        self.features.append("AGGREGATED_EVENTS")
        if settings.development:
            self.features.append("ALL_EVENTS")
        self._started = time.monotonic()
        self._hostname = socket_module.gethostname()
        # Sockets still on polling, whose upgrade is told as ``socket_updated`` (development).
        self._polling: dict[str, Socket] = {}
        # The engine's byte totals at the last tick (hub.transport.counters), for the per-second
        # ``bytesIn`` / ``bytesOut`` of the UI's chart.
        self._bytes = (0, 0)
        self.namespace.use(guard)
        self.namespace.on("connect", self._on_admin)
        if not settings.readonly:
            self.namespace.on("emit", self._emit)
            self.namespace.on("join", self._join)
            self.namespace.on("leave", self._leave)
            self.namespace.on("_disconnect", self._disconnect)
        server.observers.append(self)

    def __repr__(self) -> str:
        return f"<AdminUI {self.server_id}>"

    # -- what is sent --------------------------------------------------------------------

    def stats(self, *, take: bool = True) -> dict[str, Any]:
        """``server_stats``: this node, its connections and namespaces, and (``take``) the
        engine events counted since the last one."""
        engine_sockets = self.server.engine.sockets
        polling = sum(1 for engine in engine_sockets.values() if engine.transport == "polling")
        return {
            "serverId": self.server_id,
            "hostname": self._hostname,
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self._started, 3),
            "clientsCount": len(engine_sockets),
            "pollingClientsCount": polling,
            "aggregatedEvents": self.events.take() if take else [],
            "namespaces": [
                {"name": namespace.name, "socketsCount": len(namespace.sockets)}
                for namespace in self.server.namespaces.values()
            ],
        }

    async def all_sockets(self, newcomer: Socket | None = None) -> list[dict[str, Any]]:
        """Every socket of every namespace, on every node when there is a cluster."""
        described = []
        for namespace in list(self.server.namespaces.values()):
            local = list(namespace.sockets.values())
            if newcomer is not None and newcomer.namespace is namespace:
                local.append(newcomer)  # the admin asking, not yet in its namespace
            described += [serialize_socket(socket) for socket in local]
            if namespace.cluster is None:
                continue
            try:
                found = await BroadcastOperator(namespace).everywhere.fetch_sockets()
            except ClusterError as exc:
                log.warning("admin: sockets of the other nodes not listed: %s", exc.message)
                found = exc.partial or []
            described += [serialize_remote(r, namespace.name) for r in found if not r.local]
        return described

    def _listening(self) -> bool:
        return bool(self.namespace.sockets) or self.namespace.cluster is not None

    def _tell(self, event: str, *args: Any) -> None:
        if not self._listening():
            return
        try:
            self.namespace.emit(event, *args)
        except LocalProtocolError as exc:
            log.debug("admin: %s not sent: %s", event, exc)

    # -- the admin's own connection ------------------------------------------------------

    async def _on_admin(self, socket: Socket, auth: dict[str, Any]) -> None:
        socket.emit("config", {"supportedFeatures": self.features})
        if self.settings.development:
            socket.emit("all_sockets", await self.all_sockets(socket))
        socket.emit("server_stats", self.stats(take=False))  # the UI's first view, at once

    def on_serve(self, nursery: trio.Nursery) -> None:
        nursery.start_soon(self._run)

    async def _run(self) -> None:
        """Each second: upgrades (development); every :data:`STATS_INTERVAL`: the stats."""
        next_stats = trio.current_time() + STATS_INTERVAL
        while True:
            await trio.sleep(1.0)
            self._count_bytes()
            if self.settings.development:
                self._check_upgrades()
            if trio.current_time() >= next_stats:
                next_stats += STATS_INTERVAL
                stats = self.stats()  # taken even when nobody listens: the buffer stays small
                self._tell("server_stats", stats)

    def _count_bytes(self) -> None:
        totals = self.server.engine.stats
        received, sent = totals.bytes_received, totals.bytes_sent
        last_received, last_sent = self._bytes
        self._bytes = (received, sent)
        if received > last_received:
            self.events.push("bytesIn", count=received - last_received)
        if sent > last_sent:
            self.events.push("bytesOut", count=sent - last_sent)

    def _check_upgrades(self) -> None:
        for socket_id, socket in list(self._polling.items()):
            if not socket.connected:
                del self._polling[socket_id]
            elif socket.transport != "polling":
                del self._polling[socket_id]
                self._tell(
                    "socket_updated",
                    {"id": socket.id, "nsp": socket.namespace.name, "transport": socket.transport},
                )

    # -- commands ------------------------------------------------------------------------

    def _target(self, admin: Socket, command: str, nsp: Any, filter_: Any) -> Any:
        namespace = self.server.namespaces.get(nsp) if isinstance(nsp, str) else None
        if namespace is None or not (filter_ is None or isinstance(filter_, str)):
            log.info("admin %s: %s refused: no namespace %r", admin.id, command, nsp)
            return None
        operator = BroadcastOperator(namespace)
        return operator.to(filter_) if filter_ else operator

    def _emit(self, admin: Socket, nsp: Any = None, filter_: Any = None, *rest: Any) -> None:
        operator = self._target(admin, "emit", nsp, filter_)
        if operator is None or not rest or not isinstance(rest[0], str):
            return
        event, *args = rest
        log.info("admin %s: emit %r to %s %s", admin.id, event, nsp, filter_ or "(all)")
        try:
            operator.emit(event, *args)
        except LocalProtocolError as exc:
            log.info("admin %s: emit %r refused: %s", admin.id, event, exc)

    async def _join(
        self, admin: Socket, nsp: Any = None, room: Any = None, filter_: Any = None
    ) -> None:
        await self._move(admin, "join", nsp, room, filter_)

    async def _leave(
        self, admin: Socket, nsp: Any = None, room: Any = None, filter_: Any = None
    ) -> None:
        await self._move(admin, "leave", nsp, room, filter_)

    async def _move(self, admin: Socket, command: str, nsp: Any, room: Any, filter_: Any) -> None:
        """``join`` or ``leave`` ``room``, for the sockets ``filter_`` names, on every node."""
        operator = self._target(admin, command, nsp, filter_)
        if operator is None or not isinstance(room, str) or not room:
            return
        log.info("admin %s: %s %s %s %r", admin.id, nsp, filter_ or "(all)", command, room)
        everywhere = operator.everywhere
        try:
            await (everywhere.join(room) if command == "join" else everywhere.leave(room))
        except ClusterError as exc:
            log.warning("admin %s: %s reached this node only: %s", admin.id, command, exc.message)

    async def _disconnect(
        self, admin: Socket, nsp: Any = None, close: Any = False, filter_: Any = None
    ) -> None:
        operator = self._target(admin, "disconnect", nsp, filter_)
        if operator is None:
            return
        log.info("admin %s: disconnect %s %s (close=%s)", admin.id, nsp, filter_ or "(all)", close)
        try:
            await operator.everywhere.disconnect(close=bool(close))
        except ClusterError as exc:
            log.warning("admin %s: disconnect reached this node only: %s", admin.id, exc.message)

    # -- observing the server ------------------------------------------------------------

    def on_open(self, engine: EngineSocket) -> None:
        self.events.push("rawConnection")

    def on_close(self, engine: EngineSocket, reason: str) -> None:
        self.events.push("rawDisconnection", reason)

    def on_connect(self, socket: Socket) -> None:
        if not self.settings.development:
            return
        if socket.transport == "polling":
            self._polling[socket.id] = socket
        if self._listening():
            self._tell("socket_connected", serialize_socket(socket), iso())

    def on_disconnect(self, socket: Socket, reason: str) -> None:
        self._polling.pop(socket.id, None)
        if not self.settings.development or not self._listening():
            return
        nsp, now = socket.namespace.name, iso()
        self._tell("socket_disconnected", nsp, socket.id, reason, now)
        for room in sorted(socket.rooms):  # as the package: each room left, after
            self._tell("room_left", nsp, room, socket.id, now)

    def on_join(self, socket: Socket, room: str) -> None:
        if self.settings.development:
            self._tell("room_joined", socket.namespace.name, room, socket.id, iso())

    def on_leave(self, socket: Socket, room: str) -> None:
        if self.settings.development:
            self._tell("room_left", socket.namespace.name, room, socket.id, iso())

    def on_event(self, socket: Socket, event: str, args: tuple[Any, ...]) -> None:
        nsp = socket.namespace.name
        if self.settings.development and nsp not in TOOL_NAMESPACES:
            self._tell("event_received", nsp, socket.id, [event, *scrub(args)], iso())

    def on_emit(self, socket: Socket, event: str, args: tuple[Any, ...]) -> None:
        nsp = socket.namespace.name
        if self.settings.development and nsp not in TOOL_NAMESPACES:
            self._tell("event_sent", nsp, socket.id, [event, *scrub(args)], iso())


def scrub(args: tuple[Any, ...]) -> list[Any]:
    """Event arguments as the Admin UI may show them: a client's ``refresh-token`` carries
    its JWT, which no operator is to see. Every string, at any depth, has its tokens
    redacted; binary and other values pass as they are."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list | tuple):
            return [clean(item) for item in value]
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        return value

    return [clean(arg) for arg in args]


# -- the UI bundle ----------------------------------------------------------------------------

ADMIN_UI_PACKAGE = "@socket.io/admin-ui/ui/dist/index.html"
MDI_PACKAGE = "@mdi/font/css/materialdesignicons.min.css"
_FONTS_LINK = re.compile(r'<link rel="stylesheet" href="https://fonts\.googleapis\.com/[^"]*">')
_MDI_LINK = re.compile(r'href="https://cdn\.jsdelivr\.net/npm/@mdi/font@[^"]*"')


def admin_ui_index(original: str, *, path: str, local_icons: bool) -> str:
    """The bundle's ``index.html`` for this hub.

    - The server URL and path are preset (in the UI's own ``localStorage`` keys, when not set
      yet): the login form opens filled in with this hub, asking only for the credentials.
    - The icon font is the local ``@mdi/font`` when installed (the bundle links a CDN), and the
      Roboto stylesheet of a font CDN is left out: a page that must load in a closed network
      does not wait for it (an installed Roboto is used, else a sans-serif).
    """
    preset = (
        "<script>(function(){try{var s=window.localStorage;"
        'if(!s.getItem("server_url")){s.setItem("server_url",window.location.origin);}'
        f'if(!s.getItem("path")){{s.setItem("path",{json.dumps(path.rstrip("/") or "/")});}}'
        "}catch(e){}})();</script>"
    )
    page = _FONTS_LINK.sub("", original)
    if local_icons:
        page = _MDI_LINK.sub('href="mdi/css/materialdesignicons.min.css"', page)
    return page.replace("</head>", preset + "</head>", 1)


def admin_ui_app(environ: Mapping[str, str], *, path: str) -> list[tuple[str, StaticFiles]]:
    """The routes that serve the Admin UI at ``/admin-ui/``, or none when the npm package is
    not installed (``npm install`` in the checkout, or ``HUB_NODE_MODULES``).

    Args:
        environ: where ``HUB_NODE_MODULES`` may be.
        path: the hub's Socket.IO path, preset in the UI.
    """
    node_modules = find_node_modules(environ, needs=ADMIN_UI_PACKAGE)
    if node_modules is None:
        return []
    folder = node_modules / ADMIN_UI_PACKAGE
    icons = node_modules / MDI_PACKAGE
    page = admin_ui_index(folder.read_text(encoding="utf-8"), path=path, local_icons=icons.exists())
    index = Response(
        200,
        (
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-cache"),
            *SECURITY_HEADERS,
        ),
        page.encode(),
    )
    routes = [
        (
            "/admin-ui/",
            StaticFiles("/admin-ui/", folder.parent, overrides={"": index, "index.html": index}),
        )
    ]
    if icons.exists():
        mdi = Path(icons).parents[1]
        routes.append(("/admin-ui/mdi/", StaticFiles("/admin-ui/mdi/", mdi)))
    return routes
