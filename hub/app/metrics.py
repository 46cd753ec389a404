"""What the hub is doing, for the people running it: ``/health``, ``/ready``, ``/metrics``.

Three layers keep the numbers, each where its events happen, as plain integers (no metrics
library on the delivery path): the transport (:class:`hub.transport.counters.TransportStats`:
bytes, upgrades), the Socket.IO server (:class:`hub.server.stats.Stats`: connections opened and
closed by reason, events in and out, delivery times) and the hub (:class:`HubStats`: refusals
by code, emits through the internal API). :func:`snapshot` reads them all, with the gauges
computed from the server's state at that moment, into one :class:`Snapshot`; the Prometheus
collector, the Admin UI and the status page all read that.

Where the endpoints are served (:func:`health_routes`, :class:`HealthAPI`):

- with ``HUB_INTERNAL_PORT``: all three on the internal port, none on the public one;
- without it: ``/health`` and ``/ready`` on the public port (they say no more than "ok" or why
  not ready), and ``/metrics`` there only with ``Authorization: Bearer $HUB_EMIT_TOKEN``, as
  ``/internal/`` on that port;
- ``HUB_METRICS_PUBLIC=1`` (``--metrics-public``): also on the public port, without a token.
"""

from __future__ import annotations

import collections
import hmac
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from hub.app.auth import AuthErrorCode
from hub.transport.http import App, Request, Response, WebSocket

if TYPE_CHECKING:
    from hub.app.config import Config
    from hub.app.hub import Hub

__all__ = [
    "ClusterState",
    "HealthAPI",
    "HubCollector",
    "HubStats",
    "Metrics",
    "Refusal",
    "Snapshot",
    "health_needs_token",
    "health_routes",
    "readiness",
    "snapshot",
]

RECENT_REFUSALS = 50
"""How many refused connections :attr:`HubStats.recent_refusals` keeps (the status page's list)."""

# Always reported, at 0 until they happen, so that rate() and alerts work from the start.
_CLOSE_REASONS = ("transport close", "transport error", "ping timeout", "slow consumer")
_TRANSPORTS = ("polling", "websocket")
_REFUSAL_CODES = (*(str(code) for code in AuthErrorCode), "UNAVAILABLE")


@attrs.frozen
class Refusal:
    """One connection refused by the hub's authentication.

    Attributes:
        time: when (seconds since the epoch).
        code: what the client got in ``err.data.code`` (``TOKEN_MISSING``, ``TOKEN_INVALID``,
            ``TOKEN_EXPIRED``, ``USER_NOT_FOUND``, ``UNAVAILABLE``).
        address: the client's address.
    """

    time: float
    code: str
    address: str


class HubStats:
    """The hub's own totals since start (beside the server's and the transport's).

    Attributes:
        started: when the hub was made (seconds since the epoch).
        refusals: refused connections, by code.
        recent_refusals: the last :data:`RECENT_REFUSALS` refusals, oldest first.
        emits: emits made through the internal API (each emit of a batch counts, and each
            ``/internal/broadcast``).
        emit_recipients: the sockets those emits reached.
    """

    __slots__ = ("emit_recipients", "emits", "recent_refusals", "refusals", "started")

    def __init__(self) -> None:
        self.started = time.time()
        self.refusals: dict[str, int] = {}
        self.recent_refusals: collections.deque[Refusal] = collections.deque(maxlen=RECENT_REFUSALS)
        self.emits = 0
        self.emit_recipients = 0

    def refused(self, code: str, address: str) -> None:
        self.refusals[code] = self.refusals.get(code, 0) + 1
        self.recent_refusals.append(Refusal(time.time(), code, address))

    def emitted(self, recipients: int) -> None:
        self.emits += 1
        self.emit_recipients += recipients


