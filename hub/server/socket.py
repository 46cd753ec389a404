"""A Socket.IO socket: one client's connection to one namespace."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from hub.engineio.outgoing import Outgoing
from hub.protocol import Ack, Disconnect, Event, Packet, encode
from hub.server.observer import notify

if TYPE_CHECKING:
    from hub.server.broadcast import BroadcastOperator
    from hub.server.client import Client
    from hub.server.namespace import Namespace
    from hub.server.recovery import Saved

__all__ = ["AckTimeout", "ConnectionRefused", "Handshake", "Socket", "encode_outgoing"]


class ConnectionRefused(Exception):
    """Raise it in a middleware or a connect handler to refuse the connection.

    The client receives CONNECT_ERROR with ``{"message": message, "data": data}`` (``data``
    left out when None); in socket.io-client it is the ``connect_error`` event's
    ``err.message`` and ``err.data``.
    """

    def __init__(self, message: str = "Not authorized", data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"message": self.message}
        if self.data is not None:
            payload["data"] = self.data
        return payload


class AckTimeout(trio.TooSlowError):
    """The client did not acknowledge an event in time."""


@attrs.frozen
class Handshake:
    """What the client sent when it connected.

    Attributes:
        headers: request headers (lower-case names).
        query: query parameters of the Engine.IO handshake.
        auth: the CONNECT payload (socket.io-client's ``auth`` option), ``{}`` when none.
        address: the client's IP address: the TCP peer's, or the one a trusted proxy forwarded
            (``ServerOptions.trusted_proxies``, :mod:`hub.server.forwarded`).
        issued: when the connection was made (seconds since the epoch).
    """

    headers: dict[str, str]
    query: dict[str, str]
    auth: dict[str, Any]
    address: str
    issued: float = attrs.field(factory=time.time)


def encode_outgoing(packet: Packet) -> list[Outgoing]:
    """Encode a Socket.IO packet once, as the Engine.IO messages that carry it."""
    return [Outgoing.message_of(part) for part in encode(packet)]


class _PendingAck:
    __slots__ = ("args", "done", "lost")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.args: tuple[Any, ...] = ()
        self.lost = False


class Socket:
    """One client in one namespace.

    Attributes:
        id: the socket id (each socket is also in the room of that name).
        namespace: the namespace it is connected to.
        handshake: what the client sent when it connected.
        data: free for the application (user id, token expiry...).
        connected: True between the CONNECT the server sent and the disconnect.
        recovered: True when this is a socket restored after a short disconnection, with the
            id, rooms and ``data`` it had; the events it missed follow its CONNECT
            (:mod:`hub.server.recovery`). Its rooms are joined once it is connected.
        pid: its private session id when connection state recovery is on, else None.
    """

    # One per client and namespace, thousands at once: slots, and no ack table until a call.
    __slots__ = (
        "_acks",
        "_disconnect_when_connected",
        "_next_ack_id",
        "_pending_acks",
        "_pre_connect",
        "_released",
        "_restored",
        "_since",
        "client",
        "connected",
        "data",
        "handshake",
        "id",
        "namespace",
        "pid",
        "recovered",
        "rooms",
    )

    def __init__(self, namespace: Namespace, client: Client, handshake: Handshake) -> None:
        self.id = secrets.token_urlsafe(15)
        self.namespace = namespace
        self.client = client
        self.handshake = handshake
        self.data: dict[str, Any] = {}
        self.connected = False
        self.rooms: set[str] = set()
        self._pre_connect: list[list[Outgoing]] | None = []
        self._disconnect_when_connected: bool | None = None
        self._released = False
        self._next_ack_id = 0
        self._acks: dict[int, _PendingAck] | None = None  # the calls waiting for their ack
        self.recovered = False
        self._pending_acks = 0  # events with an ack whose async handler is still running
        self.pid: str | None = None
        self._restored: Saved | None = None
        self._since = 0  # the recovery sequence number when it connected

    def __repr__(self) -> str:
        return f"<Socket {self.id} {self.namespace.name}>"

    def start_afresh(self) -> None:
        """For a middleware: do not recover this socket after all (say, the session was
        another user's); it connects as a new socket, with a new id and empty ``data``."""
        if not self.recovered or self.connected:
            return
        self.id = secrets.token_urlsafe(15)
        self.pid = secrets.token_urlsafe(15)
        self.data = {}
        self.recovered = False
        self._restored = None

    @property
    def transport(self) -> str:
        """``"polling"`` or ``"websocket"``: what carries the connection now."""
        return self.client.engine.transport

    # -- sending ---------------------------------------------------------------------------

    def _send_encoded(self, messages: list[Outgoing]) -> None:
        if self._pre_connect is not None:
            # The connect handler emits before CONNECT is sent; keep them until it is.
            self._pre_connect.append(messages)
            return
        if self.namespace.adapter.send_direct(self, messages):
            return  # behind a large broadcast still being written: keeps the order
        self._write_encoded(messages)

    def _write_encoded(self, messages: list[Outgoing]) -> None:
        engine = self.client.engine
        write = engine.write_frame
        if write is not None:
            for message in messages:
                write(message.frame)
        else:
            for message in messages:
                engine.send_nowait(message)

    def _send_volatile(self, messages: list[Outgoing]) -> bool:
        if self._pre_connect is not None:
            return False
        engine = self.client.engine
        if not engine.send_volatile(messages[0]):
            return False
        for message in messages[1:]:  # the attachments follow the packet they belong to
            engine.send_nowait(message)
        return True

    def emit_volatile(self, event: str, *args: Any) -> bool:
        """Send an event only if the connection can take it now (see
        :attr:`BroadcastOperator.volatile`).

        Returns:
            Whether it was sent.
        """
        adapter = self.namespace.adapter
        if adapter.backlog:
            return False  # it would wait behind a large broadcast: dropped, as volatile is
        adapter.flush_batch()  # (what a batch keeps goes first)
        return self._send_volatile(
            encode_outgoing(Event(event, args, namespace=self.namespace.name))
        )

    def _send(self, packet: Packet) -> None:
        self._send_encoded(encode_outgoing(packet))

    def emit(self, event: str, *args: Any) -> None:
        """Send an event to this client. Never waits.

        Args:
            event: the event name.
            args: JSON-serialisable arguments; ``bytes`` anywhere are sent as binary.

        Raises:
            hub.errors.LocalProtocolError: the event or arguments cannot be encoded.
        """
        packet = Event(event, args, namespace=self.namespace.name)
        if self.namespace.adapter.recovery is not None and self._pre_connect is None:
            # Kept for replay like a broadcast to the socket's own room (as socket.io does).
            room = frozenset((self.id,))
            self.namespace.adapter.broadcast(packet, room, frozenset(), frozenset(), ())
        else:
            self._send(packet)
            self.namespace.adapter.stats.events_out += 1
        if self.namespace.observers:
            notify(self.namespace.observers, "on_emit", self, event, args)

    async def call(self, event: str, *args: Any, timeout: float = 10.0) -> tuple[Any, ...]:
        """Send an event that asks for an acknowledgement, and wait for it.

        Returns:
            The arguments the client acknowledged with.

        Raises:
            AckTimeout: no acknowledgement within ``timeout`` seconds (or the socket is gone).
        """
        ack_id = self._next_ack_id
        self._next_ack_id += 1
        pending = _PendingAck()
        acks = self._acks
        if acks is None:
            acks = self._acks = {}
        acks[ack_id] = pending
        try:
            self._send(Event(event, args, namespace=self.namespace.name, id=ack_id))
            self.namespace.adapter.stats.events_out += 1
            with trio.move_on_after(timeout):
                await pending.done.wait()
            if not pending.done.is_set():
                raise AckTimeout(f"no acknowledgement of {event!r} within {timeout} s")
            if pending.lost:
                raise AckTimeout(f"socket disconnected before acknowledging {event!r}")
            return pending.args
        finally:
            if self._acks is not None:
                self._acks.pop(ack_id, None)

    def _on_ack(self, packet: Ack) -> None:
        pending = self._acks.get(packet.id) if self._acks is not None else None
        if pending is None or pending.done.is_set():
            return  # late (timed out) or unknown: socket.io drops it too
        pending.args = packet.args
        pending.done.set()

    def _send_ack(self, ack_id: int, result: Any) -> None:
        if result is None:
            args: tuple[Any, ...] = ()
        elif isinstance(result, tuple):
            args = result
        else:
            args = (result,)
        self._send(Ack(args, ack_id, namespace=self.namespace.name))

    # -- rooms -----------------------------------------------------------------------------

    def join(self, *rooms: str) -> None:
        """Join rooms (in this namespace). Does nothing once the socket has disconnected."""
        if self._released:
            return  # e.g. a join that waited for an access check while the client left
        for room in rooms:
            if room not in self.rooms:
                self.rooms.add(room)
                self.namespace.adapter.add(self, room)
                if self.namespace.observers:
                    notify(self.namespace.observers, "on_join", self, room)

    def leave(self, *rooms: str) -> None:
        """Leave rooms."""
        for room in rooms:
            if room in self.rooms:
                self.rooms.discard(room)
                self.namespace.adapter.remove(self, room)
                if self.namespace.observers:
                    notify(self.namespace.observers, "on_leave", self, room)

    def to(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        """A broadcast to ``rooms`` that leaves this socket out (as socket.io's ``socket.to``)."""
        return self.namespace.to(*rooms).excluding(self)

    # -- disconnecting ---------------------------------------------------------------------

    def disconnect(self, *, close: bool = False) -> None:
        """Disconnect from the namespace; with ``close``, end the whole connection.

        A Socket.IO DISCONNECT (the default) is final for the stock client: it does not
        reconnect by itself ("io server disconnect"). ``close=True`` ends the Engine.IO
        connection instead, and the stock client reconnects.
        """
        if not self.connected:
            if self._pre_connect is not None:
                self._disconnect_when_connected = close  # asked by the connect handler
            return
        if close:
            self.client.engine.close("forced server close")
            return
        self._send(Disconnect(self.namespace.name))
        self.client._remove(self, "server namespace disconnect")

    def _release(self) -> None:
        """Leave every room and wake the acks that wait (they time out at once)."""
        self.connected = False
        self._released = True
        self.namespace.adapter.remove_all(self, self.rooms)
        self.rooms.clear()
        acks, self._acks = self._acks, None
        for pending in (acks or {}).values():
            pending.lost = True
            pending.done.set()
