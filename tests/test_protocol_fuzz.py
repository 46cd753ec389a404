"""hub.protocol under hypothesis: round trips, and whatever a peer may send."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.errors import SocketIOError
from hub.protocol import (
    Ack,
    Connect,
    ConnectError,
    Decoder,
    Disconnect,
    Event,
    Packet,
    encode,
)

RESERVED = {
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
}

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
keys = st.text(max_size=6).filter(lambda key: key != "_placeholder")


def json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=12,
    )


args_with_binary = st.lists(json_values(json_leaves | st.binary(max_size=8)), max_size=4).map(tuple)
namespaces = st.just("/") | st.text(max_size=8).filter(lambda s: "," not in s).map(
    lambda s: "/" + s
)
ack_ids = st.integers(min_value=0, max_value=2**53 - 1)
event_names = st.text(max_size=10).filter(lambda name: name not in RESERVED)

events = st.builds(Event, event_names, args_with_binary, namespaces, st.none() | ack_ids)
acks = st.builds(Ack, args_with_binary, ack_ids, namespaces)
connects = st.builds(
    Connect, namespaces, st.none() | st.dictionaries(keys, json_values(json_leaves), max_size=4)
)
disconnects = st.builds(Disconnect, namespaces)
connect_errors = st.builds(
    ConnectError,
    st.text(max_size=8) | st.dictionaries(keys, json_values(json_leaves), max_size=4),
    namespaces,
)
packets = events | acks | connects | disconnects | connect_errors


@given(packets)
def test_round_trip(packet: Packet) -> None:
    wire = encode(packet)
    # encode() sets no limit; the decoder's default of 10 attachments is the peer's business.
    decoder = Decoder(max_attachments=len(wire))
    for message in wire[:-1]:
        assert decoder.receive(message) is None
    assert decoder.receive(wire[-1]) == packet


@given(st.binary(min_size=0, max_size=4).map(lambda data: Event("x", (data,))))
def test_binary_first_message_is_text(packet: Event) -> None:
    first, *attachments = encode(packet)
    assert isinstance(first, str)
    assert first.startswith("51-")
    assert attachments == [packet.args[0]]


# Pieces of real packets, so that random text gets past the first character.
ATOMS = [
    *'0123456789-/,[]{}": x',
    "/admin,",
    "/admin",
    "12",
    "9007199254740991",
    "9007199254740992",
    '"a"',
    '"connect"',
    "null",
    "true",
    "1.5",
    "1e400",
    "NaN",
    '"\\ud800"',
    '{"_placeholder":true,"num":0}',
    '{"_placeholder":true,"num":1}',
    '{"_placeholder":true,"num":0.0}',
    '["a",{"_placeholder":true,"num":0}]',
]
structured_text = st.lists(st.sampled_from(ATOMS), min_size=1, max_size=8).map("".join)
messages = st.lists(structured_text | st.text(max_size=20) | st.binary(max_size=4), max_size=6)


@settings(max_examples=500)
@given(messages)
def test_anything_a_peer_sends(stream: list[str | bytes]) -> None:
    """A packet, None, or SocketIOError; and whatever decodes, we can send back unchanged."""
    decoder = Decoder()
    for message in stream:
        error: SocketIOError | None = None
        try:
            packet = decoder.receive(message)
        except SocketIOError as exc:
            error = exc
        if error is not None:
            assert error.message
            assert "\n" not in error.message
            return
        if packet is not None:
            wire = encode(packet)
            echo = Decoder(max_attachments=len(wire))
            for item in wire:
                result = echo.receive(item)
            assert result == packet
