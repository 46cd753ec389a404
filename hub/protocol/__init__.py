"""Socket.IO protocol v5, sans-I/O: packets, :func:`encode` and :class:`Decoder`.

Spec: https://github.com/socketio/socket.io-protocol (README); reference parser: npm
``socket.io-parser``. Each packet is carried by one Engine.IO message, plus one binary message
per attachment.
"""

from __future__ import annotations

from hub.protocol.packets import (
    Ack,
    Connect,
    ConnectError,
    Decoder,
    Disconnect,
    Event,
    Packet,
    PacketType,
    encode,
)

__all__ = [
    "Ack",
    "Connect",
    "ConnectError",
    "Decoder",
    "Disconnect",
    "Event",
    "Packet",
    "PacketType",
    "encode",
]
