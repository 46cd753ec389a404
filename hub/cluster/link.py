"""One namespace's messages in the cluster: what it publishes, and what it does with what it reads.

Each namespace of a server with a cluster has a :class:`ClusterNamespace` (``namespace.cluster``).
It speaks the format of :mod:`hub.cluster.wire` and acts as a Node ``RedisAdapter`` does:

- A broadcast read from Redis is delivered to this node's sockets like a local broadcast (encoded
  once), unless this node sent it or has no socket in its one room.
- REMOTE_JOIN / LEAVE / DISCONNECT act on this node's sockets that match their rooms; SOCKETS,
  ALL_ROOMS and REMOTE_FETCH are answered with this node's part; SERVER_SIDE_EMIT runs the
  handler registered with ``RedisCluster.on`` (and answers with what it returns when asked);
  BROADCAST is delivered and answered with the number of sockets reached (BROADCAST_CLIENT_COUNT),
  then with each client's acknowledgement (BROADCAST_ACK) unless it is one of hub's count-only
  broadcasts.
- A request this node makes waits for one answer per other node subscribed to the request
  channel (``PUBSUB NUMSUB``, less itself), and from every hub node it knows by their heartbeats
  (:mod:`hub.cluster.peers`), for at most ``request_timeout``. When every subscribed node has
  answered but a known node has not, that node was not on Redis when the request went out (it is
  reconnecting) and cannot have had it: the request is said incomplete at once
  (:class:`~hub.cluster.errors.ClusterIncomplete`), not complete.
- Heartbeats of other hub nodes keep :attr:`ClusterNamespace.peers`; an INITIAL_HEARTBEAT is
  answered with a HEARTBEAT at once.

A node's own requests come back to it through Redis; it ignores them (its uid), having done its
own part before publishing.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from hub.cluster.errors import ClusterIncomplete, ClusterTimeout, ClusterUnavailable
from hub.cluster.peers import Peers
from hub.cluster.remote import RemoteSocket, socket_to_wire
from hub.cluster.wire import (
    Channels,
    HeartbeatType,
    MalformedMessage,
    Request,
    RequestType,
    decode_broadcast,
    decode_event,
    decode_heartbeat,
    encode_broadcast,
    encode_heartbeat,
    encode_json,
    encode_msgpack,
    new_id,
    own_prefix,
    packet_of,
    room_names,
)
from hub.errors import LocalProtocolError
from hub.protocol import Event
from hub.server.socket import AckTimeout, Socket

if TYPE_CHECKING:
    from hub.cluster.redis import RedisCluster
    from hub.server.namespace import Namespace

__all__ = ["ClusterNamespace"]

log = logging.getLogger("hub.cluster")

T = TypeVar("T")

# socket.io's RESERVED_EVENTS: a server-side emit may not use them either.
_RESERVED = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)


class _Pending:
    """A request of this node, waiting for one answer per other subscribed node.

    Attributes:
        expected: the other nodes subscribed when it went out (Node nodes answer without a uid).
        missing: the hub nodes known by their heartbeats that have not answered yet.
        answers: the answers accepted so far.
        done: set once ``expected`` answers are in; complete if ``missing`` is empty then.
    """

    __slots__ = ("accept", "answered", "answers", "done", "expected", "missing")

    def __init__(
        self, expected: int, known: frozenset[str], accept: Callable[[Request], bool]
    ) -> None:
        self.expected = expected
        self.missing = set(known)
        self.accept = accept
        self.answers: list[Request] = []
        self.answered: set[str] = set()
        self.done = trio.Event()
        self._check()

    def _check(self) -> None:
        if len(self.answers) >= self.expected:
            self.done.set()

    def add(self, answer: Request) -> None:
        if self.done.is_set() or not self.accept(answer):
            return
        if answer.uid is not None:
            if answer.uid in self.answered:
                return  # the same node twice: counted once
            self.answered.add(answer.uid)
            self.missing.discard(answer.uid)
        self.answers.append(answer)
        self._check()

    def left(self, uid: str) -> None:
        """Node ``uid`` said goodbye: not having its answer no longer makes the request
        incomplete (its sockets are gone). If it was subscribed it is still among ``expected``:
        whether it answered before leaving is not known, so it may end in a timeout."""
        self.missing.discard(uid)


class ClusterNamespace:
    """The link of one namespace to the cluster (see the module's doc).

    Attributes:
        cluster: the node's :class:`~hub.cluster.redis.RedisCluster`.
        namespace: the namespace.
        channels: its channels.
        peers: the other hub nodes of the namespace, known by their heartbeats.
    """

    def __init__(self, cluster: RedisCluster, namespace: Namespace) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.channels = Channels.of(namespace.name, cluster.uid, cluster.key)
        self.peers = Peers(cluster.heartbeat_timeout)
        self._own_prefix = own_prefix(cluster.uid)
        self._pending: dict[str, _Pending] = {}

    def __repr__(self) -> str:
        return f"<ClusterNamespace {self.namespace.name} of {self.cluster.uid}>"

    # -- this node's sockets ---------------------------------------------------------------

    def local_targets(
        self,
        rooms: frozenset[str],
        except_rooms: frozenset[str],
        exclude: frozenset[str] = frozenset(),
    ) -> list[Socket]:
        """This node's connected sockets in any of ``rooms`` (all when empty) and in none of
        ``except_rooms``, each once."""
        namespace = self.namespace
        return [
            socket
            for socket in namespace.adapter.targets(
                rooms, except_rooms, exclude, namespace.sockets.values()
            )
            if socket.connected
        ]

    def deliver(
        self,
        event: Event,
        rooms: frozenset[str],
        except_rooms: frozenset[str],
        *,
        volatile: bool = False,
    ) -> int:
        """Deliver an event from another node to this node's sockets, encoded once.

        Raises:
            MalformedMessage: the event cannot be sent to Socket.IO clients (a reserved name, a
                value JSON cannot hold).
        """
        namespace = self.namespace
        try:
            # As a broadcast of this node: kept for connection state recovery when it is on.
            return namespace.adapter.broadcast(
                event,
                rooms,
                except_rooms,
                frozenset(),
                namespace.sockets.values(),
                volatile=volatile,
            )
        except LocalProtocolError as exc:
            raise MalformedMessage(f"a cluster event cannot be sent to clients: {exc}") from None

    # -- broadcasts ------------------------------------------------------------------------

    def publish_broadcast(
        self,
        event: Event,
        rooms: frozenset[str],
        except_rooms: frozenset[str],
        exclude: frozenset[str],
        *,
        volatile: bool = False,
    ) -> bool:
        """Hand a broadcast already delivered here to the other nodes; never waits.

        ``exclude`` (socket ids) travel among the ``except`` rooms: each socket is in the room
        of its id.

        Returns:
            False when it was dropped (and counted): Redis unreachable, the queue full, or an
            argument msgpack cannot hold (logged).
        """
        cluster = self.cluster
        if not cluster.connected:
            cluster.drop()
            return False
        try:
            payload = encode_broadcast(
                cluster.uid, event, rooms, except_rooms | exclude, volatile=volatile
            )
        except LocalProtocolError as exc:
            log.error("broadcast %r not sent to other nodes: %s", event.name, exc)
            cluster.drop()
            return False
        return cluster.publish_nowait(self.channels.for_rooms(rooms), payload)

    def concerns(self, channel: str, data: bytes) -> bool:
        """Whether a message on a broadcast channel may be for this node's sockets: not its
        own, and of a room it has sockets in (or of the whole namespace), or any room when
        recovery is on (a socket that left may come back for it, here or, through Redis,
        elsewhere: the packet is kept with its offset though nobody here is in the room now).
        Cheap: not decoded."""
        if data.startswith(self._own_prefix):
            return False  # this node's own, delivered here before it was published
        room = self.channels.room_of(channel)
        if room is None:
            return False
        adapter = self.namespace.adapter
        # "ignore unknown room": nobody here, no need to decode
        return not room or room in adapter.rooms or adapter.recovery is not None

    def on_broadcast(self, channel: str, data: bytes) -> None:
        """A message on one of the namespace's broadcast channels."""
        if not self.concerns(channel, data):
            return
        message = decode_broadcast(data, self.namespace.name)
        if message.uid == self.cluster.uid:
            return
        self.deliver(message.event, message.rooms, message.except_rooms, volatile=message.volatile)

    # -- heartbeats ------------------------------------------------------------------------

    def announce(self, kind: HeartbeatType = HeartbeatType.HEARTBEAT) -> bool:
        """Tell the other hub nodes that this node is here (or leaving); never waits.

        Returns:
            False when it was dropped (Redis unreachable, the publish queue full).
        """
        return self.cluster.publish_nowait(
            self.channels.heartbeat, encode_heartbeat(self.cluster.uid, kind)
        )

    def on_heartbeat(self, data: bytes) -> None:
        """A message on the namespace's heartbeat channel."""
        heartbeat = decode_heartbeat(data)
        uid = heartbeat.uid
        if uid == self.cluster.uid:
            return
        if heartbeat.type == HeartbeatType.ADAPTER_CLOSE:
            self.peers.forget(uid)
            for pending in self._pending.values():
                pending.left(uid)
            return
        if self.peers.heard(uid, trio.current_time()):
            log.debug(
                "cluster node %s knows node %s (%s)", self.cluster.uid, uid, self.namespace.name
            )
        if heartbeat.type == HeartbeatType.INITIAL_HEARTBEAT:
            self.announce()  # so that the newcomer knows this node at once

    # -- requests from other nodes ---------------------------------------------------------

    def _answer(self, request: Request, body: dict[str, Any], *, binary: bool = False) -> None:
        channel = self.channels.response_to(
            request.uid, specific=self.cluster.specific_response_channel
        )
        body["uid"] = self.cluster.uid  # who answered (Node reads only its type's fields)
        payload = encode_msgpack(body) if binary else encode_json(body, lenient=True)
        self.cluster.publish_nowait(channel, payload)

    def on_request(self, data: bytes) -> None:
        """A message on the namespace's request channel."""
        request = Request.decode(data)
        if request.uid == self.cluster.uid or (
            request.request_id is not None and request.request_id in self._pending
        ):
            return  # this node's own request: its part is done
        body = request.body
        match request.type:
            case RequestType.SOCKETS:
                sockets = self.local_targets(room_names(body.get("rooms")), frozenset())
                self._answer(
                    request,
                    {"requestId": request.request_id, "sockets": [s.id for s in sockets]},
                )
            case RequestType.ALL_ROOMS:
                names = list(self.namespace.adapter.rooms)
                self._answer(request, {"requestId": request.request_id, "rooms": names})
            case RequestType.REMOTE_JOIN | RequestType.REMOTE_LEAVE:
                self._on_remote_rooms(request)
            case RequestType.REMOTE_DISCONNECT:
                self._on_remote_disconnect(request)
            case RequestType.REMOTE_FETCH:
                rooms, except_rooms = request.targets()
                sockets = self.local_targets(rooms, except_rooms)
                self._answer(
                    request,
                    {
                        "requestId": request.request_id,
                        "sockets": [socket_to_wire(socket) for socket in sockets],
                    },
                )
            case RequestType.SERVER_SIDE_EMIT:
                self._on_server_side_emit(request)
            case RequestType.BROADCAST:
                self._on_broadcast_request(request)
            case _:
                pass  # an answer type on the request channel: not ours to handle

    def _on_remote_rooms(self, request: Request) -> None:
        body = request.body
        join = request.type == RequestType.REMOTE_JOIN
        if "opts" in body:
            rooms, except_rooms = request.targets()
            names = sorted(room_names(body.get("rooms")))
            for socket in self.local_targets(rooms, except_rooms):
                if join:
                    socket.join(*names)
                else:
                    socket.leave(*names)
            return
        # The single-socket form of adapters before 7.x: {sid, room, requestId}.
        one = self.namespace.sockets.get(str(body.get("sid")))
        if one is None:
            return
        (room,) = room_names([body.get("room")])
        if join:
            one.join(room)
        else:
            one.leave(room)
        self._answer(request, {"requestId": request.request_id})

    def _on_remote_disconnect(self, request: Request) -> None:
        body = request.body
        close = bool(body.get("close"))
        if "opts" in body:
            rooms, except_rooms = request.targets()
            for socket in self.local_targets(rooms, except_rooms):
                socket.disconnect(close=close)
            return
        one = self.namespace.sockets.get(str(body.get("sid")))
        if one is None:
            return
        one.disconnect(close=close)
        self._answer(request, {"requestId": request.request_id})

    def _on_server_side_emit(self, request: Request) -> None:
        data = request.body.get("data")
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            raise MalformedMessage("a server-side emit's data is [event, ...arguments]")
        handler = self.cluster.handler_of(self.namespace.name, data[0])
        if handler is None:
            return  # nobody listens here: no answer either, as with Node
        if inspect.iscoroutinefunction(handler):
            self.cluster.start_soon(self._run_handler, handler, data, request.request_id)
            return
        try:
            result = handler(*data[1:])
        except Exception:
            log.exception("handler of the server-side event %r failed", data[0])
            return
        self._answer_server_side_emit(request.request_id, result)

    async def _run_handler(self, handler: Any, data: list[Any], request_id: str | None) -> None:
        try:
            result = await handler(*data[1:])
        except Exception:
            log.exception("handler of the server-side event %r failed", data[0])
            return
        self._answer_server_side_emit(request_id, result)

    def _answer_server_side_emit(self, request_id: str | None, result: Any) -> None:
        if request_id is None:
            return  # the sender asked for no answer
        # Node answers a server-side emit on the shared response channel, whatever its options.
        try:
            payload = encode_json(
                {
                    "type": RequestType.SERVER_SIDE_EMIT.value,
                    "requestId": request_id,
                    "data": result,
                    "uid": self.cluster.uid,
                }
            )
        except LocalProtocolError as exc:
            log.error("the answer to a server-side event cannot be sent: %s", exc)
            return
        self.cluster.publish_nowait(self.channels.response, payload)

    def _on_broadcast_request(self, request: Request) -> None:
        body = request.body
        event = decode_event(body.get("packet"), self.namespace.name)
        rooms, except_rooms = request.targets()
        opts = body.get("opts")
        flags = opts.get("flags") if isinstance(opts, dict) else None
        flags = flags if isinstance(flags, dict) else {}
        volatile = bool(flags.get("volatile"))
        if flags.get("countOnly") or not self.cluster.running:
            count = self.deliver(event, rooms, except_rooms, volatile=volatile)
        else:
            # A Node node's emit with an acknowledgement (``io.timeout(ms).emit(..., cb)``):
            # each client is asked for its ack, which goes back as BROADCAST_ACK.
            timeout = flags.get("timeout")
            seconds = timeout / 1000 if isinstance(timeout, int | float) and timeout > 0 else None
            sockets = self.local_targets(rooms, except_rooms)
            for socket in sockets:
                self.cluster.start_soon(
                    self._relay_ack, socket, event, request, seconds or self.cluster.request_timeout
                )
            count = len(sockets)
        self._answer(
            request,
            {
                "type": RequestType.BROADCAST_CLIENT_COUNT.value,
                "requestId": request.request_id,
                "clientCount": count,
            },
        )

    async def _relay_ack(
        self, socket: Socket, event: Event, request: Request, timeout: float
    ) -> None:
        try:
            args = await socket.call(event.name, *event.args, timeout=timeout)
        except AckTimeout:
            return
        except LocalProtocolError as exc:
            log.error("a cluster event cannot be sent to %s: %s", socket.id, exc)
            return
        body = {
            "type": RequestType.BROADCAST_ACK.value,
            "requestId": request.request_id,
            "packet": args[0] if args else None,  # the adapter passes the first argument on
        }
        try:
            self._answer(request, body, binary=True)
        except LocalProtocolError as exc:
            log.error("an acknowledgement cannot be sent back: %s", exc)

    # -- answers to this node's requests ---------------------------------------------------

    def on_response(self, data: bytes) -> None:
        """A message on one of the namespace's response channels."""
        answer = Request.decode(data)
        if answer.request_id is None:
            return
        pending = self._pending.get(answer.request_id)
        if pending is not None:
            pending.add(answer)

    # -- requests of this node -------------------------------------------------------------

    async def server_count(self) -> int:
        """How many nodes serve this namespace: the request channel's subscribers, or the
        hub nodes known by their heartbeats and this one when they are more (some are
        reconnecting to Redis).

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        subscribed = await self.cluster.subscribers(self.channels.request)
        return max(subscribed, 1 + len(self.peers.alive(trio.current_time())))

    async def _ask(
        self,
        body: dict[str, Any],
        *,
        what: str,
        accept: Callable[[Request], bool],
        result: Callable[[list[Request]], T],
        binary: bool = False,
    ) -> T:
        """Publish a request and wait for one answer per other node (see the module's doc).

        Raises:
            ClusterUnavailable: Redis cannot be reached.
            ClusterTimeout: not every node answered in time; ``partial`` is ``result`` of the
                answers that came.
            ClusterIncomplete: every subscribed node answered, but some nodes known by their
                heartbeats were not subscribed; ``partial`` is ``result`` of the answers.
        """
        try:
            subscribed = await self.cluster.subscribers(self.channels.request)
        except ClusterUnavailable:
            self.cluster.drop()  # the request never went out
            raise
        known = self.peers.alive(trio.current_time())
        if subscribed <= 1 and not known:
            return result([])
        request_id = new_id()
        pending = _Pending(subscribed - 1, known, accept)
        self._pending[request_id] = pending
        try:
            message = {"uid": self.cluster.uid, "requestId": request_id, **body}
            payload = encode_msgpack(message) if binary else encode_json(message)
            # Published even when no other node is subscribed now: a known node that subscribed
            # again since the count still gets it (the answer says incomplete all the same).
            await self.cluster.publish(self.channels.request, payload)
            timeout = self.cluster.request_timeout
            with trio.move_on_after(timeout):
                await pending.done.wait()
            if not pending.done.is_set():
                others = max(subscribed - 1, len(known))
                raise ClusterTimeout(
                    f"timeout reached while waiting for {what} answers: {len(pending.answers)} of"
                    f" {others} other nodes answered within {timeout} s",
                    result(pending.answers),
                )
            if pending.missing:
                missing = frozenset(pending.missing)
                raise ClusterIncomplete(
                    f"{what} reached every node on Redis but not {len(missing)} other"
                    f" node(s) known to be in the cluster ({', '.join(sorted(missing))}): they"
                    " were not on Redis (reconnecting) and cannot have had it",
                    result(pending.answers),
                    missing,
                )
            return result(pending.answers)
        finally:
            del self._pending[request_id]

    async def count_broadcast(
        self,
        event: Event,
        rooms: frozenset[str],
        except_rooms: frozenset[str],
        *,
        volatile: bool = False,
    ) -> int:
        """Deliver an event on the other nodes and count the sockets it reached there.

        A BROADCAST request, answered by every node with BROADCAST_CLIENT_COUNT (Node nodes
        included); ``countOnly`` tells hub nodes not to ask their clients for acks.

        Raises:
            ClusterUnavailable, ClusterTimeout: see :meth:`_ask` (``partial``: the count so far).
        """
        flags: dict[str, Any] = {"countOnly": True}
        if volatile:
            flags["volatile"] = True
        body = {
            "type": RequestType.BROADCAST.value,
            "packet": packet_of(event),
            "opts": {"rooms": sorted(rooms), "except": sorted(except_rooms), "flags": flags},
        }

        def counted(answers: list[Request]) -> int:
            return sum(int(answer.body.get("clientCount") or 0) for answer in answers)

        return await self._ask(
            body,
            what="broadcast",
            accept=lambda answer: (
                answer.type == RequestType.BROADCAST_CLIENT_COUNT
                and isinstance(answer.body.get("clientCount"), int)
            ),
            result=counted,
            binary=True,
        )

    async def fetch_sockets(
        self, rooms: frozenset[str], except_rooms: frozenset[str]
    ) -> list[RemoteSocket]:
        """The matching sockets of the other nodes.

        Raises:
            ClusterUnavailable, ClusterTimeout: see :meth:`_ask` (``partial``: those found).
        """

        def sockets(answers: list[Request]) -> list[RemoteSocket]:
            found: list[RemoteSocket] = []
            for answer in answers:
                for value in answer.body["sockets"]:
                    try:
                        found.append(RemoteSocket.from_wire(value))
                    except MalformedMessage as exc:
                        self.cluster.count_malformed(exc)
            return found

        return await self._ask(
            {
                "type": RequestType.REMOTE_FETCH.value,
                "opts": {"rooms": sorted(rooms), "except": sorted(except_rooms)},
            },
            what="fetchSockets",
            accept=lambda answer: isinstance(answer.body.get("sockets"), list),
            result=sockets,
        )

    async def all_rooms(self) -> set[str]:
        """Every room of the namespace on every node.

        Raises:
            ClusterUnavailable, ClusterTimeout: see :meth:`_ask`.
        """
        local = set(self.namespace.adapter.rooms)

        def rooms(answers: list[Request]) -> set[str]:
            found = set(local)
            for answer in answers:
                found |= room_names(answer.body["rooms"])
            return found

        return await self._ask(
            {"type": RequestType.ALL_ROOMS.value},
            what="allRooms",
            accept=lambda answer: isinstance(answer.body.get("rooms"), list),
            result=rooms,
        )

    async def _publish_request(self, body: dict[str, Any]) -> None:
        await self.cluster.publish(
            self.channels.request, encode_json({"uid": self.cluster.uid, **body})
        )

    async def remote_rooms(
        self,
        rooms: frozenset[str],
        except_rooms: frozenset[str],
        names: Iterable[str],
        *,
        join: bool,
    ) -> None:
        """Make the matching sockets of the other nodes join (or leave) ``names``.

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        await self._publish_request(
            {
                "type": (RequestType.REMOTE_JOIN if join else RequestType.REMOTE_LEAVE).value,
                "opts": {"rooms": sorted(rooms), "except": sorted(except_rooms)},
                "rooms": sorted(names),
            }
        )

    async def remote_disconnect(
        self, rooms: frozenset[str], except_rooms: frozenset[str], *, close: bool
    ) -> None:
        """Disconnect the matching sockets of the other nodes.

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        await self._publish_request(
            {
                "type": RequestType.REMOTE_DISCONNECT.value,
                "opts": {"rooms": sorted(rooms), "except": sorted(except_rooms)},
                "close": close,
            }
        )

    async def server_side_emit(self, event: str, args: tuple[Any, ...]) -> None:
        """See :meth:`RedisCluster.server_side_emit`."""
        if event in _RESERVED:
            raise ValueError(f"{event!r} is a reserved event name")
        await self._publish_request(
            {"type": RequestType.SERVER_SIDE_EMIT.value, "data": [event, *args]}
        )

    async def server_side_emit_with_ack(self, event: str, args: tuple[Any, ...]) -> list[Any]:
        """See :meth:`RedisCluster.server_side_emit_with_ack`."""
        if event in _RESERVED:
            raise ValueError(f"{event!r} is a reserved event name")
        return await self._ask(
            {"type": RequestType.SERVER_SIDE_EMIT.value, "data": [event, *args]},
            what="serverSideEmit",
            accept=lambda answer: answer.type == RequestType.SERVER_SIDE_EMIT,
            result=lambda answers: [answer.body.get("data") for answer in answers],
        )
