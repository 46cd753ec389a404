"""Socket.IO packets under fuzzing: round trips of valid packets (binary attachments included),
and whatever a peer may send, as text and as mutated packets (``tests/fuzz``;
``HUB_FUZZ_PROFILE=long`` for more examples).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Any

import pytest
from fuzz import campaigns, examples, targets
from hypothesis import given
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
from hub.protocol.packets import MAX_DEPTH, RESERVED_EVENTS

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
event_names = st.text(max_size=10).filter(lambda name: name not in RESERVED_EVENTS)

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


@examples(100)
@given(packets)
def test_round_trip(packet: Packet) -> None:
    wire = encode(packet)
    # encode() sets no limit; the decoder's default of 10 attachments is the peer's business.
    decoder = Decoder(max_attachments=len(wire))
    for message in wire[:-1]:
        assert decoder.receive(message) is None
    assert decoder.receive(wire[-1]) == packet


@examples(50)
@given(st.lists(packets, min_size=1, max_size=4))
def test_packets_in_a_row_round_trip(sent: list[Packet]) -> None:
    # One decoder for a session: each packet's attachments follow it, then the next packet.
    messages = [message for packet in sent for message in encode(packet)]
    assert targets.socketio_messages(messages, max_attachments=len(messages)) == len(sent)


@examples(50)
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


@examples(200)
@given(messages)
def test_anything_a_peer_sends(stream: list[str | bytes]) -> None:
    """A packet, None, or SocketIOError (one short line, and the decoder is done); whatever
    decodes, we can send back unchanged."""
    targets.socketio_messages(stream)


@examples(200)
@given(st.integers(0, 2**64).map(random.Random))
def test_mutated_packets(rng: random.Random) -> None:
    # Valid packets (binary ones too) with a message mutated, inserted, dropped or moved.
    campaigns.socketio_packet(rng)


# --- nesting: what decodes must encode again, from any stack ----------------------------------


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _at_stack_depth(frames: int, call: Callable[[], Any]) -> Any:
    if frames == 0:
        return call()
    return _at_stack_depth(frames - 1, call)


def test_a_payload_at_the_depth_limit_decodes_and_encodes_from_a_deep_stack() -> None:
    # The event's own array is the first level.
    packet = Decoder().receive('2["a",' + _nested(MAX_DEPTH - 1) + "]")
    assert isinstance(packet, Event)
    frames = sys.getrecursionlimit() - MAX_DEPTH - 200
    wire = _at_stack_depth(frames, lambda: encode(packet))
    assert wire == ['2["a",' + _nested(MAX_DEPTH - 1) + "]"]


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 50, 900, 970, 990])
def test_a_payload_over_the_depth_limit_is_refused(depth: int) -> None:
    # Regression: up to ~990 levels decoded, and an ack echoing them failed to encode in the
    # server ("cannot encode the ack": an error in the log, no answer to the peer).
    with pytest.raises(SocketIOError, match="nested too deeply"):
        Decoder().receive('2["a",' + _nested(depth) + "]")


def test_the_depth_limit_counts_objects_too() -> None:
    deep = '{"a":' * (MAX_DEPTH - 1) + "1" + "}" * (MAX_DEPTH - 1)
    assert Decoder().receive(f'2["a",{deep}]') is not None
    with pytest.raises(SocketIOError, match="nested too deeply"):
        Decoder().receive(f'2["a",{{"a":{deep}}}]')
    # Brackets inside strings are not levels.
    assert Decoder().receive('2["' + "[" * 500 + '"]') == Event("[" * 500)


def test_an_error_that_names_the_peers_keys_stays_one_short_line() -> None:
    # Regression: the unexpected keys of a placeholder were quoted whole (5,000 characters of
    # the peer's, in an error that is logged).
    placeholder = '{"_placeholder":true,"num":0,"' + "k" * 5000 + '\\n":1,"a\\u2028":2}'
    with pytest.raises(SocketIOError) as error:
        Decoder().receive(f'51-["a",{placeholder}]')
    targets.check_error(error.value)
    assert "unexpected keys: ['a\\u2028', 'kkkkkkkkkkkkkkkkkkkkkkkk…']" in error.value.message
