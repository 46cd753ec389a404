"""The Socket.IO server: namespaces on top of an Engine.IO endpoint, served natively or as ASGI.

A few lines start one::

    import trio
    import hub

    server = hub.Server(cors_origins="*")

    @server.on("connect")
    def connect(socket, auth):
        socket.join("lobby")

    @server.on("chat")
    def chat(socket, text):
        server.to("lobby").emit("chat", text)
        return "ok"  # the acknowledgement, when the client asked for one

    trio.run(server.serve, "127.0.0.1", 3000)
"""

from __future__ import annotations

import functools
import gc
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import attrs
import trio

from hub.engineio.session import SessionOptions
from hub.server.adapter import DEFAULT_SLICE
from hub.server.broadcast import BroadcastOperator
from hub.server.client import Client
from hub.server.forwarded import client_address, trusted_networks
from hub.server.namespace import Handler, Middleware, Namespace
from hub.server.observer import Observer, notify
from hub.server.recovery import Recovery, RecoveryOptions
from hub.server.stats import Stats
from hub.transport.admission import AdmissionOptions
from hub.transport.asgi import ASGIApp
from hub.transport.engine import Cors, EngineOptions, EngineServer, EngineSocket
from hub.transport.http import App
from hub.transport.native import Limits, serve
from hub.transport.router import Router

if TYPE_CHECKING:
    from hub.cluster.redis import RedisCluster

__all__ = ["Server", "ServerOptions"]

log = logging.getLogger("hub.server")

H = TypeVar("H", bound=Handler)

NamespaceMatcher = str | re.Pattern[str] | Callable[[str], bool]

NODE_ID = r"[A-Za-z0-9_-]{1,32}"
"""What a node id may be: URL-safe, without the "." that ends it in a session id."""


@attrs.frozen
class ServerOptions:
    """Socket.IO server settings. Times in seconds, sizes in bytes."""

    path: str = "/socket.io/"
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000
    connect_timeout: float = 45.0
    upgrade_timeout: float = 10.0
    allow_upgrades: bool = True
    transports: tuple[str, ...] = ("polling", "websocket")
    cors_origins: str | Sequence[str] | Callable[[str], bool] = "*"
    cors_credentials: bool = False
    max_attachments: int = 10
    max_buffered: int = 4_000_000
    max_http_body: int = 0  # bodies of other routes (``Server.route``) may be this large
    # Move what start-up allocated (modules, handlers...) out of the garbage collector's sight
    # once listening: per-delivery allocations then trigger collections that scan far less
    # (DESIGN.md, point 5: p99 at 5,000 clients from ~130 to 68 ms in a prototype). Off by
    # default in the library (frozen objects are never collected: a test process starting many
    # servers would keep them all); the hub turns it on.
    freeze_gc: bool = False
    # Several nodes behind one proxy: every Engine.IO session id starts with "<node_id>." so the
    # proxy can send each request of a session to the node that holds it (see nginx/hub.conf).
    node_id: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.matches_re(NODE_ID))
    )
    # Proxies (addresses or networks) whose X-Forwarded-For / X-Real-IP give the client's
    # address in ``socket.handshake.address`` (hub.server.forwarded); nobody else's are believed.
    trusted_proxies: tuple[str, ...] = ()
    # A broadcast to more sockets than this is written in slices of this many, yielding to the
    # scheduler in between (hub.server.adapter).
    broadcast_slice: int = attrs.field(default=DEFAULT_SLICE, validator=attrs.validators.ge(1))
    # Connection state recovery (hub.server.recovery): off unless given.
    recovery: RecoveryOptions | None = None
    # Against hostile clients (0: no limit). New sessions: at most max_connections open (503),
    # per client address connections_per_second on average with bursts of connection_burst
    # (429). An HTTP request head: at most max_header_bytes (431), sent within header_timeout
    # seconds (or the connection is closed); a request body within body_timeout (408); a
    # keep-alive connection idle longer than keepalive_timeout is closed. Per connection, at
    # most max_namespaces namespaces (CONNECT_ERROR "Too many namespaces"); per socket, at most
    # max_pending_acks events with an ack being handled at once by async handlers (past it the
    # socket is disconnected).
    max_connections: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    connections_per_second: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    connection_burst: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    max_header_bytes: int = attrs.field(default=16384, validator=attrs.validators.ge(1024))
    header_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    body_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    keepalive_timeout: float = attrs.field(default=75.0, validator=attrs.validators.gt(0))
    max_namespaces: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    max_pending_acks: int = attrs.field(default=256, validator=attrs.validators.ge(1))

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            session=SessionOptions(
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                max_payload=self.max_payload,
                upgrade_timeout=self.upgrade_timeout,
                allow_upgrades=self.allow_upgrades,
                max_buffered=self.max_buffered,
            ),
            cors=Cors(self.cors_origins, self.cors_credentials),
            transports=self.transports,
            sid_prefix=f"{self.node_id}." if self.node_id else "",
            admission=AdmissionOptions(
                max_connections=self.max_connections,
                per_ip_rate=self.connections_per_second,
                per_ip_burst=self.connection_burst,
            ),
        )

    def limits(self) -> Limits:
        return Limits(
            max_header_bytes=self.max_header_bytes,
            header_timeout=self.header_timeout,
            body_timeout=self.body_timeout,
            keepalive_timeout=self.keepalive_timeout,
            max_body_bytes=max(self.max_payload + 1024, self.max_http_body),
            max_message_bytes=self.max_payload,
            max_buffered=self.max_buffered,
        )


