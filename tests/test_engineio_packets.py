"""hub.engineio packets: the WebSocket and long-polling encodings, table-driven.

Every valid payload is also fed to :class:`PayloadDecoder` one byte at a time (in the manner of
h11's ``tests/test_io.py``), and every WebSocket frame is read back by wsproto as a client.
"""

from __future__ import annotations

import base64
import struct

import pytest
import wsproto.events as ws_events
from hypothesis import given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType

from hub.engineio import (
    SEPARATOR,
    Outgoing,
    Packet,
    PacketType,
    PayloadDecoder,
    decode_packet,
    decode_payload,
    encode_frame,
    encode_packet,
    encode_payload,
    encode_payload_item,
)
from hub.errors import EngineErrorCode, EngineIOError

MAX = 1_000_000

# (WebSocket message, packet): encode_packet(packet) == message, decode_packet(message) == packet.
WEBSOCKET: list[tuple[str | bytes, Packet]] = [
    ('0{"sid":"abc"}', Packet(PacketType.OPEN, '{"sid":"abc"}')),
    ("1", Packet(PacketType.CLOSE)),
    ("2", Packet(PacketType.PING)),
    ("2probe", Packet(PacketType.PING, "probe")),
    ("3", Packet(PacketType.PONG)),
    ("3probe", Packet(PacketType.PONG, "probe")),
    ("4", Packet(PacketType.MESSAGE)),
    ("4hello", Packet(PacketType.MESSAGE, "hello")),
    ("4héllo €𝄞", Packet(PacketType.MESSAGE, "héllo €𝄞")),
    ("44", Packet(PacketType.MESSAGE, "4")),
    ("4\x1e", Packet(PacketType.MESSAGE, "\x1e")),
    ("5", Packet(PacketType.UPGRADE)),
    ("6", Packet(PacketType.NOOP)),
    (b"\x01\x02\x03", Packet(PacketType.MESSAGE, b"\x01\x02\x03")),
    (b"", Packet(PacketType.MESSAGE, b"")),
    (b"4hello", Packet(PacketType.MESSAGE, b"4hello")),
]


@pytest.mark.parametrize(("message", "packet"), WEBSOCKET)
def test_websocket_encode(message: str | bytes, packet: Packet) -> None:
    assert encode_packet(packet) == message
    assert Outgoing(packet).message == message


@pytest.mark.parametrize(("message", "packet"), WEBSOCKET)
def test_websocket_decode(message: str | bytes, packet: Packet) -> None:
    decoded = decode_packet(message)
    assert decoded == packet
    assert decoded.binary is isinstance(message, bytes)


# (text message, fragment of the error message)
BAD_WEBSOCKET: list[tuple[str, str]] = [
    ("", "empty packet"),
    ("7", "unknown packet type '7'"),
    ("8hello", "unknown packet type '8'"),
    ("x", "unknown packet type 'x'"),
    ("b", "unknown packet type 'b'"),
    (" 4", "unknown packet type ' '"),
    ("é", "unknown packet type 'é'"),
]


@pytest.mark.parametrize(("message", "error"), BAD_WEBSOCKET)
def test_websocket_decode_malformed(message: str, error: str) -> None:
    with pytest.raises(EngineIOError) as info:
        decode_packet(message)
    assert info.value.code is EngineErrorCode.BAD_REQUEST
    assert info.value.status == 400
    assert error in info.value.message


