"""hub.engineio.Session: the sans-I/O state machine, driven with explicit ``now`` values."""

from __future__ import annotations

import json

import pytest

from hub.engineio import (
    Incoming,
    Outgoing,
    Packet,
    PacketType,
    Session,
    SessionOptions,
    State,
    Transport,
)
from hub.errors import EngineErrorCode, EngineIOError, LocalProtocolError

T0 = 1000.0
OPTIONS = SessionOptions(ping_interval=25.0, ping_timeout=20.0, upgrade_timeout=10.0)

PING = Packet(PacketType.PING)
PONG = Packet(PacketType.PONG)
PROBE = Packet(PacketType.PING, "probe")
UPGRADE = Packet(PacketType.UPGRADE)
NOOP = Packet(PacketType.NOOP)
CLOSE = Packet(PacketType.CLOSE)
MESSAGE = Packet(PacketType.MESSAGE, "hello")
POLLING = Transport.POLLING
WEBSOCKET = Transport.WEBSOCKET


def polling(options: SessionOptions = OPTIONS) -> Session:
    return Session("sid1", POLLING, options, now=T0)


def websocket(options: SessionOptions = OPTIONS) -> Session:
    return Session("sid1", WEBSOCKET, options, now=T0)


def probing(now: float = T0 + 1) -> Session:
    """A polling session whose WebSocket has sent ``2probe``."""
    session = polling()
    session.begin_probe(now)
    assert session.receive(PROBE, now, via=WEBSOCKET) is Incoming.PROBE
    assert state(session) is State.UPGRADING
    return session


def state(session: Session) -> State:
    """The session's state, read through a call so that mypy does not narrow it."""
    return session.state


def bad_request(error: pytest.ExceptionInfo[EngineIOError], fragment: str) -> None:
    assert error.value.code is EngineErrorCode.BAD_REQUEST
    assert error.value.status == 400
    assert fragment in error.value.message


# --- handshake --------------------------------------------------------------------------------

OPEN_CASES: list[tuple[Transport, SessionOptions, dict[str, object]]] = [
    (
        POLLING,
        SessionOptions(),
        {
            "sid": "sid1",
            "upgrades": ["websocket"],
            "pingInterval": 25000,
            "pingTimeout": 20000,
            "maxPayload": 1000000,
        },
    ),
    (
        WEBSOCKET,
        SessionOptions(),
        {
            "sid": "sid1",
            "upgrades": [],
            "pingInterval": 25000,
            "pingTimeout": 20000,
            "maxPayload": 1000000,
        },
    ),
    (
        POLLING,
        SessionOptions(ping_interval=0.3, ping_timeout=0.2, max_payload=1000),
        {
            "sid": "sid1",
            "upgrades": ["websocket"],
            "pingInterval": 300,
            "pingTimeout": 200,
            "maxPayload": 1000,
        },
    ),
    (
        POLLING,
        SessionOptions(allow_upgrades=False),
        {
            "sid": "sid1",
            "upgrades": [],
            "pingInterval": 25000,
            "pingTimeout": 20000,
            "maxPayload": 1000000,
        },
    ),
]


@pytest.mark.parametrize(("transport", "options", "fields"), OPEN_CASES)
def test_open_packet(
    transport: Transport, options: SessionOptions, fields: dict[str, object]
) -> None:
    session = Session("sid1", transport, options, now=T0)
    packet = session.open_packet()
    assert packet.type is PacketType.OPEN
    assert isinstance(packet.data, str)
    # Exactly these keys, in this order, compact JSON (frames are compared as strings).
    assert packet.data == json.dumps(fields, separators=(",", ":"))
    assert state(session) is State.OPEN
    assert not session.closed


# --- heartbeat --------------------------------------------------------------------------------


def test_first_ping_is_due_one_interval_after_open() -> None:
    session = polling()
    assert session.next_deadline() == T0 + 25
    assert session.on_deadline(T0 + 24.999) == []
    assert session.on_deadline(T0 + 25) == [PING]
    assert session.pong_deadline == T0 + 45
    assert session.next_deadline() == T0 + 45
    # Sent once: no second ping while the first waits for its pong.
    assert session.on_deadline(T0 + 30) == []


def test_pong_deadline_closes_with_ping_timeout() -> None:
    session = websocket()
    assert session.on_deadline(T0 + 25) == [PING]
    assert session.on_deadline(T0 + 44.999) == []
    assert not session.closed
    assert session.on_deadline(T0 + 45) == []
    assert session.closed
    assert session.close_reason == "ping timeout"
    assert session.next_deadline() == float("inf")
    assert session.on_deadline(T0 + 100) == []


