"""Engine.IO v4, sans-I/O: packet and payload codecs and the session state machine."""

from hub.engineio.outgoing import Outgoing, encode_frame
from hub.engineio.packets import (
    SEPARATOR,
    Packet,
    PacketType,
    PayloadDecoder,
    decode_packet,
    decode_payload,
    encode_packet,
    encode_payload,
    encode_payload_item,
)
from hub.engineio.session import Incoming, Session, SessionOptions, State, Transport

__all__ = [
    "SEPARATOR",
    "Incoming",
    "Outgoing",
    "Packet",
    "PacketType",
    "PayloadDecoder",
    "Session",
    "SessionOptions",
    "State",
    "Transport",
    "decode_packet",
    "decode_payload",
    "encode_frame",
    "encode_packet",
    "encode_payload",
    "encode_payload_item",
]
