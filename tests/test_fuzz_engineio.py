"""Engine.IO decoders under fuzzing: packets, polling payloads fed in random chunkings, and the
session state machine fed arbitrary call sequences (``tests/fuzz``; ``HUB_FUZZ_PROFILE=long``
for more examples).
"""

from __future__ import annotations

import random

from fuzz import campaigns, examples, targets
from hypothesis import given
from hypothesis import strategies as st

from hub.engineio import (
    Incoming,
    Packet,
    PacketType,
    Session,
    SessionOptions,
    State,
    Transport,
    encode_packet,
    encode_payload,
)

# The mutation campaigns draw hundreds of choices per input: hypothesis draws a seed for them
# (a failure prints it), which is an order of magnitude faster than drawing each choice.
randoms = st.integers(0, 2**64).map(random.Random)

# Text a polling payload can carry: no record separator, no lone surrogate.
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x1e"), max_size=30)
packets = st.one_of(
    st.builds(Packet, st.sampled_from(list(PacketType)), _text),
    st.builds(Packet, st.just(PacketType.MESSAGE), st.binary(max_size=30)),
)


# --- packets --------------------------------------------------------------------------------


@examples(200)
@given(packets)
def test_packet_round_trip(packet: Packet) -> None:
    assert targets.engine_packet(encode_packet(packet)) == packet


@examples(200)
@given(st.text(max_size=40) | st.binary(max_size=40))
def test_any_message_is_a_packet_or_a_bad_request(message: str | bytes) -> None:
    targets.engine_packet(message)


@examples(200)
@given(randoms)
def test_mutated_packets(rng: random.Random) -> None:
    campaigns.engineio_packet(rng)


# --- payloads -------------------------------------------------------------------------------


@examples(150)
@given(st.lists(packets, min_size=1, max_size=8), st.lists(st.integers(0, 400), max_size=6))
def test_payload_round_trip_in_any_chunking(packets: list[Packet], cuts: list[int]) -> None:
    body = encode_payload(packets).encode()
    assert targets.engine_payload(body, cuts, max_payload=len(body)) == packets


@examples(150)
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=6), st.integers(1, 300))
def test_any_body_in_any_chunking_gives_one_outcome(
    body: bytes, cuts: list[int], max_payload: int
) -> None:
    # Packets or the same 400 whole and chunked; 413 exactly when over max_payload.
    targets.engine_payload(body, cuts, max_payload)


@examples(250)
@given(randoms)
def test_mutated_payloads(rng: random.Random) -> None:
    campaigns.engineio_payload(rng)


def test_payload_one_byte_at_a_time() -> None:
    body = "4é€𝄞\x1ebAQID\x1e2probe\x1e6".encode()
    targets.engine_payload(body, list(range(len(body))), max_payload=len(body))


# --- the session state machine --------------------------------------------------------------


@examples(200)
@given(randoms)
def test_session_under_any_call_sequence(rng: random.Random) -> None:
    # Only EngineIOError, always one short line; closed stays closed and refuses everything
    # as an unknown sid; the heartbeat is always armed while open; the timer never spins.
    campaigns.engineio_session(rng)


def transport_of(session: Session) -> Transport:
    """The session's transport, read through a call so that mypy does not narrow it."""
    return session.transport


INTERVAL = 25.0
TIMEOUT = 20.0


@examples(100)
@given(
    st.sampled_from(list(Transport)),
    st.lists(
        st.one_of(
            st.tuples(st.just("message"), _text | st.binary(max_size=8)),
            st.tuples(st.just("wait"), st.floats(0.0, INTERVAL + TIMEOUT - 1.0)),
            st.tuples(st.just("noop"), st.none()),
            st.tuples(st.just("upgrade"), st.none()),
        ),
        max_size=30,
    ),
)
def test_a_well_behaved_client_keeps_its_session(
    transport: Transport, actions: list[tuple[str, object]]
) -> None:
    """Valid input, end to end: a client that answers every ping in time, sends messages and
    noops, and upgrades once, is never refused and never closed; each message comes out."""
    options = SessionOptions(ping_interval=INTERVAL, ping_timeout=TIMEOUT, upgrade_timeout=10.0)
    now = 0.0
    session = Session("sid", transport, options, now=now)
    delivered = 0
    for action, value in actions:
        via = session.transport
        if action == "message":
            assert isinstance(value, str | bytes)
            packet = Packet(PacketType.MESSAGE, value)
            assert session.receive(packet, now, via=via) is Incoming.MESSAGE
            delivered += 1
        elif action == "noop":
            assert session.receive(Packet(PacketType.NOOP), now, via=via) is Incoming.NOOP
        elif action == "upgrade" and session.transport is Transport.POLLING:
            session.begin_probe(now)
            ws = Transport.WEBSOCKET
            assert session.receive(Packet(PacketType.PING, "probe"), now, via=ws) is Incoming.PROBE
            assert session.receive(Packet(PacketType.UPGRADE), now, via=ws) is Incoming.UPGRADE
            assert transport_of(session) is Transport.WEBSOCKET
        elif action == "wait":
            assert isinstance(value, float)
            # Time passes in steps no longer than the pong deadline allows; each ping is
            # answered at once, as a live client does.
            end = now + value
            while now < end:
                now = min(end, session.next_deadline())
                for ping in session.on_deadline(now):
                    assert ping == Packet(PacketType.PING)
                    pong = Packet(PacketType.PONG)
                    assert session.receive(pong, now, via=session.transport) is Incoming.PONG
        assert session.state is State.OPEN, session.close_reason
    assert delivered == sum(1 for action, _ in actions if action == "message")