def test_late_wakeup_counts_the_timeout_from_the_ping() -> None:
    # A ping sent late (the I/O layer woke up late) gives the client the whole pingTimeout.
    session = polling()
    assert session.on_deadline(T0 + 30) == [PING]
    assert session.pong_deadline == T0 + 50


def test_pong_moves_the_next_ping() -> None:
    session = polling()
    assert session.on_deadline(T0 + 25) == [PING]
    assert session.receive(PONG, T0 + 26, via=POLLING) is Incoming.PONG
    assert session.pong_deadline is None
    assert session.next_deadline() == T0 + 51
    assert session.on_deadline(T0 + 45) == []  # the old pong deadline is gone
    assert not session.closed
    assert session.on_deadline(T0 + 51) == [PING]
    assert session.next_deadline() == T0 + 71


def test_unsolicited_pong_changes_nothing() -> None:
    session = polling()
    assert session.receive(PONG, T0 + 5, via=POLLING) is Incoming.PONG
    assert session.next_deadline() == T0 + 25


def test_pong_over_websocket_session() -> None:
    session = websocket()
    session.on_deadline(T0 + 25)
    assert session.receive(PONG, T0 + 30, via=WEBSOCKET) is Incoming.PONG
    assert session.next_deadline() == T0 + 55


# --- receiving --------------------------------------------------------------------------------

# (transport, packet): what the client may send on an established session.
ALLOWED: list[tuple[Transport, Packet, Incoming]] = [
    (POLLING, MESSAGE, Incoming.MESSAGE),
    (POLLING, Packet(PacketType.MESSAGE, b"\x00"), Incoming.MESSAGE),
    (POLLING, NOOP, Incoming.NOOP),
    (POLLING, PONG, Incoming.PONG),
    (WEBSOCKET, MESSAGE, Incoming.MESSAGE),
    (WEBSOCKET, NOOP, Incoming.NOOP),
    (WEBSOCKET, PONG, Incoming.PONG),
]


@pytest.mark.parametrize(("transport", "packet", "incoming"), ALLOWED)
def test_receive_allowed(transport: Transport, packet: Packet, incoming: Incoming) -> None:
    session = Session("s", transport, OPTIONS, now=T0)
    assert session.receive(packet, T0 + 1, via=transport) is incoming
    assert state(session) is State.OPEN


# (transport, packet, error fragment): the client may not send these; the session closes.
FORBIDDEN: list[tuple[Transport, Packet, str]] = [
    (POLLING, PING, "unexpected ping packet from client"),
    (POLLING, PROBE, "unexpected ping packet from client"),
    (POLLING, Packet(PacketType.OPEN, "{}"), "unexpected open packet from client"),
    (POLLING, UPGRADE, "unexpected upgrade packet from client"),
    (WEBSOCKET, PING, "unexpected ping packet from client"),
    (WEBSOCKET, PROBE, "unexpected ping packet from client"),
    (WEBSOCKET, Packet(PacketType.OPEN), "unexpected open packet from client"),
    (WEBSOCKET, UPGRADE, "unexpected upgrade packet from client"),
]


@pytest.mark.parametrize(("transport", "packet", "error"), FORBIDDEN)
def test_receive_forbidden_closes(transport: Transport, packet: Packet, error: str) -> None:
    session = Session("s", transport, OPTIONS, now=T0)
    with pytest.raises(EngineIOError) as info:
        session.receive(packet, T0 + 1, via=transport)
    bad_request(info, error)
    assert session.closed
    assert session.close_reason == "parse error"


def test_close_packet_closes() -> None:
    session = polling()
    assert session.receive(CLOSE, T0 + 1, via=POLLING) is Incoming.CLOSE
    assert session.closed
    assert session.close_reason == "transport close"
    assert session.next_deadline() == float("inf")


@pytest.mark.parametrize("packet", [MESSAGE, PONG, CLOSE, NOOP])
def test_receive_on_closed_session_is_unknown_sid(packet: Packet) -> None:
    session = polling()
    session.close("forced close")
    with pytest.raises(EngineIOError) as info:
        session.receive(packet, T0 + 1, via=POLLING)
    assert info.value.code is EngineErrorCode.UNKNOWN_SID
    assert session.close_reason == "forced close"


def test_close_is_idempotent_and_keeps_the_first_reason() -> None:
    session = polling()
    session.queue(Outgoing.message_of("x"))
    assert session.close("first") is True
    assert session.close("second") is False
    assert session.close_reason == "first"
    assert session.take() == []
    assert not session.has_queued


def test_websocket_session_refuses_polling_packets() -> None:
    session = websocket()
    with pytest.raises(EngineIOError) as info:
        session.receive(MESSAGE, T0 + 1, via=POLLING)
    bad_request(info, "wrong transport")


