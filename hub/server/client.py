"""One Engine.IO connection as Socket.IO sees it: its decoder and its sockets, one per namespace.

From the protocol (socketio/socket.io-protocol, "Exchange protocol"): a client connects to each
namespace with CONNECT, and "the server MUST send a CONNECT_ERROR packet" when the namespace does
not exist or the connection is refused. Packets for a namespace the client has not joined are
ignored. A packet that cannot be decoded ends the whole connection ("parse error"). Without a
CONNECT within the connect timeout, the connection is closed.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

import trio

from hub.errors import LocalProtocolError, SocketIOError
from hub.protocol import Ack, Connect, ConnectError, Decoder, Disconnect, Event, Packet
from hub.server.forwarded import client_address
from hub.server.observer import notify
from hub.server.recovery import SharedUnavailable
from hub.server.socket import ConnectionRefused, Handshake, Socket, encode_outgoing

if TYPE_CHECKING:
    from hub.engineio.outgoing import Outgoing
    from hub.server.namespace import Namespace
    from hub.server.server import Server
    from hub.transport.engine import Alarm, EngineSocket

__all__ = ["Client"]

log = logging.getLogger("hub.server")


class Client:
    """The Socket.IO side of one Engine.IO session."""

    # One per connection, thousands at once: slots, and no set until a CONNECT is handled.
    __slots__ = (
        "_closed",
        "_connect_alarm",
        "_connecting",
        "decoder",
        "engine",
        "server",
        "sockets",
    )

    def __init__(self, server: Server, engine: EngineSocket) -> None:
        self.server = server
        self.engine = engine
        self.decoder = Decoder(max_attachments=server.options.max_attachments)
        self.sockets: dict[str, Socket] = {}
        self._connecting: set[str] | None = None  # namespaces whose connect handler runs
        self._closed = False
        self._connect_alarm: Alarm | None = None

    @property
    def nursery(self) -> trio.Nursery:
        nursery = self.engine.nursery
        assert nursery is not None
        return nursery

    def start_connect_timeout(self) -> None:
        deadline = trio.current_time() + self.server.options.connect_timeout
        self._connect_alarm = self.engine.call_at(deadline, self._connect_timed_out)

    def _connect_timed_out(self) -> None:
        if not self.sockets and not self._connecting and not self.engine.closed:
            log.info("connection %s: no CONNECT within the connect timeout", self.engine.sid)
            self.engine.close("connect timeout")

    # -- incoming --------------------------------------------------------------------------

    def on_message(self, data: str | bytes) -> None:
        if self._closed:
            return  # after a parse error, the rest of the connection's input is ignored
        try:
            packet = self.decoder.receive(data)
        except SocketIOError as exc:
            log.info("connection %s: parse error: %s", self.engine.sid, exc.message)
            self._closed = True
            self.engine.close("parse error")
            return
        if packet is not None:
            self._dispatch(packet)

    def _dispatch(self, packet: Packet) -> None:
        if isinstance(packet, Connect):
            self._on_connect(packet)
            return
        socket = self.sockets.get(packet.namespace)
        if socket is None:
            return  # not connected to that namespace: socket.io ignores it too
        if isinstance(packet, Event):
            self._on_event(socket, packet)
        elif isinstance(packet, Ack):
            socket._on_ack(packet)
        elif isinstance(packet, Disconnect):
            self._remove(socket, "client namespace disconnect")
        else:  # ConnectError from a client: not allowed
            log.info("connection %s: CONNECT_ERROR from a client", self.engine.sid)
            self.engine.close("parse error")

    def _on_connect(self, packet: Connect) -> None:
        name = packet.namespace
        namespace = self.server._namespace_for(name)
        if namespace is None:
            self._send(ConnectError({"message": "Invalid namespace"}, namespace=name))
            return
        connecting = self._connecting
        if name in self.sockets or (connecting is not None and name in connecting):
            return  # already connected or connecting: nothing new to say
        if len(self.sockets) + len(connecting or ()) >= self.server.options.max_namespaces:
            self._send(ConnectError({"message": "Too many namespaces"}, namespace=name))
            return
        request = self.engine.request
        handshake = Handshake(
            headers=request.headers,
            query=request.query,
            auth=packet.data if packet.data is not None else {},
            address=client_address(request.client[0], request.headers, self.server.trusted_proxies),
        )
        socket = Socket(namespace, self, handshake)
        recovery = namespace.adapter.recovery
        if recovery is not None:
            auth = handshake.auth
            saved = (
                recovery.restore(auth.get("pid"), auth.get("offset"), trio.current_time())
                if isinstance(auth, dict)
                else None
            )
            if saved is None:
                socket.pid = recovery.new_pid()
            else:
                socket.id, socket.pid, socket.data = saved.sid, saved.pid, saved.data
                socket.recovered = True
                socket._restored = saved
        if connecting is None:
            connecting = self._connecting = set()
        connecting.add(name)
        self.nursery.start_soon(self._connect, namespace, socket)

    async def _restore_shared(self, namespace: Namespace, socket: Socket) -> None:
        """With recovery shared through Redis (:mod:`hub.cluster.sessions`): a session this
        node restored from memory is taken from Redis too; one it does not know is looked up
        there. Bounded by the store's short deadline; when Redis cannot be reached, what this
        node holds decides."""
        recovery = namespace.adapter.recovery
        if recovery is None or recovery.shared is None:
            return
        recovery.bind(namespace.name)
        restored = socket._restored
        if restored is not None:
            if await recovery.confirm(namespace.name, restored) is None:
                socket.start_afresh()  # restored elsewhere, or forgotten meanwhile
            return
        auth = socket.handshake.auth
        if not isinstance(auth, dict) or auth.get("pid") is None:
            return
        try:
            saved = await recovery.restore_shared(
                namespace.name, auth.get("pid"), auth.get("offset"), trio.current_time()
            )
        except SharedUnavailable as exc:
            log.info("connection %s: recovery from Redis skipped: %s", self.engine.sid, exc)
            return
        if saved is not None:
            socket.id, socket.pid, socket.data = saved.sid, saved.pid, saved.data
            socket.recovered = True
            socket._restored = saved

    async def _connect(self, namespace: Namespace, socket: Socket) -> None:
        options = self.server.options.recovery
        try:
            await self._restore_shared(namespace, socket)
            skip = socket.recovered and options is not None and options.skip_middlewares
            await namespace._run_connect(socket, socket.handshake.auth, middleware=not skip)
        except ConnectionRefused as refusal:
            if namespace.observers:
                notify(namespace.observers, "on_refuse", socket, refusal.payload())
            socket._release()  # rooms joined by a middleware before the refusal
            self._send(ConnectError(refusal.payload(), namespace=namespace.name))
            return
        except Exception:
            log.exception("connect handler of %s failed", namespace.name)
            socket._release()
            self._send(ConnectError({"message": "Internal server error"}, namespace=namespace.name))
            return
        finally:
            connecting = self._connecting
            if connecting is not None:
                connecting.discard(namespace.name)
                if not connecting:
                    self._connecting = None
        if self.engine.closed:
            socket._release()
            return
        self.sockets[namespace.name] = socket
        if self._connect_alarm is not None:
            # As socket.io: the first namespace connected, the connect timeout is over.
            self._connect_alarm.cancel()
            self._connect_alarm = None
        namespace.sockets[socket.id] = socket
        socket.connected = True
        socket.join(socket.id)
        missed: list[list[Outgoing]] = []
        restored, socket._restored = socket._restored, None
        if restored is not None and namespace.adapter.recovery is not None:
            socket.join(*restored.rooms)
            missed = namespace.adapter.recovery.missed(restored)
        if namespace.adapter.recovery is not None:
            socket._since = namespace.adapter.recovery.sequence
        data = {"sid": socket.id} if socket.pid is None else {"sid": socket.id, "pid": socket.pid}
        self._send(Connect(namespace.name, data))
        pending, socket._pre_connect = socket._pre_connect or [], None
        for messages in [*missed, *pending]:
            socket._send_encoded(messages)
        if namespace.observers:
            notify(namespace.observers, "on_connect", socket)
        if socket._disconnect_when_connected is not None:
            socket.disconnect(close=socket._disconnect_when_connected)

    def _on_event(self, socket: Socket, packet: Event) -> None:
        self.server.stats.events_in += 1
        if socket.namespace.observers:
            notify(socket.namespace.observers, "on_event", socket, packet.name, packet.args)
        handler = socket.namespace.handlers.get(packet.name)
        if handler is None:
            handler = socket.namespace.handlers.get("*")
            if handler is None:
                return
            args: tuple[Any, ...] = (packet.name, *packet.args)
        else:
            args = packet.args
        if inspect.iscoroutinefunction(handler):
            if packet.id is not None:
                if socket._pending_acks >= self.server.options.max_pending_acks:
                    log.warning(
                        "socket %s: over %d events awaiting their ack: disconnected",
                        socket.id,
                        self.server.options.max_pending_acks,
                    )
                    socket.disconnect()
                    return
                socket._pending_acks += 1
            self.nursery.start_soon(self._run_async, handler, socket, args, packet.id)
            return
        try:
            result = handler(socket, *args)
        except Exception:
            log.exception("handler of %r failed", packet.name)
            return
        if packet.id is not None and socket.connected:
            self._ack(socket, packet.id, result)

    async def _run_async(
        self, handler: Any, socket: Socket, args: tuple[Any, ...], ack_id: int | None
    ) -> None:
        try:
            result = await handler(socket, *args)
        except Exception:
            log.exception("handler %s failed", getattr(handler, "__name__", handler))
            return
        finally:
            if ack_id is not None:
                socket._pending_acks -= 1
        if ack_id is not None and socket.connected:
            self._ack(socket, ack_id, result)

    def _ack(self, socket: Socket, ack_id: int, result: Any) -> None:
        try:
            socket._send_ack(ack_id, result)
        except LocalProtocolError as exc:
            log.error("cannot encode the ack of socket %s: %s", socket.id, exc)

    # -- outgoing and leaving --------------------------------------------------------------

    def _send(self, packet: Packet) -> None:
        for message in encode_outgoing(packet):
            self.engine.send_nowait(message)

    def _remove(self, socket: Socket, reason: str) -> None:
        """The socket leaves its namespace (the connection may stay)."""
        name = socket.namespace.name
        if self.sockets.get(name) is not socket:
            return
        del self.sockets[name]
        socket.namespace.sockets.pop(socket.id, None)
        if socket.namespace.observers:
            notify(socket.namespace.observers, "on_disconnect", socket, reason)
        socket._release()
        self.nursery.start_soon(socket.namespace._run_disconnect, socket, reason)

    async def on_close(self, reason: str) -> None:
        """The Engine.IO connection ended: every socket of it disconnects with ``reason``."""
        sockets = list(self.sockets.values())
        self.sockets.clear()
        now = trio.current_time()
        for socket in sockets:
            socket.namespace.sockets.pop(socket.id, None)
            if socket.namespace.observers:
                notify(socket.namespace.observers, "on_disconnect", socket, reason)
            recovery = socket.namespace.adapter.recovery
            if recovery is not None and socket.pid is not None and reason in recovery.reasons:
                recovery.persist(socket, socket.pid, now, socket._since)
            socket._release()
        for socket in sockets:
            await socket.namespace._run_disconnect(socket, reason)
