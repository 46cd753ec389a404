"""Broadcasts: an event encoded once and written to every socket it targets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from hub.protocol import Event
from hub.server.observer import notify
from hub.server.socket import Socket

if TYPE_CHECKING:
    from hub.cluster.operator import ClusterOperator
    from hub.server.namespace import Namespace

__all__ = ["BroadcastOperator"]


def _names(rooms: tuple[str | Iterable[str], ...]) -> frozenset[str]:
    names: set[str] = set()
    for room in rooms:
        if isinstance(room, str):
            names.add(room)
        else:
            names.update(room)
    return frozenset(names)


@attrs.frozen
class BroadcastOperator:
    """Who a broadcast goes to. Immutable: each method returns a new operator.

    ``ns.to("a", "b").except_("c").emit("event", data)`` reaches each socket that is in room
    ``a`` or ``b`` and not in ``c``, once.
    """

    namespace: Namespace
    rooms: frozenset[str] = frozenset()
    except_rooms: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    is_volatile: bool = False

    @property
    def volatile(self) -> BroadcastOperator:
        """The same broadcast, dropped for each socket that cannot take it at once (one with a
        queue behind a slow reader, or a polling client with no request waiting), as
        socket.io's volatile events: for data that the next message makes stale."""
        return attrs.evolve(self, is_volatile=True)

    def to(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        """Also target these rooms."""
        return attrs.evolve(self, rooms=self.rooms | _names(rooms))

    in_ = to

    def except_(self, *rooms: str | Iterable[str]) -> BroadcastOperator:
        """Leave out the sockets in these rooms."""
        return attrs.evolve(self, except_rooms=self.except_rooms | _names(rooms))

    def excluding(self, *sockets: Socket) -> BroadcastOperator:
        """Leave out these sockets."""
        return attrs.evolve(self, exclude=self.exclude | {s.id for s in sockets})

    def emit(self, event: str, *args: Any) -> int:
        """Send the event to every target, encoded once. Never waits.

        With a cluster, the other nodes' targets get it too: it is handed to the cluster's
        publisher after this node's sockets have it (dropped, and counted, while Redis is
        unreachable). :attr:`everywhere` counts the sockets reached on every node.

        Returns:
            How many sockets of this node it reached (a volatile broadcast counts only those it
            was written to).

        Raises:
            hub.errors.LocalProtocolError: the event or arguments cannot be encoded.
        """
        packet = Event(event, args, namespace=self.namespace.name)
        count = self.namespace.adapter.broadcast(
            packet,
            self.rooms,
            self.except_rooms,
            self.exclude,
            self.namespace.sockets.values(),
            volatile=self.is_volatile,
        )
        cluster = self.namespace.cluster
        if cluster is not None:
            cluster.publish_broadcast(
                packet, self.rooms, self.except_rooms, self.exclude, volatile=self.is_volatile
            )
        if self.namespace.observers:
            notify(self.namespace.observers, "on_broadcast", self, event, args, count)
        return count

    @property
    def everywhere(self) -> ClusterOperator:
        """The same targets on every node of the cluster, for the operations that wait for the
        other nodes: ``await op.everywhere.emit(...)`` (returns the sockets reached on all
        nodes), ``fetch_sockets()``, ``join(...)``, ``leave(...)``, ``disconnect()``
        (see :class:`hub.cluster.ClusterOperator`). Without a cluster, this node's."""
        from hub.cluster.operator import ClusterOperator  # the cluster layer sits above this one

        return ClusterOperator(self)

    def sockets(self) -> list[Socket]:
        """The sockets of this node this broadcast would reach now."""
        return list(
            self.namespace.adapter.targets(
                self.rooms, self.except_rooms, self.exclude, self.namespace.sockets.values()
            )
        )

    def disconnect(self, *, close: bool = False) -> int:
        """Disconnect every target of this node; returns how many."""
        targets = self.sockets()
        for socket in targets:
            socket.disconnect(close=close)
        return len(targets)