# --- upgrade ----------------------------------------------------------------------------------


def test_upgrade_transitions() -> None:
    session = polling()
    session.begin_probe(T0 + 1)
    assert session.upgrade_deadline == T0 + 11
    assert session.next_deadline() == T0 + 11
    assert state(session) is State.OPEN
    assert session.receive(PROBE, T0 + 2, via=WEBSOCKET) is Incoming.PROBE
    assert state(session) is State.UPGRADING
    assert session.transport is POLLING
    # Polling still carries the session while the probe is under way.
    assert session.receive(MESSAGE, T0 + 3, via=POLLING) is Incoming.MESSAGE
    assert session.receive(NOOP, T0 + 3, via=WEBSOCKET) is Incoming.NOOP
    assert session.receive(UPGRADE, T0 + 4, via=WEBSOCKET) is Incoming.UPGRADE
    assert state(session) is State.OPEN
    assert session.transport is WEBSOCKET
    assert session.upgrade_deadline is None
    assert session.next_deadline() == T0 + 25
    assert session.receive(MESSAGE, T0 + 5, via=WEBSOCKET) is Incoming.MESSAGE


def test_queued_packets_survive_the_upgrade() -> None:
    session = probing()
    session.queue(Outgoing.message_of("a"))
    session.queue(Outgoing.message_of("b"))
    session.receive(UPGRADE, T0 + 2, via=WEBSOCKET)
    assert [item.message for item in session.take()] == ["4a", "4b"]


def test_after_upgrade_polling_is_refused() -> None:
    session = probing()
    session.receive(UPGRADE, T0 + 2, via=WEBSOCKET)
    with pytest.raises(EngineIOError) as info:
        session.begin_poll()
    bad_request(info, "not on polling")
    with pytest.raises(EngineIOError) as info:
        session.check_post()
    bad_request(info, "not on polling")
    with pytest.raises(EngineIOError):
        session.receive(MESSAGE, T0 + 3, via=POLLING)


def test_probe_on_websocket_session_is_refused() -> None:
    session = websocket()
    with pytest.raises(EngineIOError) as info:
        session.begin_probe(T0 + 1)
    bad_request(info, "already upgraded or upgrading")
    assert session.upgrade_deadline is None


def test_probe_after_upgrade_is_refused() -> None:
    session = probing()
    session.receive(UPGRADE, T0 + 2, via=WEBSOCKET)
    with pytest.raises(EngineIOError) as info:
        session.begin_probe(T0 + 3)
    bad_request(info, "already upgraded or upgrading")


def test_second_probe_while_upgrading_is_refused() -> None:
    session = probing()
    with pytest.raises(EngineIOError) as info:
        session.begin_probe(T0 + 2)
    bad_request(info, "already upgraded or upgrading")
    assert state(session) is State.UPGRADING


def test_one_probe_at_a_time() -> None:
    # A second WebSocket may not start probing while the first has not finished or timed out.
    session = polling()
    session.begin_probe(T0 + 1)
    with pytest.raises(EngineIOError) as info:
        session.begin_probe(T0 + 2)
    bad_request(info, "already upgraded or upgrading")
    assert session.upgrade_deadline == T0 + 11
    assert not session.closed


def test_probe_when_upgrades_are_disabled() -> None:
    session = polling(SessionOptions(allow_upgrades=False))
    with pytest.raises(EngineIOError) as info:
        session.begin_probe(T0 + 1)
    bad_request(info, "upgrades are disabled")


def test_probe_on_closed_session_is_unknown_sid() -> None:
    session = polling()
    session.close("x")
    with pytest.raises(EngineIOError) as info:
        session.begin_probe(T0 + 1)
    assert info.value.code is EngineErrorCode.UNKNOWN_SID


# (packets sent on the probing WebSocket, with begin_probe first or not, error fragment)
BAD_UPGRADES: list[tuple[bool, list[Packet], str]] = [
    (True, [UPGRADE], "unexpected upgrade packet during upgrade"),  # upgrade without probe
    (False, [PROBE], "unexpected probe"),  # probe without begin_probe
    (True, [MESSAGE], "unexpected message packet during upgrade"),
    (True, [PROBE, MESSAGE], "unexpected message packet during upgrade"),
    (True, [PROBE, PONG], "unexpected pong packet during upgrade"),
    (True, [PROBE, PROBE], "unexpected probe"),
    (True, [PING], "unexpected ping packet during upgrade"),
    (True, [CLOSE], "unexpected close packet during upgrade"),
    (True, [Packet(PacketType.PING, "probe2")], "unexpected ping packet during upgrade"),
]


