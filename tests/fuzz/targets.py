"""Feed one input to a sans-I/O decoder and check what came out.

Each function raises :class:`AssertionError` when the decoder broke its contract: an exception
other than the protocol's error, an error that is not one short line, state that outlives the
error, or a decoded value that does not encode back to what was decoded. Anything else returns.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from fuzz import mutate
from hub.engineio import (
    Incoming,
    Outgoing,
    Packet,
    PacketType,
    PayloadDecoder,
    Session,
    SessionOptions,
    State,
    Transport,
    decode_packet,
    decode_payload,
    encode_packet,
    encode_payload,
)
from hub.errors import (
    EngineErrorCode,
    EngineIOError,
    LocalProtocolError,
    RemoteProtocolError,
    SocketIOError,
)
from hub.protocol import Decoder, encode
from hub.protocol import Packet as SioPacket

__all__ = [
    "MAX_ERROR_LENGTH",
    "check_error",
    "engine_packet",
    "engine_payload",
    "engine_session",
    "socketio_messages",
]

MAX_ERROR_LENGTH = 200
"""An error message is logged and may be sent to the peer: one short line, whatever it sent."""


def check_error(error: RemoteProtocolError) -> None:
    """A peer's error says what went wrong in one short line."""
    assert error.message, "an error without a message"
    assert "\n" not in error.message, error.message
    assert "\r" not in error.message, error.message
    assert len(error.message) <= MAX_ERROR_LENGTH, error.message


def _check_bad_request(error: EngineIOError, *, statuses: Sequence[int] = (400,)) -> None:
    check_error(error)
    assert error.code is EngineErrorCode.BAD_REQUEST, error.code
    assert error.status in statuses, error.status


# --- Engine.IO packets and payloads ---------------------------------------------------------


def engine_packet(message: str | bytes) -> Packet | None:
    """One WebSocket message: a packet that encodes back to the same message, or a 400."""
    try:
        packet = decode_packet(message)
    except EngineIOError as exc:
        _check_bad_request(exc)
        assert isinstance(message, str), "a binary message is always a packet"
        return None
    assert encode_packet(packet) == message
    return packet


Outcome = list[Packet] | tuple[int, EngineErrorCode, str]


def _payload_outcome(body: bytes, max_payload: int) -> Outcome:
    try:
        return decode_payload(body, max_payload=max_payload)
    except EngineIOError as exc:
        return (exc.status, exc.code, exc.message)


def engine_payload(body: bytes, cuts: Sequence[int], max_payload: int) -> Outcome:
    """A polling body, whole and fed to :class:`PayloadDecoder` in chunks cut at ``cuts``.

    Both ways give the same packets or the same error (413 when over ``max_payload``, else
    400); decoded packets encode to a body that decodes to them again.
    """
    whole = _payload_outcome(body, max_payload)
    decoder = PayloadDecoder(max_payload=max_payload)
    chunked: Outcome = []
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(body)), len(body)]
    try:
        packets = []
        for start, end in itertools.pairwise(bounds):
            packets += decoder.feed(body[start:end])
        packets += decoder.close()
        chunked = packets
    except EngineIOError as exc:
        _check_bad_request(exc, statuses=(400, 413))
        if exc.status == 413:
            assert len(body) > max_payload, (len(body), max_payload)
        chunked = (exc.status, exc.code, exc.message)
    if len(body) <= max_payload:
        assert chunked == whole, (chunked, whole)
    else:
        # Over the limit: 413, unless a bad packet was seen before the limit was.
        assert isinstance(whole, tuple)
        assert whole[0] == 413
        assert isinstance(chunked, tuple)
    if isinstance(whole, list):
        assert whole, "a body holds at least one packet"
        again = encode_payload(whole).encode()
        assert decode_payload(again, max_payload=len(again)) == whole
    return whole


# --- Engine.IO session ----------------------------------------------------------------------

_SESSION_PACKETS = [
    Packet(PacketType.PING, "probe"),
    Packet(PacketType.PONG),
    Packet(PacketType.PONG, "probe"),
    Packet(PacketType.UPGRADE),
    Packet(PacketType.NOOP),
    Packet(PacketType.CLOSE),
    Packet(PacketType.MESSAGE, "hi"),
    Packet(PacketType.MESSAGE, b"\x01"),
    Packet(PacketType.PING),
    Packet(PacketType.OPEN),
]


def _check_session(session: Session, now: float) -> None:
    """What holds of a session between any two calls."""
    if session.closed:
        assert session.next_deadline() == float("inf")
        assert not session.has_queued
        assert session.close_reason
        return
    # The heartbeat is always armed: a client that vanishes is always found out.
    assert (session.ping_due is None) != (session.pong_deadline is None), (
        session.ping_due,
        session.pong_deadline,
    )
    if session.state is State.UPGRADING:
        assert session.transport is Transport.POLLING
        assert session.upgrade_deadline is not None
    if session.transport is Transport.WEBSOCKET:
        assert session.upgrade_deadline is None
        assert session.state is State.OPEN


