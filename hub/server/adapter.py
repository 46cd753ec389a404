"""Rooms of one namespace, on this node, and the delivery of broadcasts to them.

The adapter is the seam where a cluster adapter (Redis) plugs in: it knows which sockets are in
which room and delivers an encoded broadcast to them.

Delivery (DESIGN.md, point 4): a broadcast reaching at most ``slice_size`` sockets is written
inline, at once, with no task. A larger one is put on the namespace's ordered backlog and a
delivery task (in the server's nursery) writes it ``slice_size`` sockets at a time, yielding to
the scheduler between slices so heartbeats, reads and other work keep moving. The emitter never
waits. While the backlog is not empty every later broadcast and every direct emit of this
namespace joins it too, so each socket still receives the namespace's packets in the order they
were emitted (as with Node's socket.io, whose fan-out is one synchronous loop). An emitter
faster than the delivery (a loop emitting to a big room once per scheduler turn) does not grow
the backlog without bound: a large broadcast emitted while another waits is written at once,
inline, together with it (a socket that still waits for the first gets both frames in one
``send()``: one system call instead of two, here and in the client, so a busy room costs less
the busier it is); and past about one broadcast's worth the backlog is written out inline.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import TYPE_CHECKING

import attrs
import trio

from hub.engineio.outgoing import Outgoing
from hub.protocol import Event
from hub.server.recovery import Recovery
from hub.server.socket import encode_outgoing
from hub.server.stats import Stats

if TYPE_CHECKING:
    from hub.server.socket import Socket

__all__ = ["DEFAULT_SLICE", "LocalAdapter"]

DEFAULT_SLICE = 512
"""Sockets written per slice of a large broadcast: ~3 ms of writes between two yields."""


class _Delivery:
    """One queued broadcast (or direct send): who gets it, what, and how far it has got."""

    __slots__ = ("direct", "messages", "position", "started", "targets", "volatile")

    def __init__(
        self,
        targets: list[Socket],
        messages: list[Outgoing],
        *,
        volatile: bool = False,
        direct: bool = False,
        started: float = 0.0,
    ) -> None:
        self.targets = targets
        self.messages = messages
        self.volatile = volatile
        self.direct = direct  # one socket's own packet: written even while it disconnects
        self.position = 0
        self.started = started  # perf_counter() when it was emitted, for Stats.delivery


def _write(socket: Socket, messages: list[Outgoing]) -> None:
    write = socket.client.engine.write_frame
    if write is not None and len(messages) == 1:
        write(messages[0].frame)
    else:
        socket._write_encoded(messages)


class LocalAdapter:
    """Room membership kept in memory (room name -> sockets), and the namespace's backlog.

    Attributes:
        slice_size: the most sockets written between two yields to the scheduler.
        nursery: where the delivery task runs (the server sets it while it runs); without one
            every broadcast is written inline.
        stats: where recipients and delivery times are counted (the server's, once adopted).
        recovery: the sessions and packets kept for connection state recovery, when it is on
            (:mod:`hub.server.recovery`).
    """

    def __init__(self, *, slice_size: int = DEFAULT_SLICE) -> None:
        if slice_size < 1:
            raise ValueError(f"slice_size must be at least 1, not {slice_size}")
        self.rooms: dict[str, dict[str, Socket]] = {}
        self.slice_size = slice_size
        self.nursery: trio.Nursery | None = None
        self.backlog: deque[_Delivery] = deque()
        self._draining = False
        self._queued = 0  # writes still to do in the backlog
        self.stats = Stats()
        self.recovery: Recovery | None = None
        self._batch: dict[Socket, list[bytes]] | None = None

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Within the block (which must not await), the WebSocket frames that broadcasts write
        inline are kept per socket and written at its end, one ``send()`` per socket: several
        emits to one small room (a batch through the emit endpoint) cost one system call per
        recipient instead of one per emit. Each socket's order holds: anything that would
        write around the kept frames (a queued broadcast, a direct emit, a volatile one)
        writes them first."""
        if self._batch is not None:
            yield  # within a batch already
            return
        self._batch = {}
        try:
            yield
        finally:
            self.flush_batch()
            self._batch = None

    def flush_batch(self) -> None:
        """Write what the batch in progress keeps (nothing outside a batch)."""
        batch = self._batch
        if not batch:
            return
        self._batch = {}
        for socket, frames in batch.items():
            write = socket.client.engine.write_frame
            if write is not None:  # (else its connection ended meanwhile)
                write(frames[0] if len(frames) == 1 else b"".join(frames))

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

    def broadcast(
        self,
        packet: Event,
        rooms: frozenset[str],
        except_rooms: frozenset[str],
        exclude: frozenset[str],
        everyone: Iterable[Socket],
        *,
        volatile: bool = False,
    ) -> int:
        """Encode an event once and deliver it (see :meth:`deliver`).

        With connection state recovery on, an event without an ack that is not volatile gets
        an offset as its last argument and is kept for replay, as socket.io's session-aware
        adapter does.
        """
        recovery = self.recovery
        if recovery is None or volatile or packet.id is not None:
            messages = encode_outgoing(packet)
        else:
            packet = attrs.evolve(packet, args=(*packet.args, recovery.next_offset()))
            messages = encode_outgoing(packet)
            recovery.store(rooms, except_rooms | exclude, messages, trio.current_time())
        return self.deliver(messages, rooms, except_rooms, exclude, everyone, volatile=volatile)

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
        """Write an encoded broadcast to every target, or queue it (see the module's doc).

        Returns:
            How many sockets it reached: those written to, plus those a queued broadcast is
            addressed to (a volatile broadcast written inline counts only those it was
            written to).
        """
        started = perf_counter()
        if len(rooms) == 1 and not except_rooms and not exclude:
            (room,) = rooms
            members = self.rooms.get(room)
            targets: list[Socket] = list(members.values()) if members else []
        else:
            targets = list(self.targets(rooms, except_rooms, exclude, everyone))
        if self._batch and (self.backlog or volatile or len(targets) > self.slice_size):
            self.flush_batch()  # what goes around the batch goes after what it holds
        if self.backlog:
            # Emitted faster than delivered (one emit per scheduler turn to a big room, as an
            # emitting loop does). A big broadcast while one waits: both are written now,
            # together, as Node's socket.io writes every broadcast at once. Otherwise, past
            # about one broadcast's worth the backlog is written now. Either way it stays
            # within about one broadcast, in memory and in the latency it adds.
            if not volatile and len(targets) > self.slice_size:
                merged = self._write_with_backlog(targets, messages, started)
                if merged is not None:
                    return merged
            if self._queued + len(targets) > max(len(targets), 4 * self.slice_size):
                self._catch_up()
        queued = (self.backlog or len(targets) > self.slice_size) and self._enqueue(
            _Delivery(targets, messages, volatile=volatile, started=started)
        )
        if queued:
            reached = sum(1 for socket in targets if socket.connected)
            self.stats.events_out += reached  # its time is taken when its last slice is out
            return reached
        reached = self._write_all(targets, messages, volatile)
        self.stats.delivered(reached, started)
        return reached

    def _write_all(self, targets: list[Socket], messages: list[Outgoing], volatile: bool) -> int:
        """The hot loop of a fan-out: per member, one attribute chain and one ``send()`` of
        frame bytes shared by all (no encoding, no task, no log line per recipient)."""
        count = 0
        if volatile:
            for socket in targets:
                if socket.connected and socket._send_volatile(messages):
                    count += 1
            return count
        if len(messages) == 1:
            frame = messages[0].frame
            batch = self._batch
            if batch is not None:
                for socket in targets:
                    if socket.connected:
                        if socket.client.engine.write_frame is not None:
                            kept = batch.get(socket)
                            if kept is None:
                                batch[socket] = [frame]
                            else:
                                kept.append(frame)
                        else:
                            socket._write_encoded(messages)
                        count += 1
                return count
            for socket in targets:
                if socket.connected:
                    write = socket.client.engine.write_frame
                    if write is not None:
                        write(frame)
                    else:
                        socket._write_encoded(messages)
                    count += 1
            return count
        if self._batch:
            self.flush_batch()  # (binary attachments: written as they come)
        for socket in targets:
            if socket.connected:
                socket._write_encoded(messages)
                count += 1
        return count

    def send_direct(self, socket: Socket, messages: list[Outgoing]) -> bool:
        """Queue one socket's own packet behind the backlog, if there is one (so it cannot
        overtake a broadcast emitted before it). Returns False when it may be written now."""
        if self._batch:
            self.flush_batch()
        if not self.backlog:
            return False
        return self._enqueue(_Delivery([socket], messages, direct=True))

    def _enqueue(self, delivery: _Delivery) -> bool:
        nursery = self.nursery
        if not self._draining:
            if nursery is None:
                return False  # not running under a server: written inline
            try:
                nursery.start_soon(self._drain)
            except RuntimeError:
                return False  # the server is shutting down
            self._draining = True
        self.backlog.append(delivery)
        self._queued += len(delivery.targets)
        return True

    def _write_part(self, delivery: _Delivery, budget: int) -> int:
        """Write up to ``budget`` of a queued delivery's targets; returns how many."""
        start = delivery.position
        end = min(start + budget, len(delivery.targets))
        chunk = delivery.targets[start:end]
        if delivery.direct:
            socket = chunk[0]
            if not socket.client.engine.closed:
                _write(socket, delivery.messages)
        else:
            self._write_all(chunk, delivery.messages, delivery.volatile)
        delivery.position = end
        self._queued -= len(chunk)
        if end == len(delivery.targets):
            self.backlog.popleft()
            if delivery.targets and not delivery.direct:
                self.stats.delivery.observe(perf_counter() - delivery.started)
        return len(chunk)

    def _write_with_backlog(
        self, targets: list[Socket], messages: list[Outgoing], started: float
    ) -> int | None:
        """Write the one queued broadcast and this one together, inline; None (nothing done)
        unless what waits is exactly one broadcast of one frame and this is one frame too.

        Per socket the order holds: one that still waits for the queued broadcast gets its
        frame and this one's in one write; one already past it gets this one's; one that
        waits for it but is not a target now (it left the room) gets its frame alone.
        """
        if len(self.backlog) != 1 or len(messages) != 1:
            return None
        queued = self.backlog[0]
        if queued.direct or queued.volatile or len(queued.messages) != 1:
            return None
        waiting = dict.fromkeys(queued.targets[queued.position :])
        first, second = queued.messages[0].frame, messages[0].frame
        both = first + second
        reached = 0
        for socket in targets:
            if not socket.connected:
                waiting.pop(socket, None)
                continue
            write = socket.client.engine.write_frame
            if socket in waiting:
                del waiting[socket]
                if write is not None:
                    write(both)
                else:
                    socket._write_encoded(queued.messages)
                    socket._write_encoded(messages)
            elif write is not None:
                write(second)
            else:
                socket._write_encoded(messages)
            reached += 1
        self._write_all(list(waiting), queued.messages, False)
        self._queued -= len(queued.targets) - queued.position
        self.backlog.popleft()
        self.stats.delivery.observe(perf_counter() - queued.started)
        self.stats.delivered(reached, started)
        return reached

    def _catch_up(self) -> None:
        """Write the whole backlog now, in order (the delivery task then finds it empty)."""
        backlog = self.backlog
        while backlog:
            delivery = backlog[0]
            self._write_part(delivery, len(delivery.targets))

    async def _drain(self) -> None:
        """Write the backlog in order, ``slice_size`` sockets between two yields."""
        try:
            budget = self.slice_size
            backlog = self.backlog
            while backlog:
                budget -= self._write_part(backlog[0], budget)
                if budget <= 0:
                    budget = self.slice_size
                    await trio.lowlevel.checkpoint()
        finally:
            self._draining = False