@attrs.frozen
class ClusterState:
    """The node's link to Redis, read from the cluster's ``status`` (``hub.cluster``).

    Attributes:
        connected: cross-node messages flow.
        since: when ``connected`` last changed (seconds since the epoch).
        dropped: cross-node messages not published (Redis unreachable, or the queue full).
        outages: times the link was lost.
        malformed: messages read from Redis and ignored.
        queued: messages waiting to be published now.
        published: messages published to the other nodes, when the cluster counts them.
        received: messages read from the other nodes, when the cluster counts them.
        dropped_received: broadcasts read from the other nodes and not delivered, because this
            node was too far behind Redis.
        backlog: messages read from Redis and not yet handled.
        error: the last error while not connected.
    """

    connected: bool
    since: float
    dropped: int
    outages: int | None = None
    malformed: int | None = None
    queued: int | None = None
    published: int | None = None
    received: int | None = None
    dropped_received: int | None = None
    backlog: int | None = None
    error: str | None = None


@attrs.frozen
class Snapshot:
    """What the hub is doing now. Totals (``*_total``) count since start.

    Attributes:
        time: when it was taken (seconds since the epoch).
        started: when the hub was made (``time - started`` is its uptime).
        accepting: the hub is listening and not shutting down.
        connections: open Engine.IO connections, by transport now (``polling``, ``websocket``).
        sockets: connected Socket.IO sockets, by namespace.
        rooms: rooms by namespace, not counting the room each socket has of its own id.
        users: distinct users with at least one socket.
        connections_total: connections opened, by the transport they opened on.
        upgrades_total: connections moved from polling to WebSocket.
        disconnects_total: connections closed, by reason (``"ping timeout"`` is a heartbeat
            timeout; ``"slow consumer"`` a client let go for reading too slowly).
        events_in_total: events received from clients.
        events_out_total: events written to sockets, one per recipient.
        bytes_in_total: bytes read on the public port (native listener only).
        bytes_out_total: bytes written on the public port (native listener only).
        emits_total: emits through the internal API.
        emit_recipients_total: sockets those emits reached.
        refusals_total: connections refused, by code.
        recent_refusals: the last refusals, oldest first.
        delivery_buckets: the delivery time histogram: ``(upper bound in seconds, broadcasts
            delivered within it)``, cumulative, ending with ``inf``.
        delivery_sum: the sum of the delivery times (seconds).
        cluster: the link to Redis, when the hub runs in a cluster.
    """

    time: float
    started: float
    accepting: bool
    connections: Mapping[str, int]
    sockets: Mapping[str, int]
    rooms: Mapping[str, int]
    users: int
    connections_total: Mapping[str, int]
    upgrades_total: int
    disconnects_total: Mapping[str, int]
    events_in_total: int
    events_out_total: int
    bytes_in_total: int
    bytes_out_total: int
    emits_total: int
    emit_recipients_total: int
    refusals_total: Mapping[str, int]
    recent_refusals: tuple[Refusal, ...]
    delivery_buckets: tuple[tuple[float, int], ...]
    delivery_sum: float
    cluster: ClusterState | None

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready values (``inf`` bound as the string ``"+Inf"``)."""
        value = attrs.asdict(self, recurse=True)
        value["delivery_buckets"] = [
            ["+Inf" if bound == float("inf") else bound, count]
            for bound, count in self.delivery_buckets
        ]
        return value


def cluster_state(cluster: object) -> ClusterState | None:
    """Read a cluster's ``status``, whatever of its fields it has (None without a status).

    The fields read: ``connected``, ``since``, ``dropped`` (required); ``outages``,
    ``malformed``, ``queued``, ``published``, ``received``, ``dropped_received``, ``backlog``,
    ``error`` (optional).
    """
    status = getattr(cluster, "status", None)
    if status is None or not hasattr(status, "connected"):
        return None

    def optional_int(name: str) -> int | None:
        value = getattr(status, name, None)
        return value if isinstance(value, int) else None

    return ClusterState(
        connected=bool(status.connected),
        since=float(getattr(status, "since", 0.0)),
        dropped=int(getattr(status, "dropped", 0)),
        outages=optional_int("outages"),
        malformed=optional_int("malformed"),
        queued=optional_int("queued"),
        published=optional_int("published"),
        received=optional_int("received"),
        dropped_received=optional_int("dropped_received"),
        backlog=optional_int("backlog"),
        error=getattr(status, "error", None),
    )


def snapshot(hub: Hub) -> Snapshot:
    """What ``hub`` is doing now: totals read from its counters, gauges from its state.

    Cost: one pass over the open connections and the namespaces' rooms; meant for a scrape or
    a dashboard every second or two, not for every event.
    """
    server = hub.server
    engine = server.engine
    transport = engine.stats
    stats = server.stats
    connections = dict.fromkeys(_TRANSPORTS, 0)
    for session in engine.sockets.values():
        name = session.transport
        connections[name] = connections.get(name, 0) + 1
    sockets: dict[str, int] = {}
    rooms: dict[str, int] = {}
    for name, namespace in server.namespaces.items():
        sockets[name] = len(namespace.sockets)
        room_map = getattr(namespace.adapter, "rooms", {})
        own = sum(1 for sid in namespace.sockets if sid in room_map)
        rooms[name] = max(0, len(room_map) - own)
    opened = dict.fromkeys(_TRANSPORTS, 0)
    opened.update(stats.opened)
    closed = dict.fromkeys(_CLOSE_REASONS, 0)
    closed.update(stats.closed)
    refusals = dict.fromkeys(_REFUSAL_CODES, 0)
    refusals.update(hub.stats.refusals)
    return Snapshot(
        time=time.time(),
        started=hub.stats.started,
        accepting=hub.accepting,
        connections=connections,
        sockets=sockets,
        rooms=rooms,
        users=len(hub.connections),
        connections_total=opened,
        upgrades_total=transport.upgrades,
        disconnects_total=closed,
        events_in_total=stats.events_in,
        events_out_total=stats.events_out,
        bytes_in_total=transport.bytes_received,
        bytes_out_total=transport.bytes_sent,
        emits_total=hub.stats.emits,
        emit_recipients_total=hub.stats.emit_recipients,
        refusals_total=refusals,
        recent_refusals=tuple(hub.stats.recent_refusals),
        delivery_buckets=tuple(stats.delivery.cumulative()),
        delivery_sum=stats.delivery.sum,
        cluster=cluster_state(getattr(server, "cluster", None)),
    )


def readiness(hub: Hub) -> str | None:
    """Why the hub should not be sent new clients now, or None when it is ready."""
    if not hub.accepting:
        return "not accepting connections"
    cluster = getattr(hub.server, "cluster", None)
    if cluster is not None:
        state = cluster_state(cluster)
        if state is not None and not state.connected:
            return "redis unreachable"
    return None


# -- Prometheus ------------------------------------------------------------------------------


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def _labelled(
    family: CounterMetricFamily | GaugeMetricFamily, values: Mapping[str, int]
) -> CounterMetricFamily | GaugeMetricFamily:
    for label, value in sorted(values.items()):
        family.add_metric([label], value)
    return family


class HubCollector(Collector):
    """The hub's metrics, read from a :func:`snapshot` at each scrape (names start ``hub_``)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        now = snapshot(self.hub)
        yield GaugeMetricFamily("hub_up", "1 while the hub accepts connections", int(now.accepting))
        yield _labelled(
            GaugeMetricFamily(
                "hub_connections", "Open Engine.IO connections, by transport", labels=["transport"]
            ),
            now.connections,
        )
        yield _labelled(
            CounterMetricFamily(
                "hub_connections_opened_total",
                "Engine.IO connections opened, by the transport they opened on",
                labels=["transport"],
            ),
            now.connections_total,
        )
        yield _counter(
            "hub_upgrades_total",
            "Connections upgraded from HTTP long-polling to WebSocket",
            now.upgrades_total,
        )
        yield _labelled(
            CounterMetricFamily(
                "hub_disconnects_total",
                'Engine.IO connections closed, by reason ("ping timeout": heartbeat timeout;'
                ' "slow consumer": let go for reading too slowly)',
                labels=["reason"],
            ),
            now.disconnects_total,
        )
        yield _labelled(
            GaugeMetricFamily(
                "hub_sockets", "Connected Socket.IO sockets, by namespace", labels=["namespace"]
            ),
            now.sockets,
        )
        yield GaugeMetricFamily("hub_namespaces", "Namespaces", len(now.sockets))
        yield _labelled(
            GaugeMetricFamily(
                "hub_rooms",
                "Rooms, by namespace (not counting each socket's own room)",
                labels=["namespace"],
            ),
            now.rooms,
        )
        yield GaugeMetricFamily("hub_users", "Distinct users connected", now.users)
        yield _counter(
            "hub_events_received_total", "Events received from clients", now.events_in_total
        )
        yield _counter(
            "hub_events_sent_total",
            "Events written to sockets, one per recipient",
            now.events_out_total,
        )
        yield _counter(
            "hub_received_bytes_total", "Bytes read on the public port", now.bytes_in_total
        )
        yield _counter(
            "hub_sent_bytes_total", "Bytes written on the public port", now.bytes_out_total
        )
        yield _counter(
            "hub_internal_emits_total", "Emits through the internal API", now.emits_total
        )
        yield _counter(
            "hub_internal_emit_recipients_total",
            "Sockets reached by emits through the internal API",
            now.emit_recipients_total,
        )
        yield _labelled(
            CounterMetricFamily(
                "hub_auth_refusals_total", "Connections refused, by code", labels=["code"]
            ),
            now.refusals_total,
        )
        yield HistogramMetricFamily(
            "hub_delivery_seconds",
            "Time from a broadcast reaching its namespace (encoded) to the write to its last"
            " recipient",
            buckets=[
                ("+Inf" if bound == float("inf") else repr(bound), count)
                for bound, count in now.delivery_buckets
            ],
            sum_value=now.delivery_sum,
        )
        if now.cluster is not None:
            yield from self._cluster(now.cluster)

    @staticmethod
    def _cluster(state: ClusterState) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "hub_redis_connected",
            "1 while cross-node messages flow through Redis",
            int(state.connected),
        )
        yield GaugeMetricFamily(
            "hub_redis_state_since_seconds",
            "When hub_redis_connected last changed (seconds since the epoch)",
            state.since,
        )
        yield _counter(
            "hub_cluster_messages_dropped_total",
            "Cross-node messages not published (Redis unreachable, or the queue full)",
            state.dropped,
        )
        optional = (
            ("hub_redis_outages_total", "Times the link to Redis was lost", state.outages),
            (
                "hub_cluster_messages_malformed_total",
                "Messages read from Redis and ignored for breaking the format",
                state.malformed,
            ),
            (
                "hub_cluster_messages_published_total",
                "Cross-node messages published",
                state.published,
            ),
            (
                "hub_cluster_messages_received_total",
                "Cross-node messages received from other nodes",
                state.received,
            ),
            (
                "hub_cluster_messages_dropped_received_total",
                "Broadcasts from other nodes not delivered: this node was too far behind Redis",
                state.dropped_received,
            ),
        )
        for name, help_text, value in optional:
            if value is not None:
                yield _counter(name, help_text, value)
        if state.queued is not None:
            yield GaugeMetricFamily(
                "hub_cluster_publish_queue", "Messages waiting to be published", state.queued
            )
        if state.backlog is not None:
            yield GaugeMetricFamily(
                "hub_cluster_receive_backlog",
                "Messages read from Redis and not yet handled",
                state.backlog,
            )