@pytest.mark.parametrize(("begin", "packets", "error"), BAD_UPGRADES)
def test_bad_upgrade_closes(begin: bool, packets: list[Packet], error: str) -> None:
    session = polling()
    if begin:
        session.begin_probe(T0 + 1)
    *good, bad = packets
    for packet in good:
        session.receive(packet, T0 + 2, via=WEBSOCKET)
    with pytest.raises(EngineIOError) as info:
        session.receive(bad, T0 + 2, via=WEBSOCKET)
    bad_request(info, error)
    assert session.closed
    assert session.close_reason == "parse error"


def test_upgrade_timeout_reverts_to_open() -> None:
    session = probing(now=T0 + 1)
    assert session.next_deadline() == T0 + 11
    assert session.on_deadline(T0 + 10.999) == []
    assert state(session) is State.UPGRADING
    assert session.on_deadline(T0 + 11) == []
    assert state(session) is State.OPEN
    assert session.transport is POLLING
    assert session.upgrade_deadline is None
    assert not session.closed
    # Polling goes on, and the abandoned WebSocket may not finish the upgrade any more.
    session.begin_poll()
    session.end_poll()
    with pytest.raises(EngineIOError):
        session.receive(UPGRADE, T0 + 12, via=WEBSOCKET)


def test_upgrade_timeout_without_probe_packet() -> None:
    session = polling()
    session.begin_probe(T0 + 1)
    assert session.on_deadline(T0 + 11) == []
    assert state(session) is State.OPEN
    assert session.upgrade_deadline is None
    # A new WebSocket may try again.
    session.begin_probe(T0 + 12)
    assert session.receive(PROBE, T0 + 12, via=WEBSOCKET) is Incoming.PROBE


def test_ping_and_upgrade_deadline_in_one_wakeup() -> None:
    session = polling()
    session.begin_probe(T0 + 20)  # upgrade deadline T0 + 30, ping due T0 + 25
    assert session.next_deadline() == T0 + 25
    assert session.on_deadline(T0 + 31) == [PING]
    assert session.upgrade_deadline is None
    assert session.pong_deadline == T0 + 51


def test_pong_deadline_during_upgrade_closes() -> None:
    session = probing(now=T0 + 24)
    assert session.on_deadline(T0 + 25) == [PING]
    assert session.on_deadline(T0 + 45) == []
    assert session.closed
    assert session.close_reason == "ping timeout"


# --- long-polling -----------------------------------------------------------------------------


def test_one_get_at_a_time() -> None:
    session = polling()
    session.begin_poll()
    assert session.polling_waiting
    session.end_poll()
    assert not session.polling_waiting
    session.begin_poll()
    session.end_poll()


def test_duplicate_get_closes_the_session() -> None:
    session = polling()
    session.begin_poll()
    with pytest.raises(EngineIOError) as info:
        session.begin_poll()
    bad_request(info, "overlapping GET")
    assert session.closed
    assert session.close_reason == "transport error"
    with pytest.raises(EngineIOError) as info:
        session.begin_poll()
    assert info.value.code is EngineErrorCode.UNKNOWN_SID


def test_post_checks() -> None:
    session = polling()
    session.check_post()
    session.close("x")
    with pytest.raises(EngineIOError) as info:
        session.check_post()
    assert info.value.code is EngineErrorCode.UNKNOWN_SID


def test_queue_and_take() -> None:
    session = polling()
    assert not session.has_queued
    first, second = Outgoing.message_of("a"), Outgoing.message_of(b"\x01")
    session.queue(first)
    session.queue(second)
    assert session.has_queued
    assert session.take() == [first, second]
    assert not session.has_queued
    assert session.take() == []


def test_queue_bound_is_a_slow_consumer() -> None:
    session = polling(SessionOptions(max_buffered=10))
    session.queue(Outgoing.message_of("x" * 4))  # 5 bytes
    session.queue(Outgoing.message_of("y" * 4))  # 10 bytes: at the bound, allowed
    with pytest.raises(OverflowError):
        session.queue(Outgoing.message_of(""))  # 11 bytes
    assert session.closed
    assert session.close_reason == "slow consumer"
    assert session.take() == []


def test_take_resets_the_bound() -> None:
    session = polling(SessionOptions(max_buffered=10))
    for _ in range(5):
        session.queue(Outgoing.message_of("x" * 9))
        session.take()
    assert not session.closed


def test_queue_on_closed_session_is_our_bug() -> None:
    session = polling()
    session.close("x")
    with pytest.raises(LocalProtocolError):
        session.queue(Outgoing.message_of("a"))