# (polling body, packets): encode_payload(packets) == body and decoding body gives packets.
PAYLOADS: list[tuple[bytes, list[Packet]]] = [
    (b"4hello", [Packet(PacketType.MESSAGE, "hello")]),
    (b"4", [Packet(PacketType.MESSAGE)]),
    (b"2", [Packet(PacketType.PING)]),
    (b"3", [Packet(PacketType.PONG)]),
    (b"1", [Packet(PacketType.CLOSE)]),
    (b"6", [Packet(PacketType.NOOP)]),
    (b"5", [Packet(PacketType.UPGRADE)]),
    (b'0{"sid":"a"}', [Packet(PacketType.OPEN, '{"sid":"a"}')]),
    (
        b"4hello\x1e4world",
        [Packet(PacketType.MESSAGE, "hello"), Packet(PacketType.MESSAGE, "world")],
    ),
    (b"4\x1e4", [Packet(PacketType.MESSAGE), Packet(PacketType.MESSAGE)]),
    (b"bAQIDBA==", [Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")]),
    (b"b", [Packet(PacketType.MESSAGE, b"")]),
    (
        b"4hello\x1ebAQIDBA==\x1e3",
        [
            Packet(PacketType.MESSAGE, "hello"),
            Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04"),
            Packet(PacketType.PONG),
        ],
    ),
    # UTF-8 multi-byte text: 2, 3 and 4 bytes a character.
    ("4é€𝄞".encode(), [Packet(PacketType.MESSAGE, "é€𝄞")]),
    (
        "4€\x1e4𝄞x".encode(),
        [Packet(PacketType.MESSAGE, "€"), Packet(PacketType.MESSAGE, "𝄞x")],
    ),
    # A text message that happens to start with "b" stays text: "4" comes first.
    (b"4bAQID", [Packet(PacketType.MESSAGE, "bAQID")]),
]


@pytest.mark.parametrize(("body", "packets"), PAYLOADS)
def test_payload_encode(body: bytes, packets: list[Packet]) -> None:
    assert encode_payload(packets).encode("utf-8") == body
    assert SEPARATOR.join(Outgoing(p).polling_item for p in packets).encode() == body


@pytest.mark.parametrize(("body", "packets"), PAYLOADS)
def test_payload_decode_whole(body: bytes, packets: list[Packet]) -> None:
    assert decode_payload(body, max_payload=MAX) == packets


@pytest.mark.parametrize(("body", "packets"), PAYLOADS)
def test_payload_decode_one_byte_at_a_time(body: bytes, packets: list[Packet]) -> None:
    decoder = PayloadDecoder(max_payload=MAX)
    out: list[Packet] = []
    for i in range(len(body)):
        out += decoder.feed(body[i : i + 1])
    out += decoder.close()
    assert out == packets


@pytest.mark.parametrize(("body", "packets"), PAYLOADS)
def test_payload_packets_come_out_at_their_separator(body: bytes, packets: list[Packet]) -> None:
    # Each packet but the last is returned by the feed() that brings its separator.
    decoder = PayloadDecoder(max_payload=MAX)
    seen = 0
    for i in range(len(body)):
        seen += len(decoder.feed(body[i : i + 1]))
        assert seen == body[: i + 1].count(b"\x1e")
    assert len(decoder.close()) == 1


def test_payload_at_max_payload_is_accepted() -> None:
    body = b"4" + b"a" * 99
    assert decode_payload(body, max_payload=100) == [Packet(PacketType.MESSAGE, "a" * 99)]


# (body, max_payload, fragment of the error message, HTTP status)
BAD_PAYLOADS: list[tuple[bytes, int, str, int]] = [
    (b"", MAX, "empty payload", 400),
    (b"7", MAX, "unknown packet type '7'", 400),
    (b"x", MAX, "unknown packet type 'x'", 400),
    (b"4a\x1e7", MAX, "unknown packet type '7'", 400),
    (b"4a\x1e", MAX, "empty packet", 400),
    (b"\x1e4a", MAX, "empty packet", 400),
    (b"4a\x1e\x1e4b", MAX, "empty packet", 400),
    (b"bAQID!", MAX, "invalid base64", 400),
    (b"bAQI", MAX, "invalid base64", 400),
    (b"b====", MAX, "invalid base64", 400),
    (b"b AQID", MAX, "invalid base64", 400),
    (b"4\xff", MAX, "not valid UTF-8", 400),
    (b"4\xc3", MAX, "not valid UTF-8", 400),
    (b"4\xed\xa0\x80", MAX, "not valid UTF-8", 400),  # an encoded surrogate
    (b"4a\x1e4\x80", MAX, "not valid UTF-8", 400),
    (b"4" + b"a" * 100, 100, "payload over maxPayload", 413),
    (b"4a\x1e4" + b"a" * 100, 100, "payload over maxPayload", 413),
]


@pytest.mark.parametrize(("body", "max_payload", "error", "status"), BAD_PAYLOADS)
def test_payload_decode_malformed(body: bytes, max_payload: int, error: str, status: int) -> None:
    with pytest.raises(EngineIOError) as info:
        decode_payload(body, max_payload=max_payload)
    assert info.value.code is EngineErrorCode.BAD_REQUEST
    assert info.value.status == status
    assert error in info.value.message


@pytest.mark.parametrize(("body", "max_payload", "error", "status"), BAD_PAYLOADS)
def test_payload_decode_malformed_one_byte_at_a_time(
    body: bytes, max_payload: int, error: str, status: int
) -> None:
    decoder = PayloadDecoder(max_payload=max_payload)

    def feed_all() -> None:
        for i in range(len(body)):
            decoder.feed(body[i : i + 1])
        decoder.close()

    with pytest.raises(EngineIOError) as info:
        feed_all()
    assert info.value.code is EngineErrorCode.BAD_REQUEST
    assert info.value.status == status
    assert error in info.value.message


def test_payload_over_max_payload_fails_at_the_byte_that_crosses_it() -> None:
    decoder = PayloadDecoder(max_payload=3)
    assert decoder.feed(b"4ab") == []
    with pytest.raises(EngineIOError) as info:
        decoder.feed(b"c")
    assert info.value.status == 413


def test_payload_decoder_misuse_is_a_runtime_error() -> None:
    decoder = PayloadDecoder(max_payload=MAX)
    assert decoder.feed(b"4a") == []
    assert decoder.close() == [Packet(PacketType.MESSAGE, "a")]
    with pytest.raises(RuntimeError):
        decoder.feed(b"4b")
    with pytest.raises(RuntimeError):
        decoder.close()


def test_binary_payload_item_is_standard_padded_base64() -> None:
    data = bytes(range(256))
    item = encode_payload_item(Packet(PacketType.MESSAGE, data))
    assert item == "b" + base64.b64encode(data).decode("ascii")
    assert decode_payload(item.encode(), max_payload=MAX) == [Packet(PacketType.MESSAGE, data)]


# --- WebSocket frames (RFC 6455 section 5.2) ------------------------------------------------


def expected_header(opcode: int, length: int) -> bytes:
    # FIN=1, RSV=0, MASK=0 (RFC 6455 5.1: "A server MUST NOT mask any frames").
    if length <= 125:
        return bytes((0x80 | opcode, length))
    if length <= 0xFFFF:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big")


FRAME_LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]

EXPECTED_HEADERS: list[tuple[int, int, bytes]] = [
    (0x1, 0, b"\x81\x00"),
    (0x1, 125, b"\x81\x7d"),
    (0x1, 126, b"\x81\x7e\x00\x7e"),
    (0x1, 65535, b"\x81\x7e\xff\xff"),
    (0x1, 65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    (0x2, 0, b"\x82\x00"),
    (0x2, 125, b"\x82\x7d"),
    (0x2, 126, b"\x82\x7e\x00\x7e"),
    (0x2, 65535, b"\x82\x7e\xff\xff"),
    (0x2, 65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    (0x8, 2, b"\x88\x02"),
]


@pytest.mark.parametrize(("opcode", "length", "header"), EXPECTED_HEADERS)
def test_encode_frame_header_bytes(opcode: int, length: int, header: bytes) -> None:
    payload = b"\xab" * length
    assert encode_frame(opcode, payload) == header + payload


def client_read(frame_bytes: bytes) -> list[ws_events.Event]:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(frame_bytes)
    return list(client.events())


@pytest.mark.parametrize("length", FRAME_LENGTHS)
def test_outgoing_binary_frame(length: int) -> None:
    data = bytes(i % 251 for i in range(length))
    outgoing = Outgoing.message_of(data)
    assert outgoing.frame == expected_header(0x2, length) + data
    assert outgoing.frame is outgoing.frame  # encoded once
    (event,) = client_read(outgoing.frame)
    assert isinstance(event, ws_events.BytesMessage)
    assert event.data == data
    assert event.frame_finished
    assert event.message_finished


@pytest.mark.parametrize("length", FRAME_LENGTHS)
def test_outgoing_text_frame(length: int) -> None:
    # The frame payload is "4" + data, so data has length - 1 characters (at least one byte).
    length = max(length, 1)
    data = "x" * (length - 1)
    outgoing = Outgoing.message_of(data)
    assert outgoing.frame == expected_header(0x1, length) + b"4" + data.encode()
    (event,) = client_read(outgoing.frame)
    assert isinstance(event, ws_events.TextMessage)
    assert event.data == "4" + data
    assert event.message_finished


@pytest.mark.parametrize("packet", [p for _, p in WEBSOCKET])
def test_outgoing_frame_of_every_packet(packet: Packet) -> None:
    outgoing = Outgoing(packet)
    (event,) = client_read(outgoing.frame)
    assert isinstance(event, ws_events.BytesMessage if packet.binary else ws_events.TextMessage)
    assert isinstance(event, ws_events.Message)
    assert decode_packet(event.data) == packet


def test_outgoing_multibyte_text_frame_length_counts_bytes() -> None:
    outgoing = Outgoing.message_of("€" * 42)  # 1 + 126 bytes
    assert outgoing.frame[:4] == b"\x81\x7e" + struct.pack("!H", 127)
    assert len(outgoing) == len(outgoing.message) == 43  # characters, not bytes


def chunks_of(frames: list[bytes]) -> list[bytes]:
    """Frames cut one byte at a time, except the payload of large frames (kept whole, so that
    the test stays fast: the headers are where the lengths are)."""
    chunks: list[bytes] = []
    for frame in frames:
        head = 2 + {126: 2, 127: 8}.get(frame[1] & 0x7F, 0)
        chunks += [frame[i : i + 1] for i in range(head)]
        payload = frame[head:]
        if len(payload) > 1000:
            chunks.append(payload)
        else:
            chunks += [payload[i : i + 1] for i in range(len(payload))]
    return chunks


def test_frames_one_byte_at_a_time_to_a_client() -> None:
    # Frames of every header size, delivered to wsproto one byte at a time.
    packets = [Packet(PacketType.MESSAGE, "a" * n) for n in (0, 124, 125, 300, 65534, 65535)]
    packets += [Packet(PacketType.MESSAGE, b"\x00" * n) for n in (0, 125, 126, 70000)]
    frames = [Outgoing(p).frame for p in packets]
    client = Connection(ConnectionType.CLIENT)
    messages: list[str | bytes] = []
    parts: list[str | bytes] = []
    for chunk in chunks_of(frames):
        client.receive_data(chunk)
        for event in client.events():
            assert isinstance(event, ws_events.Message)
            parts.append(event.data)
            if event.message_finished:
                if isinstance(event, ws_events.TextMessage):
                    messages.append("".join(p for p in parts if isinstance(p, str)))
                else:
                    messages.append(b"".join(p for p in parts if isinstance(p, bytes)))
                parts = []
    assert [decode_packet(m) for m in messages] == packets


# --- property-based round trips -------------------------------------------------------------

# Text without the record separator (it cannot be carried in a polling payload) and without
# lone surrogates (not encodable as UTF-8).
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x1e"), max_size=40)
_packets = st.one_of(
    st.builds(Packet, st.sampled_from(list(PacketType)), _text),
    st.builds(Packet, st.just(PacketType.MESSAGE), st.binary(max_size=40)),
)


@given(st.lists(_packets, min_size=1, max_size=20))
def test_payload_round_trip(packets: list[Packet]) -> None:
    body = encode_payload(packets).encode("utf-8")
    assert decode_payload(body, max_payload=len(body)) == packets


@given(st.lists(_packets, min_size=1, max_size=8), st.data())
def test_payload_round_trip_in_random_chunks(packets: list[Packet], data: st.DataObject) -> None:
    body = encode_payload(packets).encode("utf-8")
    decoder = PayloadDecoder(max_payload=len(body))
    out: list[Packet] = []
    rest = body
    while rest:
        size = data.draw(st.integers(min_value=1, max_value=len(rest)))
        out += decoder.feed(rest[:size])
        rest = rest[size:]
    out += decoder.close()
    assert out == packets


@given(st.one_of(_packets, st.builds(Packet, st.sampled_from(list(PacketType)), st.text())))
def test_websocket_round_trip(packet: Packet) -> None:
    assert decode_packet(encode_packet(packet)) == packet


@given(st.binary(max_size=70000))
def test_binary_frame_round_trip_through_wsproto(data: bytes) -> None:
    (event,) = client_read(Outgoing.message_of(data).frame)
    assert isinstance(event, ws_events.BytesMessage)
    assert event.data == data


@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=300))
def test_text_frame_round_trip_through_wsproto(data: str) -> None:
    (event,) = client_read(Outgoing.message_of(data).frame)
    assert isinstance(event, ws_events.TextMessage)
    assert decode_packet(event.data) == Packet(PacketType.MESSAGE, data)


@given(st.binary(min_size=1, max_size=300))
def test_random_bytes_decode_or_raise_engineio_error(body: bytes) -> None:
    # Whatever the peer sends, the decoder gives packets or a bad request, nothing else.
    try:
        decode_payload(body, max_payload=MAX)
    except EngineIOError as exc:
        error = exc
    else:
        return
    assert error.code is EngineErrorCode.BAD_REQUEST
    assert error.status == 400
