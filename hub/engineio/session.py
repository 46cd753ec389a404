"""The Engine.IO v4 session state machine, sans-I/O.

Rules (from socketio/engine.io-protocol, "Handshake", "Heartbeat", "Upgrade"):

1. A session opens on a GET over long-polling or on a WebSocket. Its first packet is ``open``
   with ``sid``, ``upgrades`` (``["websocket"]`` over polling, ``[]`` over WebSocket),
   ``pingInterval``, ``pingTimeout`` (milliseconds) and ``maxPayload`` (bytes).
2. Heartbeat: "at a given interval (the pingInterval value sent in the handshake) the server
   sends a PING packet and the client has a few seconds (the pingTimeout value) to send a PONG
   packet back. If the server does not receive a PONG packet back, it considers that the
   connection is closed." The countdown starts when the ping is queued, whether or not a GET is
   waiting to carry it. The next ping is due ``pingInterval`` after the pong.
3. Long-polling: at most one GET waits at a time. "The server MUST close the session" on a
   second concurrent GET: the waiting one is answered ``1`` (close), the second is refused.
4. Upgrade, only from polling to WebSocket, only once:
   ``OPEN --ws 2probe / 3probe--> UPGRADING --ws 5--> UPGRADED``. While UPGRADING, a waiting GET
   is answered ``6`` (noop) at once, and so is every GET after it; packets queue meanwhile and
   are flushed over the WebSocket once it carries the session. A probe that does not finish
   within the upgrade timeout is dropped and polling goes on.
5. After the upgrade, polling requests for the session are refused, and a further WebSocket for
   the same sid is accepted and closed at once.
6. ``close`` from either side ends the session; so does any malformed packet (answered with the
   engine.io error of that case). Nothing is sent on a closed session.

Time is passed in (``now``, seconds, any monotonic origin); nothing here reads a clock.
"""

from __future__ import annotations

import enum
import json

import attrs

from hub.engineio.outgoing import Outgoing
from hub.engineio.packets import Packet, PacketType
from hub.errors import EngineErrorCode, EngineIOError, LocalProtocolError

__all__ = [
    "Incoming",
    "Session",
    "SessionOptions",
    "State",
    "Transport",
]


class Transport(enum.Enum):
    POLLING = "polling"
    WEBSOCKET = "websocket"


class State(enum.Enum):
    OPEN = "open"
    UPGRADING = "upgrading"
    CLOSED = "closed"


class Incoming(enum.Enum):
    """What a received packet asks of the I/O layer."""

    MESSAGE = "message"  # deliver packet.data to the application
    PONG = "pong"  # nothing to do; deadlines moved
    PROBE = "probe"  # answer "3probe" on the probing WebSocket; answer a waiting GET "6"
    UPGRADE = "upgrade"  # the WebSocket now carries the session: flush queued packets on it
    CLOSE = "close"  # the peer closed the session
    NOOP = "noop"  # nothing to do


@attrs.frozen
class SessionOptions:
    """Handshake values. Times in seconds, sizes in bytes."""

    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000
    upgrade_timeout: float = 10.0
    allow_upgrades: bool = True
    max_buffered: int = 4_000_000

    def handshake_fields(self, sid: str, transport: Transport) -> dict[str, object]:
        upgrades = ["websocket"] if transport is Transport.POLLING and self.allow_upgrades else []
        return {
            "sid": sid,
            "upgrades": upgrades,
            "pingInterval": round(self.ping_interval * 1000),
            "pingTimeout": round(self.ping_timeout * 1000),
            "maxPayload": self.max_payload,
        }


_NEVER = float("inf")
_PING = Packet(PacketType.PING)  # frozen: one for every heartbeat of every session


def _bad(message: str) -> EngineIOError:
    return EngineIOError(EngineErrorCode.BAD_REQUEST, message)


