"""Rooms of one namespace, on this node.

The adapter is the seam where a cluster adapter (Redis) plugs in later: it knows which sockets
are in which room and delivers an encoded broadcast to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from hub.engineio.outgoing import Outgoing

if TYPE_CHECKING:
    from hub.server.socket import Socket

__all__ = ["LocalAdapter"]


class LocalAdapter:
    """Room membership kept in memory: room name -> sockets."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, Socket]] = {}

    def add(self, socket: Socket, room: str) -> None:
        self.rooms.setdefault(room, {})[socket.id] = socket

    def remove(self, socket: Socket, room: str) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.pop(socket.id, None)
            if not members:
                del self.rooms[room]

    def remove_all(self, socket: Socket, rooms: Iterable[str]) -> None:
        for room in list(rooms):
            self.remove(socket, room)

    def members(self, room: str) -> list[Socket]:
        return list(self.rooms.get(room, {}).values())

    def targets(
        self,
        rooms: frozenset[str],
        except_rooms: frozenset[str],
        exclude: frozenset[str],
        everyone: Iterable[Socket],
    ) -> Iterator[Socket]:
        """The sockets a broadcast reaches: in any of ``rooms`` (all when empty), in none of
        ``except_rooms``, and not one of ``exclude`` (socket ids). Each socket once."""
        skip: set[str] = set(exclude)
        for room in except_rooms:
            skip.update(self.rooms.get(room, {}))
        if not rooms:
            for socket in everyone:
                if socket.id not in skip:
                    yield socket
            return
        seen = skip
        for room in rooms:
            for sid, socket in list(self.rooms.get(room, {}).items()):
                if sid not in seen:
                    seen.add(sid)
                    yield socket

    def deliver(
        self,
        messages: list[Outgoing],
        rooms: frozenset[str],
        except_rooms: frozenset[str],
        exclude: frozenset[str],
        everyone: Iterable[Socket],
        *,
        volatile: bool = False,
    ) -> int:
        """Write an encoded broadcast to every target; returns how many sockets it reached.

        The hot loop of a fan-out: per member, one attribute chain and one ``send()`` of frame
        bytes shared by all (no encoding, no task, no log line per recipient).
        """
        if len(rooms) == 1 and not except_rooms and not exclude:
            (room,) = rooms
            targets: Iterable[Socket] = list(self.rooms.get(room, {}).values())
        else:
            targets = self.targets(rooms, except_rooms, exclude, everyone)
        count = 0
        if volatile:
            for socket in targets:
                if socket.connected and socket._send_volatile(messages):
                    count += 1
            return count
        if len(messages) == 1:
            frame = messages[0].frame
            for socket in targets:
                if socket.connected:
                    write = socket.client.engine.write_frame
                    if write is not None:
                        write(frame)
                    else:
                        socket._send_encoded(messages)
                    count += 1
            return count
        for socket in targets:
            if socket.connected:
                socket._send_encoded(messages)
                count += 1
        return count
