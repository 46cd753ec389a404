"""Engine.IO v4 packets and payloads.

From the protocol (socketio/engine.io-protocol, "Protocol"):

    An Engine.IO packet consists of:
    - the packet type
    - the packet payload
    | Type    | ID | Usage                                            |
    | open    | 0  | Used during the handshake.                       |
    | close   | 1  | Used to indicate that a transport can be closed. |
    | ping    | 2  | Used in the heartbeat mechanism.                 |
    | pong    | 3  | Used in the heartbeat mechanism.                 |
    | message | 4  | Used to send a payload to the other side.        |
    | upgrade | 5  | Used during the upgrade process.                 |
    | noop    | 6  | Used during the upgrade process.                 |

Over WebSocket each packet is one frame: a text frame ``<type><data>``, or a binary frame holding
the raw bytes of a binary message (only ``message`` packets are ever binary). Over HTTP
long-polling several packets travel in one body, the payload:

    The packets are separated by the record separator character: \\x1e. Binary payloads MUST be
    base64-encoded and prefixed with a ``b`` character.

Decoding never trusts the peer: anything that is not a packet raises :class:`EngineIOError`
with code 3 (bad request), which ends that session only.
"""

from __future__ import annotations

import base64
import binascii
import enum

import attrs

from hub.errors import EngineErrorCode, EngineIOError

__all__ = [
    "SEPARATOR",
    "Packet",
    "PacketType",
    "PayloadDecoder",
    "decode_packet",
    "decode_payload",
    "encode_packet",
    "encode_payload",
    "encode_payload_item",
]

SEPARATOR = "\x1e"
_SEPARATOR_BYTE = 0x1E


class PacketType(enum.IntEnum):
    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


_TYPE_BY_CHAR = {str(int(t)): t for t in PacketType}


@attrs.frozen(slots=True)
class Packet:
    """One Engine.IO packet. ``data`` is bytes only for a binary ``message``."""

    type: PacketType
    data: str | bytes = ""

    @property
    def binary(self) -> bool:
        return isinstance(self.data, bytes)


def _bad(message: str) -> EngineIOError:
    return EngineIOError(EngineErrorCode.BAD_REQUEST, message)


def encode_packet(packet: Packet) -> str | bytes:
    """Encode a packet as one WebSocket message.

    Returns:
        ``str`` for a text frame, ``bytes`` for a binary frame.
    """
    if isinstance(packet.data, bytes):
        return packet.data
    return f"{packet.type:d}{packet.data}"


def decode_packet(message: str | bytes) -> Packet:
    """Decode one WebSocket message into a packet.

    Raises:
        EngineIOError: the message is not an Engine.IO packet.
    """
    if isinstance(message, bytes | bytearray | memoryview):
        return Packet(PacketType.MESSAGE, bytes(message))
    if not message:
        raise _bad("empty packet")
    packet_type = _TYPE_BY_CHAR.get(message[0])
    if packet_type is None:
        raise _bad(f"unknown packet type {message[0]!r}")
    return Packet(packet_type, message[1:])


def encode_payload_item(packet: Packet) -> str:
    """Encode one packet as it stands in a polling payload (binary as ``b`` + base64)."""
    if isinstance(packet.data, bytes):
        return "b" + base64.b64encode(packet.data).decode("ascii")
    return f"{packet.type:d}{packet.data}"


def encode_payload(packets: list[Packet]) -> str:
    """Encode packets as one HTTP long-polling body."""
    return SEPARATOR.join(encode_payload_item(p) for p in packets)


def _decode_payload_item(raw: bytes) -> Packet:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("payload is not valid UTF-8") from None
    if text[:1] == "b":
        try:
            data = base64.b64decode(text[1:], validate=True)
        except (binascii.Error, ValueError):
            raise _bad("invalid base64 in binary packet") from None
        return Packet(PacketType.MESSAGE, data)
    return decode_packet(text)


class PayloadDecoder:
    """Incremental decoder of an HTTP long-polling body.

    Feed the body in chunks of any size as they arrive, then call :meth:`close`. Packets come
    out as soon as their separator has been seen. The record separator never occurs inside a
    UTF-8 multi-byte sequence, so the body is split on the byte ``0x1e`` before it is decoded.

    Args:
        max_payload: the most bytes a body may have (the handshake's ``maxPayload``).
    """

    def __init__(self, *, max_payload: int) -> None:
        self._max_payload = max_payload
        self._buffer = bytearray()
        self._size = 0
        self._closed = False

    def feed(self, chunk: bytes) -> list[Packet]:
        """Take the next chunk of the body.

        Returns:
            The packets completed by this chunk.

        Raises:
            EngineIOError: the body is over ``max_payload`` (HTTP 413) or holds a bad packet.
        """
        if self._closed:
            raise RuntimeError("feed() after close()")
        self._size += len(chunk)
        if self._size > self._max_payload:
            raise EngineIOError(EngineErrorCode.BAD_REQUEST, "payload over maxPayload", status=413)
        self._buffer += chunk
        packets = []
        while (index := self._buffer.find(_SEPARATOR_BYTE)) != -1:
            packets.append(_decode_payload_item(bytes(self._buffer[:index])))
            del self._buffer[: index + 1]
        return packets

    def close(self) -> list[Packet]:
        """End the body.

        Returns:
            The last packet.

        Raises:
            EngineIOError: the body is empty or its last packet is bad.
        """
        if self._closed:
            raise RuntimeError("close() twice")
        self._closed = True
        if self._size == 0:
            raise _bad("empty payload")
        return [_decode_payload_item(bytes(self._buffer))]


def decode_payload(body: bytes, *, max_payload: int) -> list[Packet]:
    """Decode a whole HTTP long-polling body.

    Raises:
        EngineIOError: the body is over ``max_payload`` or is not a payload.
    """
    decoder = PayloadDecoder(max_payload=max_payload)
    return decoder.feed(body) + decoder.close()
