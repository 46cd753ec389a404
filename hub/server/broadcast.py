"""Broadcasts: an event encoded once and written to every socket it targets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from hub.protocol import Event
from hub.server.socket import Socket

if TYPE_CHECKING:
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

        Returns:
            How many sockets it reached (a volatile broadcast counts only those it was
            written to).

        Raises:
            hub.errors.LocalProtocolError: the event or arguments cannot be encoded.
        """
        return self.namespace.adapter.broadcast(
            Event(event, args, namespace=self.namespace.name),
            self.rooms,
            self.except_rooms,
            self.exclude,
            self.namespace.sockets.values(),
            volatile=self.is_volatile,
        )

    def sockets(self) -> list[Socket]:
        """The sockets this broadcast would reach now."""
        return list(
            self.namespace.adapter.targets(
                self.rooms, self.except_rooms, self.exclude, self.namespace.sockets.values()
            )
        )

    def disconnect(self, *, close: bool = False) -> int:
        """Disconnect every target; returns how many."""
        targets = self.sockets()
        for socket in targets:
            socket.disconnect(close=close)
        return len(targets)