class Session:
    """One Engine.IO session, whatever transport carries it.

    The I/O layer feeds it packets with :meth:`receive`, asks it when to wake with
    :meth:`next_deadline` and :meth:`on_deadline`, and keeps its polling queue through
    :meth:`queue` / :meth:`take`. Errors of the peer are raised as :class:`EngineIOError` after
    the session has been closed.
    """

    __slots__ = (
        "_queue",
        "_queued_bytes",
        "close_reason",
        "options",
        "ping_due",
        "polling_waiting",
        "pong_deadline",
        "sid",
        "state",
        "transport",
        "upgrade_deadline",
    )

    def __init__(
        self, sid: str, transport: Transport, options: SessionOptions, *, now: float
    ) -> None:
        self.sid = sid
        self.options = options
        self.transport = transport
        self.state = State.OPEN
        self.close_reason: str | None = None
        self.ping_due: float | None = now + options.ping_interval
        self.pong_deadline: float | None = None
        self.upgrade_deadline: float | None = None
        self.polling_waiting = False
        self._queue: list[Outgoing] = []
        self._queued_bytes = 0

    # -- handshake -------------------------------------------------------------------------

    def open_packet(self) -> Packet:
        """The ``open`` packet that starts the session."""
        fields = self.options.handshake_fields(self.sid, self.transport)
        return Packet(PacketType.OPEN, json.dumps(fields, separators=(",", ":")))

    # -- state -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def upgrading(self) -> bool:
        """A WebSocket has asked to take over and has not finished (or timed out) yet."""
        return self.state is State.UPGRADING or self.upgrade_deadline is not None

    def close(self, reason: str) -> bool:
        """Close the session.

        Returns:
            True if this call closed it, False if it was closed already.
        """
        if self.state is State.CLOSED:
            return False
        self.state = State.CLOSED
        self.close_reason = reason
        self.ping_due = self.pong_deadline = self.upgrade_deadline = None
        self._queue.clear()
        self._queued_bytes = 0
        return True

    def _fail(self, error: EngineIOError, reason: str = "parse error") -> EngineIOError:
        self.close(reason)
        return error

    # -- heartbeat -------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When :meth:`on_deadline` must next be called (``inf`` when never)."""
        deadline = _NEVER
        for due in (self.ping_due, self.pong_deadline, self.upgrade_deadline):
            if due is not None and due < deadline:
                deadline = due
        return deadline

    def on_deadline(self, now: float) -> list[Packet]:
        """Act on the deadlines that have passed.

        Returns:
            Packets to send on the current transport (a ``ping``), possibly none. When the pong
            deadline has passed the session is closed with reason ``"ping timeout"`` (check
            :attr:`closed`). When a probe did not finish in time, the upgrade is abandoned
            (the I/O layer closes the probing WebSocket when :attr:`state` is back to OPEN).
        """
        out: list[Packet] = []
        if self.state is State.CLOSED:
            return out
        if self.pong_deadline is not None and now >= self.pong_deadline:
            self.close("ping timeout")
            return out
        if self.upgrade_deadline is not None and now >= self.upgrade_deadline:
            self.upgrade_deadline = None
            if self.state is State.UPGRADING:
                self.state = State.OPEN
        if self.ping_due is not None and now >= self.ping_due:
            self.ping_due = None
            self.pong_deadline = now + self.options.ping_timeout
            out.append(_PING)
        return out

    # -- receiving -------------------------------------------------------------------------

    def begin_probe(self, now: float) -> None:
        """A WebSocket asks to take over this polling session.

        Raises:
            EngineIOError: the session cannot be upgraded (closed, not polling, upgrading).
        """
        if self.state is State.CLOSED:
            raise EngineIOError(EngineErrorCode.UNKNOWN_SID)
        if self.transport is not Transport.POLLING or self.upgrading:
            raise _bad("session already upgraded or upgrading")
        if not self.options.allow_upgrades:
            raise _bad("upgrades are disabled")
        self.upgrade_deadline = now + self.options.upgrade_timeout

    def receive(self, packet: Packet, now: float, *, via: Transport) -> Incoming:
        """Take one packet from the peer.

        Args:
            packet: the decoded packet.
            now: the current time.
            via: the transport it came on (a probing WebSocket counts as WEBSOCKET).

        Returns:
            What the I/O layer must do next.

        Raises:
            EngineIOError: the packet is not allowed here; the session is closed.
        """
        if self.state is State.CLOSED:
            raise EngineIOError(EngineErrorCode.UNKNOWN_SID)
        probing = via is Transport.WEBSOCKET and self.transport is Transport.POLLING
        kind = packet.type
        if probing:
            # The probing WebSocket carries only the probe and the upgrade.
            if kind is PacketType.PING and packet.data == "probe":
                if self.state is not State.OPEN or self.upgrade_deadline is None:
                    raise self._fail(_bad("unexpected probe"))
                self.state = State.UPGRADING
                return Incoming.PROBE
            if kind is PacketType.UPGRADE and self.state is State.UPGRADING:
                self.state = State.OPEN
                self.transport = Transport.WEBSOCKET
                self.upgrade_deadline = None
                return Incoming.UPGRADE
            if kind is PacketType.NOOP:
                return Incoming.NOOP
            raise self._fail(_bad(f"unexpected {kind.name.lower()} packet during upgrade"))
        if via is not self.transport:
            raise _bad("wrong transport for this session")
        if kind is PacketType.MESSAGE:
            return Incoming.MESSAGE
        if kind is PacketType.PONG:
            self.receive_pong(now)
            return Incoming.PONG
        if kind is PacketType.CLOSE:
            self.close("transport close")
            return Incoming.CLOSE
        if kind is PacketType.NOOP:
            return Incoming.NOOP
        raise self._fail(_bad(f"unexpected {kind.name.lower()} packet from client"))

    def receive_pong(self, now: float) -> bool:
        """A ``pong`` on the session's own transport (what :meth:`receive` does with one, for
        the I/O layer's fast path of a heartbeat).

        Returns:
            Whether the deadlines moved (a ping was waiting for it).
        """
        if self.pong_deadline is None or self.state is State.CLOSED:
            return False
        self.pong_deadline = None
        self.ping_due = now + self.options.ping_interval
        return True

    # -- long-polling ----------------------------------------------------------------------

    def queue(self, item: Outgoing) -> None:
        """Queue one packet for the next GET (or for the WebSocket that is taking over).

        Raises:
            LocalProtocolError: the session is closed.
            OverflowError: the queue is over ``max_buffered`` bytes; the session is closed
                with reason ``"slow consumer"``.
        """
        if self.state is State.CLOSED:
            raise LocalProtocolError("queue on a closed session")
        self._queue.append(item)
        self._queued_bytes += len(item.message)
        if self._queued_bytes > self.options.max_buffered:
            self.close("slow consumer")
            raise OverflowError("polling queue over its bound")

    @property
    def has_queued(self) -> bool:
        return bool(self._queue)

    def take(self) -> list[Outgoing]:
        """Take every queued packet (the body of the answer to a GET)."""
        items, self._queue = self._queue, []
        self._queued_bytes = 0
        return items

    def begin_poll(self) -> None:
        """A GET arrives.

        Raises:
            EngineIOError: the session is closed or not on polling, or a GET is already
                waiting (then the session is closed: rule 3).
        """
        if self.state is State.CLOSED:
            raise EngineIOError(EngineErrorCode.UNKNOWN_SID)
        if self.transport is not Transport.POLLING:
            raise _bad("session is not on polling")
        if self.polling_waiting:
            self.close("transport error")
            raise _bad("overlapping GET requests")
        self.polling_waiting = True

    def end_poll(self) -> None:
        self.polling_waiting = False

    def check_post(self) -> None:
        """A POST arrives.

        Raises:
            EngineIOError: the session is closed or not on polling.
        """
        if self.state is State.CLOSED:
            raise EngineIOError(EngineErrorCode.UNKNOWN_SID)
        if self.transport is not Transport.POLLING:
            raise _bad("session is not on polling")
