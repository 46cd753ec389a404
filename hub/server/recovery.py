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

Across a cluster (``RecoveryOptions(shared=RedisSessions(url))``, :mod:`hub.cluster.sessions`)
every stored packet and every saved session is also written to Redis, in the background. A
client that comes back to a node that does not know its ``pid`` is looked up there: the
session is taken (once, whichever node asks), the packets after its offset are read from the
stream its offset names, and the socket is restored as it would be on its own node. If that
stream's run has stopped (a node shut down or restarted), the packets this node stored since
the moment it stopped follow (and when this node began after that moment, a node started again,
those another node's run stored in between come first). A session restored from a node's
memory is taken from Redis too (so it is restored once, and a logout made on another node
holds); when Redis cannot be reached, each node recovers what it holds in memory.
"""

from __future__ import annotations

import bisect
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from itertools import islice
from typing import TYPE_CHECKING, Any

import attrs

from hub.engineio.outgoing import Outgoing

if TYPE_CHECKING:
    from hub.cluster.sessions import RedisSessions
    from hub.server.socket import Socket

__all__ = [
    "RECOVERABLE_REASONS",
    "Recovery",
    "RecoveryOptions",
    "Saved",
    "SharedUnavailable",
    "Stored",
]

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
        shared: a :class:`hub.cluster.sessions.RedisSessions`: sessions and packets are kept
            in Redis too, and a client is recovered by any node of the cluster. It must run
            beside the server (``nursery.start(shared.run)``).
    """

    max_disconnection_duration: float = attrs.field(default=120.0, validator=attrs.validators.gt(0))
    skip_middlewares: bool = True
    max_packets: int = attrs.field(default=100_000, validator=attrs.validators.ge(1))
    reasons: frozenset[str] = RECOVERABLE_REASONS
    shared: RedisSessions | None = attrs.field(default=None, eq=False)


class SharedUnavailable(Exception):
    """The store shared by the cluster cannot be reached now: recover from memory only."""


@attrs.define
class Saved:
    """What a disconnected socket may get back.

    With a shared store, ``shared`` says whether Redis has it (None: queued), and a session
    taken from another node's stream holds the packets read from it (``remote``), then takes
    this node's own from ``mark`` (that run still stores) or from the wall time ``ended`` (it
    stopped).
    """

    sid: str
    pid: str
    rooms: set[str]
    data: dict[str, Any]
    disconnected_at: float
    after: int = 0  # sequence number of the first packet it has not seen
    since: int = 0  # sequence number of the first packet after it (re)connected
    shared: bool | None = False
    remote: list[Stored] | None = None
    ended: float | None = None
    mark: int = 0


class Stored:
    """One replayable packet: who it is for, its messages, when it was stored (trio's clock,
    and the wall clock when the store is shared)."""

    __slots__ = ("emitted_at", "except_rooms", "messages", "rooms", "wall")

    def __init__(
        self,
        rooms: frozenset[str],
        except_rooms: frozenset[str],
        messages: list[Outgoing],
        emitted_at: float,
        wall: float = 0.0,
    ) -> None:
        self.rooms = rooms
        self.except_rooms = except_rooms
        self.messages = messages
        self.emitted_at = emitted_at
        self.wall = wall

    def reaches(self, rooms: set[str]) -> bool:
        if self.rooms and self.rooms.isdisjoint(rooms):
            return False
        return self.except_rooms.isdisjoint(rooms)


class Recovery:
    """The sessions and replayable packets of one namespace. ``now`` is trio's clock."""

    def __init__(self, options: RecoveryOptions) -> None:
        self.options = options
        self.reasons = options.reasons
        self.shared = options.shared
        self._seconds = math.ceil(options.max_disconnection_duration)
        # Offsets are "<this process's prefix>-<sequence in hex>": the position of a packet is
        # read from its offset, and an offset of another process (or an older run) is unknown.
        self._prefix = secrets.token_urlsafe(6)
        self._first = 0  # sequence number of packets[0]
        self._next = 0
        self.packets: deque[Stored] = deque()
        self._wall = 0.0  # the wall time of the last stored packet (kept from going back)
        self.sessions: OrderedDict[str, Saved] = OrderedDict()  # pid -> session, oldest first
        # With a shared store: when this run began storing (wall clock), and the namespace it
        # stores for (told by its first packet or socket), under which its stream is listed.
        self._began = time.time()
        self.namespace: str | None = None

    def bind(self, namespace: str) -> None:
        """Say which namespace this is (once): with a shared store, its stream is listed
        there, so that other nodes can read what it stored (:meth:`restore_shared`)."""
        if self.namespace is None:
            self.namespace = namespace
            if self.shared is not None:
                self.shared.register(namespace, self._prefix, self._began)

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
        shared = self.shared
        if shared is None:
            self.packets.append(Stored(rooms, frozenset(except_rooms), messages, now))
            self._next += 1
            self._expire(now)
            return
        if self.namespace is None:
            self.bind(_namespace_of(messages[0].packet.data))
        self._wall = max(self._wall, time.time())
        stored = Stored(rooms, frozenset(except_rooms), messages, now, self._wall)
        self.packets.append(stored)
        self._next += 1
        self._expire(now)
        shared.append(self._prefix, self._next - 1, self._first, stored, self._seconds)

    @property
    def sequence(self) -> int:
        """The sequence number the next stored packet will have: a socket connected now has
        seen everything before it."""
        return self._next

    def persist(self, socket: Socket, pid: str, now: float, since: int = 0) -> None:
        """Keep the state of a socket that went away for a recoverable reason; ``since`` is
        :attr:`sequence` when it connected."""
        saved = Saved(
            socket.id, pid, set(socket.rooms), socket.data, disconnected_at=now, since=since
        )
        self.sessions[pid] = saved
        self.sessions.move_to_end(pid)
        self._expire(now)
        if self.shared is not None:
            duration = self.options.max_disconnection_duration
            self.shared.save(socket.namespace.name, saved, self._prefix, self._next, duration)

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
        if saved.remote is not None:
            return [
                stored.messages
                for stored in (*saved.remote, *self._since_remote(saved))
                if stored.reaches(saved.rooms)
            ]
        start = max(saved.after - self._first, 0)
        return [
            self.packets[index].messages
            for index in range(start, len(self.packets))
            if self.packets[index].reaches(saved.rooms)
        ]

    def _since_remote(self, saved: Saved) -> Iterable[Stored]:
        """This node's packets that follow those read from another node's stream: all it
        stored since that run stopped, or since the read when that run still stores (it had
        the earlier ones, from Redis or from its own emitters)."""
        if saved.ended is not None:
            ended = saved.ended
            start = bisect.bisect_right(self.packets, ended, key=lambda stored: stored.wall)
        else:
            start = max(saved.mark - self._first, 0)
        return islice(self.packets, start, None)

    async def restore_shared(
        self, namespace: str, pid: Any, offset: Any, now: float
    ) -> Saved | None:
        """Take the session ``pid`` of ``namespace`` from the shared store (a client back on
        another node than its own, or on its node started again), if the packets after its
        offset are still kept; else None (it starts afresh). The session is taken even then:
        it is restored once at most.

        Raises:
            SharedUnavailable: Redis cannot be reached (within a short deadline).
        """
        shared = self.shared
        if shared is None or not isinstance(pid, str):
            return None
        told: tuple[str, int] | None = None
        if isinstance(offset, str):
            told = _parse_offset(offset)
            if told is None:
                return None  # not an offset this server gave
        elif offset is not None:
            return None
        record, _ = await shared.take(namespace, pid, self.options.max_disconnection_duration)
        if record is None:
            return None
        saved = record.saved
        saved.disconnected_at = now
        after = saved.since
        if told is not None and told[0] == record.stream:
            after = max(after, told[1])
        # An offset of another stream is from an earlier session of this client (the packets
        # replayed when it was restored elsewhere): what it missed counts from its connection.
        if record.stream == self._prefix:
            self._expire(now)
            if not self._first <= after <= self._next:
                return None
            saved.after = after
            return saved
        limit = self.options.max_packets
        read = await shared.read(record.stream, after, record.next, limit)
        if read is None:
            return None
        saved.remote = read.packets
        saved.ended = read.ended
        saved.mark = self._next
        if read.ended is not None and read.ended < self._began:
            # That run stopped before this one began (a node restarted): what was broadcast
            # in between is read from a run of another node that stored then.
            gap = await shared.read_between(
                namespace, {record.stream, self._prefix}, read.ended, self._began, limit
            )
            if gap is None:
                return None
            saved.remote.extend(gap)
        return saved

    async def confirm(self, namespace: str, saved: Saved) -> Saved | None:
        """A session restored from this node's memory, with a shared store: it is taken from
        Redis too, so that no other node restores it again, and it gets what Redis says of its
        rooms (a revocation made through another node). None when Redis no longer
        has it: restored by another node, or forgotten (a logout) meanwhile. When Redis cannot
        be reached, or has lost it (restarted empty), this node's memory decides."""
        shared = self.shared
        if shared is None:
            return saved
        if saved.shared is None:
            await shared.flush(shared.request_timeout)  # its write is on its way
        if not saved.shared:
            shared.discard(namespace, saved.pid)
            return saved
        try:
            duration = self.options.max_disconnection_duration
            record, gone = await shared.take(namespace, saved.pid, duration)
        except SharedUnavailable:
            return saved
        if gone:
            return None
        if record is not None:
            saved.rooms = record.saved.rooms
        return saved

    def forget(self, predicate: Any) -> int:
        """Drop the saved sessions for which ``predicate(saved)`` is true (a logout)."""
        gone = [pid for pid, saved in self.sessions.items() if predicate(saved)]
        for pid in gone:
            del self.sessions[pid]
        return len(gone)

    def saved(self) -> list[Saved]:
        return list(self.sessions.values())

    def _sequence_after(self, offset: str) -> int | None:
        told = _parse_offset(offset)
        if told is None or told[0] != self._prefix:
            return None
        return told[1]

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


def _namespace_of(data: str | bytes) -> str:
    """The namespace of an encoded Socket.IO packet: ``<type>[<attachments>-][<nsp>,]...``,
    the main namespace when none is written."""
    if not isinstance(data, str):
        return "/"
    start = data.find("-", 1) + 1 if data[:1] in ("5", "6") else 1
    if data[start : start + 1] != "/":
        return "/"
    end = data.find(",", start)
    return data[start:end] if end != -1 else data[start:]


def _parse_offset(offset: str) -> tuple[str, int] | None:
    """The stream an offset names, and the sequence number of the packet after it."""
    prefix, _, sequence = offset.rpartition("-")
    if not prefix:
        return None
    try:
        number = int(sequence, 16)
    except ValueError:
        return None
    return (prefix, number + 1) if number >= 0 else None