class Metrics:
    """The hub's Prometheus registry: :class:`HubCollector` and the process's own collectors
    (CPU, memory, file descriptors, garbage collector), apart from prometheus-client's global
    registry so that several hubs in one process do not clash."""

    def __init__(self, hub: Hub) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(HubCollector(hub))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics in the format the scraper asks for (``Accept``): ``(body, content type)``;
        the Prometheus text format by default, OpenMetrics when asked."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


# -- HTTP ------------------------------------------------------------------------------------

HEALTH_PATHS = ("/health", "/ready", "/metrics")


class HealthAPI:
    """An :class:`~hub.transport.http.App` for ``/health``, ``/ready`` and ``/metrics``.

    - ``GET /health``: 200 ``{"status": "ok"}`` while the process serves requests (liveness).
    - ``GET /ready``: 200 ``{"status": "ready"}`` when the hub accepts connections and, in a
      cluster, reaches Redis; else 503 ``{"status": "unavailable", "reason": ...}``
      (readiness: take the node out of the balancer, do not restart it).
    - ``GET /metrics``: the Prometheus text format (OpenMetrics when the scraper asks).

    Args:
        hub: the hub to report on.
        metrics: its registry.
        metrics_token: when set, ``/metrics`` needs ``Authorization: Bearer <metrics_token>``
            (the public port without an internal one); 401 otherwise.
    """

    def __init__(self, hub: Hub, metrics: Metrics, *, metrics_token: str | None = None) -> None:
        self.hub = hub
        self.metrics = metrics
        self._token = metrics_token.encode() if metrics_token is not None else None

    async def handle_websocket(self, request: Request, websocket: WebSocket) -> None:
        await websocket.reject(Response.text(404, "not found"))

    async def handle_http(self, request: Request) -> Response:
        if request.method == "HEAD":
            # The same answer without its body (probes that only read the status).
            return attrs.evolve(self._answer(attrs.evolve(request, method="GET")), body=b"")
        return self._answer(request)

    def _answer(self, request: Request) -> Response:
        path = request.path
        if path not in HEALTH_PATHS:
            return Response.text(404, "not found")
        if request.method != "GET":
            return Response.text(405, "use GET", (("Allow", "GET, HEAD"),))
        no_store = (("Cache-Control", "no-store"),)
        if path == "/health":
            return Response.json(200, {"status": "ok"}, no_store)
        if path == "/ready":
            reason = readiness(self.hub)
            if reason is None:
                return Response.json(200, {"status": "ready"}, no_store)
            return Response.json(503, {"status": "unavailable", "reason": reason}, no_store)
        if not self._authorized(request):
            return Response.json(
                401,
                {"error": {"code": "UNAUTHORIZED", "message": "missing or wrong bearer token"}},
                (("WWW-Authenticate", "Bearer"),),
            )
        body, content_type = self.metrics.exposition(request.headers.get("accept", ""))
        return Response(200, (("Content-Type", content_type), *no_store), body)

    def _authorized(self, request: Request) -> bool:
        if self._token is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        return bool(self._token) and hmac.compare_digest(given, self._token)


def health_needs_token(config: Config) -> bool:
    """Whether ``/metrics`` asks for the emit token (served on the public port, not opened)."""
    return config.internal_port is None and not config.metrics_public


def health_routes(hub: Hub) -> tuple[list[tuple[str, App]], list[tuple[str, App]]]:
    """Where ``/health``, ``/ready`` and ``/metrics`` go: ``(public routes, internal routes)``.

    With an internal port, all three are served there, and on the public port only with
    ``metrics_public``. Without one, the public port is the only one: ``/health`` and
    ``/ready`` are served there (they say no more than "ok" or why not ready), and
    ``/metrics`` asks for the emit token, as ``/internal/`` on that port does, unless
    ``metrics_public`` opens it.
    """
    config = hub.config
    metrics = Metrics(hub)
    open_api = HealthAPI(hub, metrics)
    if config.internal_port is not None:
        public: list[tuple[str, App]] = []
        if config.metrics_public:
            public = [(path, open_api) for path in HEALTH_PATHS]
        return public, [(path, open_api) for path in HEALTH_PATHS]
    api = open_api
    if health_needs_token(config):
        api = HealthAPI(hub, metrics, metrics_token=config.emit_token or "")
    return [(path, api) for path in HEALTH_PATHS], []
