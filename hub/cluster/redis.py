"""The node's link to Redis: one subscriber, one ordered publisher, reconnection, status.

A :class:`RedisCluster` is handed to :class:`hub.Server` (``Server(cluster=...)``); the server
runs it in its own nursery (:meth:`RedisCluster.run`) and attaches each of its namespaces
(:meth:`RedisCluster.attach`), whose messages :mod:`hub.cluster.link` reads and writes.

Rules:

- Local delivery never waits for Redis. A broadcast is written to this node's sockets first, then
  its message is put on the publish queue (:meth:`RedisCluster.publish_nowait`), which is bounded
  in messages and in bytes. A message that does not fit, or that comes while Redis is
  unreachable, is dropped and counted (:attr:`ClusterStatus.dropped`): after an outage, other
  nodes get what is published from then on, never a backlog of stale events.
- One publisher task sends the queue in order, as pipelines of everything queued (one round trip
  for many messages), on a client of its own that is closed when it fails. Operations that must
  know they went out (a remote join, a request) wait for their message on the same queue, so
  they keep their place among the broadcasts.
- One subscriber connection carries every namespace's channels; a namespace created later is
  subscribed to on the fly. Each message read is handled at once and in order, without waiting
  (delivered to local sockets, answers put on the publish queue; only a handler of
  ``server_side_emit`` or an acknowledgement runs as a task).
- Each namespace's link announces this node to the other hub nodes (:mod:`hub.cluster.peers`):
  an INITIAL_HEARTBEAT each time the node is connected again (both parts up), a HEARTBEAT every
  ``heartbeat_interval``, and a goodbye (ADAPTER_CLOSE) when :meth:`RedisCluster.run` ends, sent
  on a connection of its own within half a second, so that the others stop counting it at once.
- The subscription's backlog is bounded: coredis reads the subscription eagerly into buffers of
  its own, which grow while this node handles messages slower than other nodes send them (a
  long burst from a node with more CPU to spare). When more than ``max_backlog`` messages read
  wait to be handled, each broadcast read (a pattern message: a plain broadcast, which nobody
  waits an answer for) is dropped without being decoded, counted when it may have been for this
  node's sockets (:attr:`ClusterStatus.dropped_received`) and logged once per episode, until the
  backlog is back under the bound; requests, answers and heartbeats are always handled, so that
  other nodes' counts and requests stay right. The node catches up instead of falling further
  behind.
- When Redis cannot be reached, at start or later, the node says so once in the log, keeps
  serving its own sockets, and tries again with exponential backoff (``reconnect_delay`` doubling
  up to ``max_reconnect_delay``, with jitter); it says once when Redis is back. Every wait on Redis
  has a deadline, and cancelling :meth:`RedisCluster.run` (the server shutting down) ends it at
  once whatever state Redis is in.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, overload

import coredis
import coredis.exceptions
import trio
from coredis.retry import NoRetryPolicy

from hub.cluster.errors import ClusterUnavailable
from hub.cluster.health import (
    PUBLISHER,
    SUBSCRIBER,
    UNREACHABLE,
    Backoff,
    ClusterStatus,
    Health,
    attempt,
    describe,
    redacted,
)
from hub.cluster.link import ClusterNamespace
from hub.cluster.wire import (
    DEFAULT_KEY,
    HeartbeatType,
    MalformedMessage,
    encode_heartbeat,
    new_id,
)

if TYPE_CHECKING:
    from coredis.response.types import PubSubMessage

    from hub.server.namespace import Namespace

__all__ = ["RedisCluster", "ServerEventHandler"]

log = logging.getLogger("hub.cluster")

ServerEventHandler = Callable[..., Any]
"""A handler of events from other nodes (``RedisCluster.on``): ``(*args)``, plain or async; what
it returns is the answer when the sender asked for one."""

H = TypeVar("H", bound=ServerEventHandler)


_BATCH_MESSAGES = 512
_BATCH_BYTES = 1_000_000

_GOODBYE_SECONDS = 0.5
"""The longest the goodbye may hold up the end of :meth:`RedisCluster.run`."""


def _backlog_of(pubsub: Any) -> Callable[[], int]:
    """How many messages coredis has read from a subscription and not handed over yet: those
    in its connection's buffer of push messages and in the subscription's own.

    coredis has no public counter of these; its buffers are anyio memory streams, whose
    ``statistics()`` say it. Read here, in one place (tests/test_cluster_publish.py fails if
    they move).
    """
    streams: list[Any] = [
        getattr(getattr(pubsub, "connection", None), "_push_message_buffer_out", None),
        getattr(pubsub, "_receive_stream", None),
    ]
    counters = [stream.statistics for stream in streams if hasattr(stream, "statistics")]

    def waiting() -> int:
        return sum(counter().current_buffer_used for counter in counters)

    return waiting


def _text(value: object) -> str:
    """A channel or pattern name as coredis gives it (bytes without decode_responses)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class _Outgoing:
    """One message on the publish queue; ``done`` is set once it is out (or failed) when
    someone waits for it."""

    __slots__ = ("channel", "done", "error", "payload")

    def __init__(self, channel: str, payload: bytes, done: trio.Event | None = None) -> None:
        self.channel = channel
        self.payload = payload
        self.done = done
        self.error: str | None = None