def _expect_closed_refusal(session: Session, call: str, now: float) -> None:
    error: EngineIOError | None = None
    try:
        if call == "receive":
            session.receive(Packet(PacketType.MESSAGE, "x"), now, via=session.transport)
        elif call == "poll":
            session.begin_poll()
        elif call == "post":
            session.check_post()
        else:
            session.begin_probe(now)
    except EngineIOError as exc:
        error = exc
    assert error is not None, f"{call} accepted on a closed session"
    assert error.code is EngineErrorCode.UNKNOWN_SID, error.code


def _receive(session: Session, rng: random.Random, now: float) -> EngineIOError | None:
    packet = rng.choice(_SESSION_PACKETS)
    if rng.random() < 0.2:
        packet = mutate.engine_packet(rng)
    via = rng.choice(list(Transport))
    transport = session.transport
    was_closed = session.closed
    error: EngineIOError | None = None
    try:
        incoming = session.receive(packet, now, via=via)
    except EngineIOError as exc:
        error = exc
    if error is not None:
        # Refused and closed; or a stray POST to an upgraded session (which the endpoint
        # refuses before it gets here), and the session goes on.
        stray = via is Transport.POLLING and transport is Transport.WEBSOCKET
        assert session.closed or stray, error.message
        return error
    assert isinstance(incoming, Incoming)
    assert (incoming is Incoming.CLOSE) == (session.closed and not was_closed)
    if incoming is Incoming.MESSAGE:
        assert packet.type is PacketType.MESSAGE
    return None


def _step(session: Session, rng: random.Random, now: float) -> tuple[float, EngineIOError | None]:
    """One random call; returns the time after it and the error it raised, if any."""
    op = rng.randrange(11)
    try:
        if op <= 2:
            return now, _receive(session, rng, now)
        if op == 10:
            # The I/O layer's fast path of a pong on the session's own transport.
            waiting = session.pong_deadline is not None
            moved = session.receive_pong(now)
            assert moved == (waiting and not session.closed), (moved, waiting)
        if op == 3:
            session.begin_probe(now)
        elif op == 4:
            session.begin_poll()
        elif op == 5:
            session.end_poll()
        elif op == 6:
            session.check_post()
        elif op == 7:
            now += rng.choice([0.0, 0.05, 0.3, 1.0, 30.0, rng.uniform(0, 50)])
            if rng.random() < 0.5 and session.next_deadline() < float("inf"):
                now = max(now, session.next_deadline())
            for packet in session.on_deadline(now):
                assert packet == Packet(PacketType.PING)
            # The timer never spins: what is due now has been done.
            assert session.next_deadline() > now, (session.next_deadline(), now)
        elif op == 8 and not session.closed:
            _queue(session, Outgoing.message_of(mutate.text(rng, 40)))
        elif op == 9:
            session.take()
    except EngineIOError as exc:
        return now, exc
    return now, None


def _queue(session: Session, message: Outgoing) -> None:
    overflowed = False
    try:
        session.queue(message)
    except OverflowError:
        overflowed = True
    if overflowed:
        assert session.closed
        assert session.close_reason == "slow consumer"


def engine_session(rng: random.Random, steps: int = 40) -> Session:
    """Drive a session with ``steps`` random calls, as any peer's requests could make the I/O
    layer call it; check after each what must hold.
    """
    options = SessionOptions(
        ping_interval=rng.choice([0.3, 25.0]),
        ping_timeout=rng.choice([0.2, 20.0]),
        upgrade_timeout=rng.choice([0.1, 10.0]),
        allow_upgrades=rng.random() < 0.8,
        max_buffered=rng.choice([64, 4_000_000]),
    )
    now = 1000.0
    session = Session("sid", rng.choice(list(Transport)), options, now=now)
    for _ in range(steps):
        was_closed = session.closed
        now, error = _step(session, rng, now)
        if error is not None:
            check_error(error)
            if was_closed:
                assert error.code is EngineErrorCode.UNKNOWN_SID, error.code
        assert not (was_closed and not session.closed), "a closed session opened again"
        _check_session(session, now)
    if session.closed:
        _expect_closed_refusal(session, rng.choice(["receive", "poll", "post", "probe"]), now)
    return session


# --- Socket.IO ------------------------------------------------------------------------------


def socketio_messages(messages: Sequence[str | bytes], max_attachments: int = 10) -> int:
    """Engine.IO messages of one session into a :class:`Decoder`.

    Returns:
        How many packets came out. Each encodes back to messages that decode to it again.
    """
    decoder = Decoder(max_attachments=max_attachments)
    count = 0
    for message in messages:
        try:
            packet = decoder.receive(message)
        except SocketIOError as exc:
            check_error(exc)
            try:
                decoder.receive("2[]")
            except LocalProtocolError:
                return count
            raise AssertionError("the decoder went on after the peer broke the protocol") from None
        if packet is not None:
            count += 1
            _echo(packet)
    return count


def _echo(packet: SioPacket) -> None:
    # What decodes can be sent back unchanged (a handler that echoes its arguments).
    wire = encode(packet)
    echo = Decoder(max_attachments=len(wire))
    result = None
    for item in wire:
        result = echo.receive(item)
    assert result == packet, (result, packet)
