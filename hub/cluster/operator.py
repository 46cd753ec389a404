"""Cluster-wide operations on a broadcast's targets: ``server.to(room).everywhere``.

:class:`ClusterOperator` does for the sockets of every node what
:class:`~hub.server.broadcast.BroadcastOperator` does for this node's, and says what it
reached. Each operation does this node's part first, at once (as the synchronous operator would),
then the other nodes' through Redis; without a cluster it is only this node's part. When Redis
cannot be reached or a node does not answer in time, the operation raises
:class:`~hub.cluster.errors.ClusterError` after the local part, with what it gathered in
``partial``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from hub.cluster.errors import ClusterError
from hub.cluster.remote import RemoteSocket
from hub.protocol import Event
from hub.server.socket import Socket

if TYPE_CHECKING:
    from hub.cluster.link import ClusterNamespace
    from hub.server.broadcast import BroadcastOperator

__all__ = ["ClusterOperator"]


@attrs.frozen
class ClusterOperator:
    """The targets of a broadcast on every node: ``server.to("a").except_("b").everywhere``.

    ::

        reached = await server.to("user:42").everywhere.emit("notification", data)
        sockets = await server.to("project:7").everywhere.fetch_sockets()
        await server.to("user:42").everywhere.leave("project:7")
        await server.to("user:42").everywhere.disconnect()

    Attributes:
        operator: the broadcast whose targets are meant (rooms, except rooms, excluded
            sockets, volatile).
    """

    operator: BroadcastOperator

    @property
    def _link(self) -> ClusterNamespace | None:
        return self.operator.namespace.cluster

    def _local(self) -> list[Socket]:
        op = self.operator
        namespace = op.namespace
        return [
            socket
            for socket in namespace.adapter.targets(
                op.rooms, op.except_rooms, op.exclude, namespace.sockets.values()
            )
            if socket.connected
        ]

    @property
    def _remote_except(self) -> frozenset[str]:
        # Excluded sockets travel as rooms: each socket is in the room of its id.
        return self.operator.except_rooms | self.operator.exclude

    async def emit(self, event: str, *args: Any) -> int:
        """Send the event to every target on every node; returns how many sockets it reached.

        This node's sockets get it at once; the other nodes get a BROADCAST request and each
        answers with the number of its sockets reached (a Node socket.io node too: its clients
        see the event with an acknowledgement callback they need not call).

        Returns:
            The sockets reached on all nodes.

        Raises:
            hub.errors.LocalProtocolError: the event or arguments cannot be encoded (nothing
                was sent).
            ClusterUnavailable: Redis cannot be reached; only this node's sockets got it
                (``partial``: how many).
            ClusterTimeout: not every node answered within the request timeout (``partial``:
                the sockets reached as far as is known).
            ClusterIncomplete: a node known by its heartbeats was not on Redis (reconnecting)
                and cannot have had it; said as soon as every node on Redis has answered
                (``partial``: the sockets reached on those).
        """
        op = self.operator
        namespace = op.namespace
        packet = Event(event, args, namespace=namespace.name)
        local = namespace.adapter.broadcast(
            packet,
            op.rooms,
            op.except_rooms,
            op.exclude,
            namespace.sockets.values(),
            volatile=op.is_volatile,
        )
        link = self._link
        if link is None:
            return local
        try:
            remote = await link.count_broadcast(
                packet, op.rooms, self._remote_except, volatile=op.is_volatile
            )
        except ClusterError as exc:
            exc.partial = local + (exc.partial or 0)
            raise
        return local + remote

    async def fetch_sockets(self) -> list[RemoteSocket]:
        """The targets on every node (Node: ``fetchSockets``): this node's first.

        Raises:
            ClusterUnavailable, ClusterTimeout, ClusterIncomplete: ``partial`` holds the sockets
                found.
        """
        local = [RemoteSocket.of(socket) for socket in self._local()]
        link = self._link
        if link is None:
            return local
        try:
            remote = await link.fetch_sockets(self.operator.rooms, self._remote_except)
        except ClusterError as exc:
            exc.partial = local + (exc.partial or [])
            raise
        return local + remote

    async def join(self, *rooms: str) -> None:
        """Make the targets on every node join ``rooms`` (Node: ``socketsJoin``).

        Returns once this node's sockets have joined and the request is in Redis (the other
        nodes act on it as they read it; none answers).

        Raises:
            ClusterUnavailable: Redis cannot be reached; only this node's sockets joined.
        """
        for socket in self._local():
            socket.join(*rooms)
        link = self._link
        if link is not None:
            op = self.operator
            await link.remote_rooms(op.rooms, self._remote_except, rooms, join=True)

    async def leave(self, *rooms: str) -> None:
        """Make the targets on every node leave ``rooms`` (Node: ``socketsLeave``); as
        :meth:`join`."""
        for socket in self._local():
            socket.leave(*rooms)
        link = self._link
        if link is not None:
            op = self.operator
            await link.remote_rooms(op.rooms, self._remote_except, rooms, join=False)

    async def disconnect(self, *, close: bool = False) -> None:
        """Disconnect the targets on every node (Node: ``disconnectSockets``); as :meth:`join`.

        Args:
            close: end the whole Engine.IO connection (the stock client reconnects), instead of a
                Socket.IO DISCONNECT of the namespace (it does not).
        """
        for socket in self._local():
            socket.disconnect(close=close)
        link = self._link
        if link is not None:
            op = self.operator
            await link.remote_disconnect(op.rooms, self._remote_except, close=close)
