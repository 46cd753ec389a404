"""Connection state recovery, as socket.io's ``connectionStateRecovery`` does it for the stock
client.

With it on, the CONNECT answer carries a private session id (``pid``) besides the socket id, and
every event that can be replayed carries an *offset* as its last argument: a broadcast (or a
direct emit) without an ack that is not volatile. socket.io-client keeps the last offset it saw
and, when it reconnects, sends ``{pid, offset}`` in its CONNECT auth. If the socket went away for
a reason that is not final (a transport close or error, a ping timeout, a server close, a slow
consumer) less than ``max_disconnection_duration`` ago, the server restores it: the same id,
rooms and ``data``, ``socket.recovered`` true, and every packet it missed written in order right
after the CONNECT.

What is kept, per namespace: the sessions that may come back, and the replayable packets of the
last ``max_disconnection_duration`` (at most ``max_packets`` of them), encoded once, as they
were sent. An offset older than what is kept, an unknown or expired ``pid``: a new session, as
in Node (``socket.recovered`` false), and the application sends the state afresh.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from hub.engineio.outgoing import Outgoing

if TYPE_CHECKING:
    from hub.server.socket import Socket

__all__ = ["RECOVERABLE_REASONS", "Recovery", "RecoveryOptions", "Saved"]

RECOVERABLE_REASONS = frozenset(
    {
        "transport error",
        "transport close",
        "forced close",
        "ping timeout",
        "server shutting down",
        "forced server close",
        # Not in Node's list: what was dropped from a slow consumer's queue is replayed from
        # its last offset, so nothing is lost for a client that comes back.
        "slow consumer",
    }
)
"""Disconnect reasons after which the socket's state is kept for a while."""


@attrs.frozen
class RecoveryOptions:
    """Settings of connection state recovery. Times in seconds.

    Attributes:
        max_disconnection_duration: how long a session and the packets it may miss are kept.
        skip_middlewares: run no middleware when a socket is recovered (socket.io's default).
            An application that checks credentials in a middleware (the hub does) sets it
            False so that a recovered socket is checked like a new one.
        max_packets: the most replayable packets kept per namespace; past it the oldest go
            (and a client whose offset they held gets a new session).
        reasons: the disconnect reasons after which a socket may be recovered.
    """

    max_disconnection_duration: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    skip_middlewares: bool = True
    max_packets: int = attrs.field(default=100_000, validator=attrs.validators.ge(1))
    reasons: frozenset[str] = RECOVERABLE_REASONS


@attrs.define
class Saved:
    """What a disconnected socket may get back."""

    sid: str
    pid: str
    rooms: set[str]
    data: dict[str, Any]
    disconnected_at: float
    after: int = 0  # sequence number of the first packet it has not seen
    since: int = 0  # sequence number of the first packet after it (re)connected


class _Stored:
    __slots__ = ("emitted_at", "except_rooms", "messages", "rooms")

    def __init__(
        self,
        rooms: frozenset[str],
        except_rooms: frozenset[str],
        messages: list[Outgoing],
        emitted_at: float,
    ) -> None:
        self.rooms = rooms
        self.except_rooms = except_rooms
        self.messages = messages
        self.emitted_at = emitted_at

    def reaches(self, rooms: set[str]) -> bool:
        if self.rooms and self.rooms.isdisjoint(rooms):
            return False
        return self.except_rooms.isdisjoint(rooms)


class Recovery:
    """The sessions and replayable packets of one namespace. ``now`` is trio's clock."""

    def __init__(self, options: RecoveryOptions) -> None:
        self.options = options
        self.reasons = options.reasons
        # Offsets are "<this process's prefix>-<sequence in hex>": the position of a packet is
        # read from its offset, and an offset of another process (or an older run) is unknown.
        self._prefix = secrets.token_urlsafe(6)
        self._first = 0  # sequence number of packets[0]
        self._next = 0
        self.packets: deque[_Stored] = deque()
        self.sessions: OrderedDict[str, Saved] = OrderedDict()  # pid -> session, oldest first

    @staticmethod
    def new_pid() -> str:
        return secrets.token_urlsafe(15)

    def next_offset(self) -> str:
        """The offset the next stored packet will have (it goes into the packet's args)."""
        return f"{self._prefix}-{self._next:x}"

    def store(
        self,
        rooms: frozenset[str],
        except_rooms: Iterable[str],
        messages: list[Outgoing],
        now: float,
    ) -> None:
        """Keep a packet encoded with :meth:`next_offset` for replay."""
        self.packets.append(_Stored(rooms, frozenset(except_rooms), messages, now))
        self._next += 1
        self._expire(now)

    @property
    def sequence(self) -> int:
        """The sequence number the next stored packet will have: a socket connected now has
        seen everything before it."""
        return self._next

    def persist(self, socket: Socket, pid: str, now: float, since: int = 0) -> None:
        """Keep the state of a socket that went away for a recoverable reason; ``since`` is
        :attr:`sequence` when it connected."""
        self.sessions[pid] = Saved(
            socket.id, pid, set(socket.rooms), socket.data, disconnected_at=now, since=since
        )
        self.sessions.move_to_end(pid)
        self._expire(now)

    def restore(self, pid: Any, offset: Any, now: float) -> Saved | None:
        """Take the session ``pid`` back, if it is kept and the packets after ``offset`` (the
        last packet its client saw) are still kept too; else None. A session is restored once.

        Past Node: a client that went away before its first replayable event has no offset
        to show; it gets everything since it connected. An offset older than that (kept by
        the client from an earlier session) counts from there too."""
        if not isinstance(pid, str):
            return None
        self._expire(now)
        saved = self.sessions.get(pid)
        if saved is None:
            return None
        after = 0
        if isinstance(offset, str):
            told = self._sequence_after(offset)
            if told is None or told > self._next:
                return None  # another process's offset, or one never given
            after = told
        after = max(after, saved.since)
        if not self._first <= after <= self._next:
            return None  # packets it missed are no longer kept
        del self.sessions[pid]
        saved.after = after
        return saved

    def missed(self, saved: Saved) -> list[list[Outgoing]]:
        """The packets since the restored session's offset that its rooms would have had, in
        order. Asked when the socket is connected again (after its middleware ran), so what
        was broadcast meanwhile is in it too."""
        start = max(saved.after - self._first, 0)
        return [
            self.packets[index].messages
            for index in range(start, len(self.packets))
            if self.packets[index].reaches(saved.rooms)
        ]

    def forget(self, predicate: Any) -> int:
        """Drop the saved sessions for which ``predicate(saved)`` is true (a logout)."""
        gone = [pid for pid, saved in self.sessions.items() if predicate(saved)]
        for pid in gone:
            del self.sessions[pid]
        return len(gone)

    def saved(self) -> list[Saved]:
        return list(self.sessions.values())

    def _sequence_after(self, offset: str) -> int | None:
        prefix, _, sequence = offset.rpartition("-")
        if prefix != self._prefix:
            return None
        try:
            number = int(sequence, 16)
        except ValueError:
            return None
        return number + 1 if number >= 0 else None

    def _expire(self, now: float) -> None:
        horizon = now - self.options.max_disconnection_duration
        packets = self.packets
        while packets and (
            packets[0].emitted_at < horizon or len(packets) > self.options.max_packets
        ):
            packets.popleft()
            self._first += 1
        sessions = self.sessions
        while sessions:
            pid, saved = next(iter(sessions.items()))
            if saved.disconnected_at >= horizon:
                break
            del sessions[pid]