class RedisCluster:
    """Hub nodes sharing rooms through Redis, in the format of Node's ``@socket.io/redis-adapter``.

    ::

        cluster = RedisCluster("redis://127.0.0.1:6379")
        server = hub.Server(cluster=cluster)          # the server runs it while it serves

        server.to("room").emit("event", data)         # this node's sockets now, others' via Redis
        reached = await server.to("room").everywhere.emit("event", data)   # count on every node
        sockets = await server.to("room").everywhere.fetch_sockets()

        @cluster.on("cache:clear")                    # server-side events from other nodes
        def clear(key): ...
        await cluster.server_side_emit("cache:clear", "k")

    Args:
        url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` or ``unix://...``.
        key: the channels' prefix (the Node adapter's ``key`` option).
        request_timeout: how long a cluster-wide request waits for every node's answer, and a
            publish for Redis (seconds; the Node adapter's ``requestsTimeout``).
        connect_timeout: how long making a connection to Redis may take (seconds).
        reconnect_delay: the first wait before trying Redis again (seconds); it doubles.
        max_reconnect_delay: the longest wait between two tries (seconds).
        max_queued: the most messages waiting to be published.
        max_queued_bytes: the most bytes waiting to be published.
        specific_response_channel: answer a node's requests on its own response channel (the Node
            adapter's ``publishOnSpecificResponseChannel``; every 8.x node listens there too),
            instead of the shared one.
        heartbeat_interval: how often this node tells the other hub nodes it is there (seconds;
            ``@socket.io/cluster-adapter``'s ``heartbeatInterval``).
        heartbeat_timeout: how long another hub node stays counted without a word from it
            (seconds). Longer than the interval, and than a node may take to reconnect after
            Redis restarts (``max_reconnect_delay`` with its jitter, and ``connect_timeout``):
            a node slower to come back is counted by ``PUBSUB NUMSUB`` only.
        max_backlog: the most messages read from Redis and waiting to be handled before
            broadcasts from other nodes are dropped (see the module's doc).

    Attributes:
        uid: this node's id in the cluster (its messages carry it; it ignores its own).
    """

    def __init__(
        self,
        url: str,
        *,
        key: str = DEFAULT_KEY,
        request_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        max_queued: int = 10_000,
        max_queued_bytes: int = 16_000_000,
        specific_response_channel: bool = False,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 15.0,
        max_backlog: int = 10_000,
    ) -> None:
        if request_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("the timeouts must be positive")
        if not 0 < heartbeat_interval < heartbeat_timeout:
            raise ValueError("0 < heartbeat_interval < heartbeat_timeout")
        if max_backlog < 1:
            raise ValueError("max_backlog must be positive")
        if reconnect_delay <= 0 or max_reconnect_delay < reconnect_delay:
            raise ValueError("0 < reconnect_delay <= max_reconnect_delay")
        if max_queued < 1 or max_queued_bytes < 1:
            raise ValueError("the publish queue bounds must be positive")
        self.url = url
        self.key = key
        self.uid = new_id()
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.specific_response_channel = specific_response_channel
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.max_backlog = max_backlog
        self.links: dict[str, ClusterNamespace] = {}
        self._handlers: dict[tuple[str, str], ServerEventHandler] = {}
        # The publish queue.
        self._outbox: deque[_Outgoing] = deque()
        self._queued_bytes = 0
        self._wake_publisher = trio.Event()
        # Subscriptions.
        self._by_channel: dict[str, ClusterNamespace] = {}
        self._by_pattern: dict[str, ClusterNamespace] = {}
        self._unsubscribed: list[ClusterNamespace] = []
        self._links_changed = trio.Event()
        self.health = Health(self.uid, url)
        self._overflow_logged = False
        self._restart_subscriber = trio.CancelScope()
        self._subscriber_tried = trio.Event()
        self._publisher_tried = trio.Event()
        self._subscriptions = 0
        self._client: coredis.Redis[bytes] | None = None
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<RedisCluster {redacted(self.url)} uid={self.uid} {state}>"

    # -- status ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether cross-node messages flow now (subscribed, and publishing works)."""
        return self.health.connected

    @property
    def status(self) -> ClusterStatus:
        """A snapshot of the link, for health checks and metrics."""
        return self.health.status(queued=self._queued)

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until cross-node messages flow, at most ``timeout`` seconds; returns whether
        they do."""
        with trio.move_on_after(timeout):
            while not self.connected:
                await trio.sleep(0.01)
        return self.connected

    def count_malformed(self, error: MalformedMessage) -> None:
        """A message from Redis broke the format: counted (logged the first time)."""
        self.health.count_malformed(error)

    def _unavailable(self) -> ClusterUnavailable:
        return ClusterUnavailable(
            f"Redis cannot be reached: {self.health.error or 'not connected'}"
        )

    # -- namespaces and handlers -----------------------------------------------------------

    def attach(self, namespace: Namespace) -> ClusterNamespace:
        """The link of a namespace to the cluster; its channels are subscribed to (now, or as
        soon as Redis can be reached). Called by the server for each of its namespaces."""
        link = self.links.get(namespace.name)
        if link is not None and link.namespace is namespace:
            return link
        link = ClusterNamespace(self, namespace)
        self.links[namespace.name] = link
        channels = link.channels
        for channel in (
            channels.request,
            channels.response,
            channels.own_response,
            channels.heartbeat,
        ):
            self._by_channel[channel] = link
        self._by_pattern[link.channels.pattern] = link
        self._unsubscribed.append(link)
        self._links_changed.set()
        return link

    def link(self, namespace: str) -> ClusterNamespace:
        """The link of an attached namespace.

        Raises:
            KeyError: the server has no such namespace.
        """
        try:
            return self.links[namespace]
        except KeyError:
            raise KeyError(f"no namespace {namespace!r} on this server") from None

    @overload
    def on(self, event: str, *, namespace: str = "/") -> Callable[[H], H]: ...

    @overload
    def on(self, event: str, handler: H, *, namespace: str = "/") -> H: ...

    def on(
        self, event: str, handler: H | None = None, *, namespace: str = "/"
    ) -> H | Callable[[H], H]:
        """Handle an event another node sent with ``server_side_emit`` (Node:
        ``io.serverSideEmit``), directly or as a decorator.

        The handler gets the event's arguments; it may be ``async``. What it returns is the
        answer when the sender asked for answers (``server_side_emit_with_ack``).
        """

        def register(handler: H) -> H:
            self._handlers[namespace, event] = handler
            return handler

        if handler is not None:
            return register(handler)
        return register

    def handler_of(self, namespace: str, event: str) -> ServerEventHandler | None:
        return self._handlers.get((namespace, event))

    # -- cluster-wide operations of the server ----------------------------------------------

    async def server_count(self, namespace: str = "/") -> int:
        """How many nodes serve ``namespace`` in the cluster, this one included (Node:
        ``serverCount``: the subscribers of the namespace's request channel; or the hub nodes
        known by their heartbeats, when more of them are known than are subscribed now).

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        return await self.link(namespace).server_count()

    async def server_side_emit(self, event: str, *args: Any, namespace: str = "/") -> None:
        """Send an event to the other nodes' handlers (:meth:`on`; Node: ``io.on(event)``).

        Raises:
            ClusterUnavailable: Redis cannot be reached (no node got it).
            ValueError: a reserved event name.
            hub.errors.LocalProtocolError: the arguments cannot be written as JSON.
        """
        await self.link(namespace).server_side_emit(event, args)

    async def server_side_emit_with_ack(
        self, event: str, *args: Any, namespace: str = "/"
    ) -> list[Any]:
        """Send an event to the other nodes' handlers and gather one answer per node.

        Returns:
            What each other node's handler returned, in the order they came.

        Raises:
            ClusterUnavailable: Redis cannot be reached.
            ClusterTimeout: not every node answered within ``request_timeout``; ``partial`` is
                the answers that came.
        """
        return await self.link(namespace).server_side_emit_with_ack(event, args)

    async def all_rooms(self, namespace: str = "/") -> set[str]:
        """Every room of ``namespace`` on every node (socket id rooms included, as in Node).

        Raises:
            ClusterUnavailable, ClusterTimeout: as :meth:`server_side_emit_with_ack`.
        """
        return await self.link(namespace).all_rooms()

    async def subscribers(self, channel: str) -> int:
        """How many connections subscribe to ``channel`` (``PUBSUB NUMSUB``).

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        if not self.connected:
            raise ClusterUnavailable(
                f"Redis cannot be reached: {self.health.error or 'not connected'}"
            )
        client = self.client
        counts: dict[Any, int] = {}

        async def ask() -> None:
            counts.update(await client.pubsub_numsub(channel))

        error = await attempt(ask, self.request_timeout)
        if error is not None:
            raise ClusterUnavailable(f"Redis cannot be reached: {describe(error)}")
        for name, count in counts.items():
            if (name.decode() if isinstance(name, bytes) else str(name)) == channel:
                return int(count)
        return 0

    # -- publishing ------------------------------------------------------------------------

    def drop(self, count: int = 1) -> None:
        """Count cross-node messages that were not published."""
        self.health.dropped += count

    @property
    def _queued(self) -> int:
        return len(self._outbox)

    def _full(self, size: int) -> bool:
        return self._queued >= self.max_queued or self._queued_bytes + size > self.max_queued_bytes

    def publish_nowait(self, channel: str, payload: bytes) -> bool:
        """Queue a message for the publisher; never waits.

        Returns:
            False when it was dropped (and counted): Redis is unreachable, or the queue is full.
        """
        if not self.connected:
            self.health.dropped += 1
            return False
        if self._full(len(payload)):
            self.health.dropped += 1
            if not self._overflow_logged:
                self._overflow_logged = True
                log.warning(
                    "cluster publish queue full (%d messages, %d bytes): dropping cross-node"
                    " messages until it drains",
                    self._queued,
                    self._queued_bytes,
                )
            return False
        self._enqueue(_Outgoing(channel, payload))
        return True

    async def publish(self, channel: str, payload: bytes) -> None:
        """Publish a message in its place on the queue and wait until Redis has it.

        Raises:
            ClusterUnavailable: Redis is unreachable, the queue is full, or Redis did not take
                it within ``request_timeout``.
        """
        if not self.connected:
            self.health.dropped += 1
            raise ClusterUnavailable(
                f"Redis cannot be reached: {self.health.error or 'not connected'}"
            )
        if self._full(len(payload)):
            self.health.dropped += 1
            raise ClusterUnavailable("the cluster publish queue is full")
        item = _Outgoing(channel, payload, trio.Event())
        self._enqueue(item)
        assert item.done is not None
        with trio.move_on_after(self.request_timeout):
            await item.done.wait()
        if not item.done.is_set():
            raise ClusterUnavailable(
                f"Redis did not take a message within {self.request_timeout} s"
            )
        if item.error is not None:
            raise ClusterUnavailable(f"Redis cannot be reached: {item.error}")

    def _enqueue(self, item: _Outgoing) -> None:
        self._outbox.append(item)
        self._queued_bytes += len(item.payload)
        self._wake_publisher.set()

    def _take_batch(self) -> list[_Outgoing]:
        batch: list[_Outgoing] = []
        size = 0
        while self._outbox and len(batch) < _BATCH_MESSAGES and size < _BATCH_BYTES:
            item = self._outbox.popleft()
            batch.append(item)
            size += len(item.payload)
        self._queued_bytes -= size
        if not self._outbox:
            self._overflow_logged = False
        return batch

    def _fail(self, batch: list[_Outgoing], error: str) -> None:
        self.health.dropped += len(batch)
        for item in batch:
            if item.done is not None:
                item.error = error
                item.done.set()

    def _fail_queued(self, error: str) -> None:
        """An outage: what is queued is stale; it is dropped (counted), and its waiters told."""
        self._queued_bytes = 0
        batch = list(self._outbox)
        self._outbox.clear()
        self._fail(batch, error)

    async def _send(self, client: coredis.Redis[bytes], batch: list[_Outgoing]) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for item in batch:
                pipe.publish(item.channel, item.payload)

    async def _publish_batches(self, client: coredis.Redis[bytes]) -> None:
        """Send the queue in order, as pipelines of everything queued, until one fails.

        Raises:
            anything of ``UNREACHABLE``: Redis did not take a batch (it is failed, and counted).
        """
        while True:
            if not self._outbox:
                self._wake_publisher = trio.Event()
                await self._wake_publisher.wait()
                continue
            batch = self._take_batch()
            try:
                with trio.fail_after(self.request_timeout):
                    await self._send(client, batch)
            except BaseException as exc:
                self._fail(batch, describe(exc))
                raise
            for item in batch:
                if item.done is not None:
                    item.done.set()

    async def _publisher(self, client: coredis.Redis[bytes]) -> None:
        backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
        while True:
            if PUBLISHER not in self.health.up:
                error = await attempt(client.ping, self.connect_timeout)
                self._publisher_tried.set()
                if error is not None:
                    self.health.part_down(PUBLISHER, error)
                    self._fail_queued(self.health.error or "unreachable")
                    await trio.sleep(backoff.delay())
                    continue
                backoff.reset()
                self._part_up(PUBLISHER)
                continue
            try:
                # A client of its own, closed when it fails (see _subscription).
                async with self._new_client() as own:
                    await self._publish_batches(own)
            except* UNREACHABLE as group:
                self.health.part_down(PUBLISHER, group)
            self._fail_queued(self.health.error or "unreachable")
            # Whatever broke the publisher may have left the subscription dead without a
            # word (a host gone, not a refused connection): subscribe again from scratch.
            self._restart_subscriber.cancel()

    # -- subscribing -----------------------------------------------------------------------

    async def _subscribe_links(self, pubsub: Any, links: list[ClusterNamespace]) -> None:
        for link in links:
            channels = link.channels
            await pubsub.psubscribe(channels.pattern)
            await pubsub.subscribe(
                channels.request, channels.response, channels.own_response, channels.heartbeat
            )

    async def _follow_new_links(self, pubsub: Any) -> None:
        while True:
            await self._links_changed.wait()
            self._links_changed = trio.Event()
            links, self._unsubscribed = self._unsubscribed, []
            await self._subscribe_links(pubsub, links)
            if self.connected:
                for link in links:
                    link.announce(HeartbeatType.INITIAL_HEARTBEAT)

    # -- heartbeats ------------------------------------------------------------------------

    def _part_up(self, part: str) -> None:
        """``part`` works (again); when that makes the node connected, the other hub nodes are
        told, and those it knows get a full heartbeat timeout to be heard again (this node
        heard nobody while it was off Redis)."""
        was = self.connected
        self.health.part_up(part)
        if was or not self.connected:
            return
        now = trio.current_time()
        for link in list(self.links.values()):
            link.peers.refresh(now)
            link.announce(HeartbeatType.INITIAL_HEARTBEAT)

    async def _heartbeats(self) -> None:
        while True:
            await trio.sleep(self.heartbeat_interval)
            if self.connected:
                for link in list(self.links.values()):
                    link.announce()

    async def _say_goodbye(self) -> None:
        """Tell the other hub nodes that this node stops, on a connection of its own (the
        link's tasks are cancelled by now); at most :data:`_GOODBYE_SECONDS`, and not at all
        when Redis was not reachable."""
        if not self.connected or not self.links:
            return
        messages = [
            (link.channels.heartbeat, encode_heartbeat(self.uid, HeartbeatType.ADAPTER_CLOSE))
            for link in self.links.values()
        ]

        async def send() -> None:
            client = self._new_client(_GOODBYE_SECONDS)
            async with client, client.pipeline(transaction=False) as pipe:
                for channel, payload in messages:
                    pipe.publish(channel, payload)

        error = await attempt(send, _GOODBYE_SECONDS)
        if error is not None:
            log.debug("the goodbye of cluster node %s was not sent: %s", self.uid, describe(error))

    def _concerns(self, message: PubSubMessage) -> bool:
        """Whether a broadcast read may be for this node's sockets (a dropped one is counted
        only then)."""
        link = self._by_pattern.get(_text(message["pattern"]))
        data = message["data"]
        return (
            link is not None
            and isinstance(data, bytes)
            and link.concerns(_text(message["channel"]), data)
        )

    def _dispatch(self, message: PubSubMessage) -> None:
        channel_bytes = message["channel"]
        channel = (
            channel_bytes.decode("utf-8", "replace")
            if isinstance(channel_bytes, bytes)
            else str(channel_bytes)
        )
        data = message["data"]
        if not isinstance(data, bytes):
            return  # subscription confirmations
        try:
            if message["type"] == "pmessage":
                pattern = message["pattern"]
                if isinstance(pattern, bytes):
                    pattern = pattern.decode("utf-8", "replace")
                link = self._by_pattern.get(str(pattern))
                if link is not None:
                    link.on_broadcast(channel, data)
                return
            link = self._by_channel.get(channel)
            if link is None:
                return
            if channel == link.channels.request:
                link.on_request(data)
            elif channel == link.channels.heartbeat:
                link.on_heartbeat(data)
            else:
                link.on_response(data)
        except MalformedMessage as exc:
            self.count_malformed(exc)
        except Exception:
            # A bug in handling one message must not end the subscription of the whole node.
            log.exception("handling a cluster message on %s failed", channel)

    async def _subscription(self) -> None:
        """One subscription, until the connection is lost (raises), the subscription ends, or
        a restart is asked for (:attr:`_restart_subscriber`).

        It has a client of its own, closed with it: coredis's pool does not take back the
        place of a connection that broke while lent out, and the shared client's pool would
        run out after a few dozen outages.
        """
        self._restart_subscriber = trio.CancelScope()
        with self._restart_subscriber:
            async with (
                self._new_client() as client,
                client.pubsub(
                    ignore_subscribe_messages=True,
                    retry_policy=NoRetryPolicy(),
                    subscription_timeout=self.connect_timeout,
                ) as pubsub,
            ):
                links = list(self.links.values())
                self._unsubscribed = []
                with trio.fail_after(self.connect_timeout + 1):
                    await self._subscribe_links(pubsub, links)
                self._subscriptions += 1
                self._part_up(SUBSCRIBER)
                self._subscriber_tried.set()
                backlog = _backlog_of(pubsub)
                bound = self.max_backlog
                health = self.health
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._follow_new_links, pubsub)
                    async for message in pubsub:
                        if message["type"] == "pmessage":
                            waiting = backlog()
                            if waiting > bound:
                                if self._concerns(message):
                                    health.behind(waiting, bound)
                                continue
                            health.caught_up(waiting)
                        self._dispatch(message)
                    nursery.cancel_scope.cancel()

    async def _subscriber(self) -> None:
        backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
        while True:
            before = self._subscriptions
            error: BaseException | None = None
            try:
                await self._subscription()
            except* UNREACHABLE as group:
                error = group
            # Ended by an error, or on purpose (the publisher saw Redis go): subscribe again,
            # not at once, so that a link that keeps breaking does not spin.
            self.health.part_down(SUBSCRIBER, error or ConnectionError("subscription restarted"))
            self._subscriber_tried.set()
            if self._subscriptions > before:
                backoff.reset()  # it had worked: the outage starts now
            await trio.sleep(backoff.delay())

    # -- running ---------------------------------------------------------------------------

    def _new_client(self, connect_timeout: float | None = None) -> coredis.Redis[bytes]:
        return coredis.Redis.from_url(
            self.url,
            decode_responses=False,
            connect_timeout=connect_timeout or self.connect_timeout,
            retry_policy=NoRetryPolicy(),
        )

    @asynccontextmanager
    async def _open_client(self) -> AsyncIterator[coredis.Redis[bytes]]:
        async with self._new_client() as client:
            self._client = client
            try:
                yield client
            finally:
                self._client = None

    @property
    def client(self) -> coredis.Redis[bytes]:
        """The Redis client while running.

        Raises:
            ClusterUnavailable: not running.
        """
        if self._client is None:
            raise ClusterUnavailable("the cluster is not running")
        return self._client

    async def _keep_connected(self) -> None:
        backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
        while True:
            error: BaseException | None = None
            try:
                async with self._open_client() as client, trio.open_nursery() as nursery:
                    nursery.start_soon(self._publisher, client)
                    nursery.start_soon(self._subscriber)
            except* UNREACHABLE as group:
                error = group
            except* Exception as group:
                # Not an outage but a fault: logged in full; the node keeps serving its own
                # sockets and builds its link again.
                log.exception("the cluster link failed", exc_info=group)
                error = group
            if error is not None:
                self.health.part_down(None, error)
            self._subscriber_tried.set()
            self._publisher_tried.set()
            await trio.sleep(backoff.delay())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the link to Redis until cancelled (the server runs this in its nursery).

        ``task_status`` is started once the first connection is made or has failed (at most
        ``connect_timeout`` and a bit): a node starts serving its own sockets whether or not
        Redis is there.
        """
        if self._nursery is not None:
            raise RuntimeError("this cluster is already running")
        self._subscriber_tried = trio.Event()
        self._publisher_tried = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._keep_connected)
                nursery.start_soon(self._heartbeats)
                with trio.move_on_after(2 * self.connect_timeout + 1):
                    await self._subscriber_tried.wait()
                    await self._publisher_tried.wait()
                task_status.started()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self._say_goodbye()
            self.health.up.clear()
            self._fail_queued("the cluster stopped")

    @property
    def running(self) -> bool:
        """Whether :meth:`run` runs (its tasks can be started)."""
        return self._nursery is not None

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run a task of the cluster (an answer that waits for a handler or an ack); False
        when the cluster is not running."""
        if self._nursery is None:
            return False
        self._nursery.start_soon(fn, *args)
        return True
