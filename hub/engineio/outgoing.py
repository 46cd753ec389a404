"""Engine.IO packets encoded once for every transport.

A broadcast reaches sockets on WebSocket and on long-polling alike. :class:`Outgoing` holds one
packet and encodes it at most once per form: the WebSocket frame (RFC 6455 section 5.2; a server's
frames are not masked, so every member of a room gets the very same bytes) and the polling
payload item. Pure computation: no I/O, no clock.
"""

from __future__ import annotations

import struct

from hub.engineio.packets import Packet, PacketType, encode_packet, encode_payload_item

__all__ = ["Outgoing", "encode_frame"]

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked WebSocket frame.

    RFC 6455 5.2: ``FIN`` set, no extension bits, 7-bit length, or 126 + 16-bit length, or 127 +
    64-bit length; "A server MUST NOT mask any frames that it sends to the client."
    """
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        header = bytes((first, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


class Outgoing:
    """One Engine.IO packet to send, with its encodings made on first use and kept."""

    __slots__ = ("_frame", "_polling", "message", "packet")

    def __init__(self, packet: Packet) -> None:
        self.packet = packet
        self.message: str | bytes = encode_packet(packet)
        self._frame: bytes | None = None
        self._polling: str | None = None

    @classmethod
    def message_of(cls, data: str | bytes) -> Outgoing:
        """A ``message`` packet carrying ``data``."""
        return cls(Packet(PacketType.MESSAGE, data))

    @property
    def frame(self) -> bytes:
        """The WebSocket frame bytes."""
        if self._frame is None:
            message = self.message
            if isinstance(message, str):
                self._frame = encode_frame(OPCODE_TEXT, message.encode("utf-8"))
            else:
                self._frame = encode_frame(OPCODE_BINARY, message)
        return self._frame

    @property
    def polling_item(self) -> str:
        """The item as it stands in a polling payload."""
        if self._polling is None:
            self._polling = encode_payload_item(self.packet)
        return self._polling

    def __len__(self) -> int:
        return len(self.message)