class Server:
    """A Socket.IO v5 server (Engine.IO v4) on trio.

    Args:
        options: a :class:`ServerOptions`; or give its fields as keyword arguments.
        cluster: a :class:`hub.cluster.RedisCluster` shared with the other nodes: broadcasts
            reach their sockets too, and ``server.to(...).everywhere`` acts on every node. The
            server runs it while it runs (:meth:`serve`, :meth:`run`).

    The main namespace ``/`` always exists; :meth:`of` adds others, by name or by pattern.
    ``server.on(...)``, ``server.use(...)``, ``server.emit(...)`` and ``server.to(...)`` act on
    the main namespace.
    """

    def __init__(
        self,
        options: ServerOptions | None = None,
        *,
        cluster: RedisCluster | None = None,
        **kwargs: Any,
    ) -> None:
        self.options = options or ServerOptions(**kwargs)
        self.cluster = cluster
        self.trusted_proxies = trusted_networks(self.options.trusted_proxies)
        self.engine = EngineServer(self, self.options.engine_options())
        # Connection attempts are counted per client address, as the trusted proxies tell it.
        self.engine.address_of = lambda request: client_address(
            request.client[0], request.headers, self.trusted_proxies
        )
        # Totals since start (hub.server.stats), shared by every namespace's adapter; the
        # bytes and upgrades are the engine's (``engine.stats``).
        self.stats = Stats()
        # Tools that watch the server (hub.server.observer), registered before it runs; every
        # namespace shares this list. Empty, each hook costs one test.
        self.observers: list[Observer] = []
        self._nursery: trio.Nursery | None = None
        self.namespaces: dict[str, Namespace] = {"/": self._adopt(Namespace("/"))}
        self._patterns: list[tuple[NamespaceMatcher, Namespace]] = []
        self._routes: list[tuple[str, App]] = []

    # -- namespaces ------------------------------------------------------------------------

    def of(self, name: NamespaceMatcher) -> Namespace:
        """The namespace ``name``, created if needed.

        ``name`` may also be a compiled regular expression or a predicate: any namespace whose
        name matches is accepted on demand, with the handlers registered on the returned
        template (each gets its own sockets and rooms).
        """
        if isinstance(name, str):
            if not name.startswith("/"):
                raise ValueError(f"a namespace starts with '/': {name!r}")
            if name not in self.namespaces:
                self.namespaces[name] = self._adopt(Namespace(name))
            return self.namespaces[name]
        template = Namespace(getattr(name, "pattern", "<dynamic>"))
        self._patterns.append((name, template))
        return template

    def _namespace_for(self, name: str) -> Namespace | None:
        namespace = self.namespaces.get(name)
        if namespace is not None:
            return namespace
        for matcher, template in self._patterns:
            matched = (
                matcher.fullmatch(name) is not None
                if isinstance(matcher, re.Pattern)
                else bool(matcher(name))  # type: ignore[operator]
            )
            if matched:
                namespace = self._adopt(Namespace(name, template=template))
                self.namespaces[name] = namespace
                return namespace
        return None

    @property
    def main(self) -> Namespace:
        return self.namespaces["/"]

    @overload
    def on(self, event: str) -> Callable[[H], H]: ...

    @overload
    def on(self, event: str, handler: H) -> H: ...

    def on(self, event: str, handler: H | None = None) -> H | Callable[[H], H]:
        """Register a handler on the main namespace (see :meth:`Namespace.on`)."""
        if handler is None:
            return self.main.on(event)
        return self.main.on(event, handler)

    def use(self, middleware: Middleware) -> Middleware:
        """Add a middleware to the main namespace."""
        return self.main.use(middleware)

    def to(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        """A broadcast to rooms of the main namespace."""
        return self.main.to(*rooms)

    in_ = to

    def except_(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        return self.main.except_(*rooms)

    def emit(
        self,
        event: str,
        *args: Any,
        to: str | Iterable[str] = (),
        skip: str | Iterable[str] = (),
        namespace: str = "/",
    ) -> int:
        """Send an event to the sockets of a namespace, encoded once.

        Args:
            event: the event name.
            args: the arguments.
            to: rooms to reach (each socket also has a room named after its id); all when empty.
            skip: rooms whose sockets are left out.
            namespace: the namespace.

        Returns:
            How many sockets it reached.
        """
        target = self.namespaces.get(namespace)
        if target is None:
            return 0  # nobody is connected there; do not create it
        operator = BroadcastOperator(target).to(to).except_(skip)
        return operator.emit(event, *args)

    # -- Engine.IO handler -----------------------------------------------------------------

    def on_open(self, socket: EngineSocket) -> None:
        self.stats.connection_opened(socket.transport)
        client = Client(self, socket)
        socket.data = client
        client.start_connect_timeout()
        if self.observers:
            notify(self.observers, "on_open", socket)

    def on_message(self, socket: EngineSocket, data: str | bytes) -> None:
        client = socket.data
        assert isinstance(client, Client)
        client.on_message(data)

    async def on_close(self, socket: EngineSocket, reason: str) -> None:
        self.stats.connection_closed(reason)
        if self.observers:
            notify(self.observers, "on_close", socket, reason)
        client = socket.data
        if isinstance(client, Client):
            await client.on_close(reason)

    # -- serving ---------------------------------------------------------------------------

    def route(self, prefix: str, app: App) -> None:
        """Serve another app on the same port, under ``prefix`` (e.g. an internal API)."""
        self._routes.append((prefix, app))

    @property
    def app(self) -> App:
        """The HTTP app: the Engine.IO endpoint at ``options.path`` and the added routes."""
        return Router([(self.options.path, self.engine), *self._routes])

    def asgi(self) -> ASGIApp:
        """This server as an ASGI 3 app, for hypercorn's trio worker (lifespan required)."""
        return ASGIApp(
            self.app,
            self.run,
            max_body_bytes=self.options.max_payload + 1024,
            max_buffered=self.options.max_buffered,
        )

    async def shutdown(self, grace: float = 10.0) -> bool:
        """Shut down gracefully: refuse new connections (503), close every client at the
        Engine.IO level so that it reconnects (elsewhere, behind a proxy; with connection state
        recovery, to its saved session), after what was queued for it, and wait up to ``grace``
        seconds for them to go. The caller then cancels :meth:`serve`.

        Returns:
            Whether every client was let go within ``grace``.
        """
        return await self.engine.shutdown(grace)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the server's sessions (without a listener: for ASGI or a custom listener)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.engine.run)
            self._start_deliveries(nursery)
            if self.cluster is not None:
                await nursery.start(self.cluster.run)
            task_status.started()

    def _start_deliveries(self, nursery: trio.Nursery) -> None:
        """Large broadcasts are written by delivery tasks in this nursery (see
        :mod:`hub.server.adapter`)."""
        self._nursery = nursery
        for namespace in self.namespaces.values():
            namespace.adapter.nursery = nursery
        if self.observers:
            notify(self.observers, "on_serve", nursery)

    def _adopt(self, namespace: Namespace) -> Namespace:
        namespace.observers = self.observers
        namespace.adapter.nursery = self._nursery
        namespace.adapter.slice_size = self.options.broadcast_slice
        namespace.adapter.stats = self.stats
        if self.cluster is not None:
            namespace.cluster = self.cluster.attach(namespace)
        if self.options.recovery is not None and namespace.adapter.recovery is None:
            namespace.adapter.recovery = Recovery(self.options.recovery)
        return namespace

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 3000,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` with the native server until cancelled.

        ``task_status`` is started with the bound address (port 0 picks a free one).
        """
        async with trio.open_nursery() as nursery:
            await nursery.start(self.engine.run)
            self._start_deliveries(nursery)
            if self.cluster is not None:
                # Subscribed (or Redis found unreachable) before the first client comes.
                await nursery.start(self.cluster.run)
            bound = await nursery.start(
                functools.partial(serve, limits=self.options.limits(), stats=self.engine.stats),
                self.app,
                host,
                port,
            )
            log.info("Socket.IO server on http://%s:%d%s", bound[0], bound[1], self.options.path)
            if self.options.freeze_gc:
                gc.collect()
                gc.freeze()
            task_status.started(bound)
