"""Socket.IO protocol v5 packets: the classes, :func:`encode` and :class:`Decoder`.

Sans-I/O: text and bytes in, packets out; no sockets, no clock, no trio.

The wire format (socket.io-protocol, "Packet encoding")::

    <packet type>[<# of binary attachments>-][<namespace>,][<acknowledgment id>]
        [JSON-stringified payload without binary]      (one line in the spec)

    + binary attachments extracted

"each Socket.IO packet is sent as a Engine.IO `message` packet", so one packet is one text
message, followed by one binary message per attachment.

Decoder rules:

- ``IDLE``: a text message is a packet. A BINARY_EVENT or BINARY_ACK moves to
  ``ATTACHMENTS``; any other packet is returned at once. A binary message is an error.
- ``ATTACHMENTS``: each binary message is the next attachment; the last one completes the
  packet and moves back to ``IDLE``. A text message is an error.
- Any malformed message raises :class:`~hub.errors.SocketIOError` and moves to ``BROKEN``
  for good: the peer's session is closed, and a later call is our bug
  (:class:`~hub.errors.LocalProtocolError`).

Where the reference parser (npm ``socket.io-parser`` 4.2) is lenient, we refuse what no
encoder writes: an empty message, whitespace or trailing data around the JSON, an ack id on a
packet type that has none, an ACK without an id, an EVENT or ACK without a payload, a number as
an event name, malformed placeholders, NaN/Infinity and lone surrogates. And a payload nested
deeper than :data:`MAX_DEPTH`: whatever decodes must encode again, from any handler.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable
from typing import Any, Final, TypeAlias

import attrs

from hub.errors import LocalProtocolError, SocketIOError
from hub.protocol.binary import (
    Extractor,
    check_no_literal_placeholders,
    find_placeholders,
    iter_nodes,
)

__all__ = [
    "MAX_DEPTH",
    "RESERVED_EVENTS",
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


class PacketType(enum.IntEnum):
    """The packet types, the first character of every packet.

    BINARY_EVENT and BINARY_ACK exist only on the wire: they decode to :class:`Event` and
    :class:`Ack`, and :func:`encode` picks them when the arguments hold binary data.
    """

    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


@attrs.frozen
class Connect:
    """CONNECT: a client asks to join a namespace, or the server lets it in.

    Attributes:
        namespace: the namespace, ``"/"`` for the main one.
        data: the client's auth payload (``None`` when it sent none), or the server's
            ``{"sid": ...}``.
    """

    namespace: str = "/"
    data: dict[str, Any] | None = None


@attrs.frozen
class Disconnect:
    """DISCONNECT: one side leaves a namespace.

    Attributes:
        namespace: the namespace left.
    """

    namespace: str = "/"


@attrs.frozen
class Event:
    """EVENT (or BINARY_EVENT on the wire): a named event with arguments.

    Attributes:
        name: the event name.
        args: the arguments: JSON values, with ``bytes`` anywhere inside.
        namespace: the namespace it is sent in.
        id: the ack id when the sender wants an :class:`Ack`, else ``None``.
    """

    name: str
    args: tuple[Any, ...] = ()
    namespace: str = "/"
    id: int | None = None


@attrs.frozen
class Ack:
    """ACK (or BINARY_ACK on the wire): the answer to an :class:`Event` that had an id.

    Attributes:
        args: the answer's arguments: JSON values, with ``bytes`` anywhere inside.
        id: the id of the event answered.
        namespace: the namespace of the event answered.
    """

    args: tuple[Any, ...]
    id: int
    namespace: str = "/"


@attrs.frozen
class ConnectError:
    """CONNECT_ERROR: the server refuses a CONNECT.

    Attributes:
        data: usually ``{"message": "...", "data": ...}``; a string is also valid.
        namespace: the namespace refused.
    """

    data: Any
    namespace: str = "/"


Packet: TypeAlias = Connect | Disconnect | Event | Ack | ConnectError

# socket.io-parser, RESERVED_EVENTS: "These strings must not be used as event names, as they
# have a special meaning."
RESERVED_EVENTS: Final = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)

# socket.io-parser sets no depth; JSON.parse takes thousands of levels. json's C encoder and
# decoder share Python's recursion limit (1000 frames) with the stack they run on, so a payload
# that decodes near the limit may fail to encode from a handler a few frames deeper (an ack that
# echoes its arguments). No payload of an application comes near this bound; a peer's that
# passes it is refused, whatever the stack.
MAX_DEPTH: Final = 128
"""The most levels of arrays and objects a payload may have (the packet's own array counts)."""

# Ack ids are JavaScript numbers on the other side: above Number.MAX_SAFE_INTEGER they are no
# longer exact.
_MAX_ACK_ID: Final = 2**53 - 1
_MAX_ACK_ID_DIGITS: Final = len(str(_MAX_ACK_ID))

_DIGITS: Final = frozenset("0123456789")
_BINARY_TYPES: Final = frozenset({PacketType.BINARY_EVENT, PacketType.BINARY_ACK})
_BINARY_FORM: Final = {
    PacketType.EVENT: PacketType.BINARY_EVENT,
    PacketType.ACK: PacketType.BINARY_ACK,
}
_HAS_ACK_ID: Final = frozenset(
    {PacketType.EVENT, PacketType.ACK, PacketType.BINARY_EVENT, PacketType.BINARY_ACK}
)

# The first character each payload may start with, and how to name it in an error.
_PAYLOAD_OPENERS: Final = {
    PacketType.CONNECT: ("{", "a JSON object"),
    PacketType.EVENT: ("[", "a JSON array"),
    PacketType.ACK: ("[", "a JSON array"),
    PacketType.CONNECT_ERROR: ('{"', "a JSON object or string"),
    PacketType.BINARY_EVENT: ("[", "a JSON array"),
    PacketType.BINARY_ACK: ("[", "a JSON array"),
}

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# A JSON escape that may decode to a surrogate code point (lone, or half of a pair).
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


# --- encoding -------------------------------------------------------------------------------


def encode(packet: Packet) -> list[str | bytes]:
    """Encode a packet for the wire.

    Event and Ack whose arguments hold ``bytes``, ``bytearray`` or ``memoryview`` anywhere
    (nested in lists and dicts too) become BINARY_EVENT and BINARY_ACK, with
    ``{"_placeholder":true,"num":k}`` in place of the k-th binary value.

    Args:
        packet: the packet to encode.

    Returns:
        The text packet first, then one ``bytes`` item per binary attachment, in order; each
        item is sent as one Engine.IO message. There is no limit on the count, but peers
        refuse more than their ``maxAttachments`` (10 by default in socket.io-parser).

    Raises:
        LocalProtocolError: the packet cannot be encoded: a namespace that does not start
            with "/" or holds a ",", an ack id that is not an integer in 0..2**53-1, a reserved
            or non-string event name, a CONNECT payload that is not a dict, a CONNECT_ERROR
            payload that is neither dict nor str, or a value JSON cannot hold (NaN, infinity,
            lone surrogates, objects of other types).
    """
    extractor = Extractor()
    ack_id: int | None = None
    data: Any = None
    match packet:
        case Connect(namespace=namespace, data=data):
            ptype = PacketType.CONNECT
            if data is not None and not isinstance(data, dict):
                raise LocalProtocolError(
                    f"CONNECT payload must be a dict or None, not {type(data).__name__}"
                )
        case Disconnect(namespace=namespace):
            ptype = PacketType.DISCONNECT
        case Event(name=name, args=args, namespace=namespace, id=ack_id):
            ptype = PacketType.EVENT
            if not isinstance(name, str):
                raise LocalProtocolError(f"event name must be a str, not {type(name).__name__}")
            if name in RESERVED_EVENTS:
                raise LocalProtocolError(f"{name!r} is a reserved event name")
            data = [name, *args]
        case Ack(args=args, id=ack_id, namespace=namespace):
            ptype = PacketType.ACK
            data = list(args)
        case ConnectError(data=data, namespace=namespace):
            ptype = PacketType.CONNECT_ERROR
            if not isinstance(data, dict | str):
                raise LocalProtocolError(
                    f"CONNECT_ERROR payload must be a dict or str, not {type(data).__name__}"
                )
        case _:
            raise LocalProtocolError(f"not a Socket.IO packet: {type(packet).__name__}")

    _check_namespace(namespace)
    if ack_id is not None:
        _check_ack_id(ack_id)
    payload = "" if data is None else _dumps(data, extractor)

    # "<packet type>[<# of binary attachments>-][<namespace>,][<acknowledgment id>][JSON]"
    header = str(int(ptype))
    if extractor.buffers:
        # Only EVENT and ACK have binary forms; CONNECT and CONNECT_ERROR payloads are JSON.
        if ptype not in _BINARY_FORM:
            raise LocalProtocolError(f"{ptype.name} payload cannot hold binary data")
        check_no_literal_placeholders(payload, data, len(extractor.buffers))
        ptype = _BINARY_FORM[ptype]
        header = f"{int(ptype)}{len(extractor.buffers)}-"
    # "the namespace is only included if it is different from the main namespace (`/`)"
    if namespace != "/":
        header += namespace + ","
    if ack_id is not None:
        header += str(ack_id)
    return [header + payload, *extractor.buffers]


def _check_namespace(namespace: object) -> None:
    if not isinstance(namespace, str):
        raise LocalProtocolError(f"namespace must be a str, not {type(namespace).__name__}")
    if not namespace.startswith("/"):
        raise LocalProtocolError(f"namespace must start with '/': {namespace!r}")
    # "[<namespace>,]": the first comma ends the namespace.
    if "," in namespace:
        raise LocalProtocolError(f"namespace cannot contain ',': {namespace!r}")


def _check_ack_id(ack_id: object) -> None:
    if not isinstance(ack_id, int) or isinstance(ack_id, bool):
        raise LocalProtocolError(f"ack id must be an int, not {type(ack_id).__name__}")
    if not 0 <= ack_id <= _MAX_ACK_ID:
        raise LocalProtocolError(f"ack id must be in 0..2**53-1, not {ack_id}")


def _dumps(data: Any, extractor: Extractor) -> str:
    try:
        text = json.dumps(
            data,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=extractor,
        )
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"payload is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise LocalProtocolError("payload is nested too deeply") from exc
    # ensure_ascii=False writes strings as they are; a lone surrogate has no UTF-8 form.
    if not text.isascii() and _SURROGATE.search(text):
        raise LocalProtocolError("payload holds a lone surrogate, which has no UTF-8 encoding")
    return text


# --- decoding -------------------------------------------------------------------------------


class _State(enum.Enum):
    """The decoder's states; the rules are at the top of this module."""

    IDLE = enum.auto()
    ATTACHMENTS = enum.auto()
    BROKEN = enum.auto()


@attrs.define
class _Pending:
    """A binary packet whose text has arrived, waiting for its attachments."""

    packet_type: PacketType
    namespace: str
    id: int | None
    payload: list[Any]
    setters: list[Callable[[bytes], None]]
    received: int = 0


class Decoder:
    """Turns the Engine.IO messages of one session into Socket.IO packets.

    One decoder per Engine.IO session: a binary packet's attachments follow its text.
    """

    def __init__(self, *, max_attachments: int = 10) -> None:
        """Create a decoder.

        Args:
            max_attachments: the most binary attachments one packet may announce (the default
                of socket.io-parser's ``maxAttachments``).

        Raises:
            LocalProtocolError: ``max_attachments`` is negative.
        """
        if max_attachments < 0:
            raise LocalProtocolError(f"max_attachments must be >= 0, not {max_attachments}")
        self._max_attachments = max_attachments
        self._state = _State.IDLE
        self._pending: _Pending | None = None

    def receive(self, message: str | bytes) -> Packet | None:
        """Feed one Engine.IO message.

        Args:
            message: a text message (one packet) or a binary message (one attachment).

        Returns:
            The completed packet, or ``None`` while a binary packet waits for attachments.
            Attachments are put back in place of their placeholders as ``bytes``.

        Raises:
            SocketIOError: the message breaks the protocol. The session must be closed; the
                decoder cannot be used again.
            LocalProtocolError: called again after a SocketIOError.
        """
        if self._state is _State.BROKEN:
            raise LocalProtocolError("Decoder.receive() called after the peer broke the protocol")
        try:
            if isinstance(message, str):
                return self._receive_text(message)
            return self._receive_binary(bytes(message))
        except SocketIOError:
            self._state = _State.BROKEN
            self._pending = None
            raise

    def _receive_text(self, text: str) -> Packet | None:
        if self._state is _State.ATTACHMENTS:
            assert self._pending is not None
            missing = len(self._pending.setters) - self._pending.received
            raise SocketIOError(
                f"got a text message while {missing} binary attachment(s) are still expected"
            )
        ptype, namespace, ack_id, payload, attachments = _parse(text, self._max_attachments)
        if attachments:
            assert isinstance(payload, list)
            setters = find_placeholders(payload, attachments, ptype.name)
            self._pending = _Pending(ptype, namespace, ack_id, payload, setters)
            self._state = _State.ATTACHMENTS
            return None
        return _make_packet(ptype, namespace, ack_id, payload)

    def _receive_binary(self, data: bytes) -> Packet | None:
        if self._state is _State.IDLE:
            raise SocketIOError("got a binary message while no attachment is expected")
        pending = self._pending
        assert pending is not None
        pending.setters[pending.received](data)
        pending.received += 1
        if pending.received < len(pending.setters):
            return None
        self._pending = None
        self._state = _State.IDLE
        return _make_packet(pending.packet_type, pending.namespace, pending.id, pending.payload)


def _excerpt(text: str, limit: int = 24) -> str:
    # repr() keeps the error on one line whatever the peer sent.
    return repr(text[:limit] + "…" if len(text) > limit else text)


def _digits_end(text: str, pos: int) -> int:
    # ASCII digits only: str.isdigit() also takes "²" and "٣", which int() refuses or reads.
    end = pos
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    return end


def _parse(text: str, max_attachments: int) -> tuple[PacketType, str, int | None, Any, int]:
    """Split a text packet into (type, namespace, ack id, payload, attachment count)."""
    # "<packet type>"
    if not text:
        raise SocketIOError("empty Socket.IO packet")
    first = text[0]
    if first not in _DIGITS or int(first) > max(PacketType):
        raise SocketIOError(f"unknown packet type {first!r}")
    ptype = PacketType(int(first))
    name = ptype.name
    pos = 1

    # "[<# of binary attachments>-]"
    attachments = 0
    if ptype in _BINARY_TYPES:
        end = _digits_end(text, pos)
        count = text[pos:end]
        if end == len(text) or text[end] != "-":
            raise SocketIOError(
                f"{name} packet needs '<attachment count>-' after its type,"
                f" found {_excerpt(text[pos:])}"
            )
        if not count:
            raise SocketIOError(f"{name} packet has no attachment count before '-'")
        if len(count) > len(str(max_attachments)) or int(count) > max_attachments:
            raise SocketIOError(
                f"{name} packet announces too many attachments: {_excerpt(count)}"
                f" (at most {max_attachments})"
            )
        attachments = int(count)
        if attachments < 1:
            raise SocketIOError(f"{name} packet announces {attachments} attachments")
        pos = end + 1

    # "[<namespace>,]": present when the next character is "/"; it runs to the first comma,
    # or to the end ("40/custom" and "41/custom" arrive without one).
    namespace = "/"
    if text.startswith("/", pos):
        comma = text.find(",", pos)
        end = len(text) if comma == -1 else comma
        namespace = text[pos:end]
        pos = min(end + 1, len(text))

    # "[<acknowledgment id>]"
    ack_id: int | None = None
    end = _digits_end(text, pos)
    if end > pos:
        if ptype not in _HAS_ACK_ID:
            raise SocketIOError(f"{name} packet cannot have an ack id: {_excerpt(text[pos:])}")
        digits = text[pos:end]
        if len(digits) > _MAX_ACK_ID_DIGITS or int(digits) > _MAX_ACK_ID:
            raise SocketIOError(f"ack id is too large: {_excerpt(digits)} (at most 2**53-1)")
        ack_id = int(digits)
        pos = end
    if ack_id is None and ptype in (PacketType.ACK, PacketType.BINARY_ACK):
        raise SocketIOError(f"{name} packet has no ack id")

    # "[JSON-stringified payload without binary]"
    payload: Any = None
    if pos == len(text):
        if ptype not in (PacketType.CONNECT, PacketType.DISCONNECT):
            raise SocketIOError(f"{name} packet has no payload")
    elif ptype is PacketType.DISCONNECT:
        raise SocketIOError(f"DISCONNECT packet cannot have a payload: {_excerpt(text[pos:])}")
    else:
        openers, expected = _PAYLOAD_OPENERS[ptype]
        if text[pos] not in openers:
            raise SocketIOError(f"{name} payload must be {expected}, found {_excerpt(text[pos:])}")
        payload = _loads(text, pos, name)

    if ptype in (PacketType.EVENT, PacketType.BINARY_EVENT):
        # "The payload is mandatory and MUST be a non-empty array."
        if not payload:
            raise SocketIOError(f"{name} payload must be a non-empty array (the event name first)")
        event = payload[0]
        if not isinstance(event, str):
            raise SocketIOError(f"{name} name must be a string, found {_json_type(event)}")
        if event in RESERVED_EVENTS:
            raise SocketIOError(f"{name} name {event!r} is reserved")
    return ptype, namespace, ack_id, payload, attachments


def _refuse_constant(constant: str) -> Any:
    # Python's json reads NaN, Infinity and -Infinity; JSON.parse does not.
    raise ValueError(f"{constant} is not valid JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {_excerpt(literal)} is out of range")
    return value


_JSON_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _loads(text: str, pos: int, name: str) -> Any:
    try:
        value, end = _JSON_DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise SocketIOError(
            f"invalid JSON in {name} payload: {exc.msg} at offset {exc.pos}"
        ) from None
    except ValueError as exc:
        raise SocketIOError(f"invalid JSON in {name} payload: {exc}") from None
    except RecursionError:
        raise SocketIOError(f"{name} payload is nested too deeply") from None
    if end != len(text):
        raise SocketIOError(
            f"trailing data after the {name} payload at offset {end}: {_excerpt(text[end:])}"
        )
    if _too_deep(text, pos, value):
        raise SocketIOError(f"{name} payload is nested too deeply (at most {MAX_DEPTH} levels)")
    if _SURROGATE_ESCAPE.search(text, pos) and _has_lone_surrogate(value):
        # JSON.parse keeps "\ud800" as a lone surrogate; it has no UTF-8 form, so we could
        # never send it back.
        raise SocketIOError(f"invalid JSON in {name} payload: lone surrogate in a string")
    return value


def _too_deep(text: str, pos: int, value: Any) -> bool:
    # Walk only when there are brackets enough for the bound to be passed (C-speed counts).
    if not isinstance(value, list | dict):
        return False
    if text.count("[", pos) + text.count("{", pos) <= MAX_DEPTH:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, list | dict):
                stack.append((child, depth + 1))
    return False


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if not isinstance(value, list | dict):
        return False
    for _container, key, child in iter_nodes(value):
        if isinstance(key, str) and _SURROGATE.search(key):
            return True
        if isinstance(child, str) and _SURROGATE.search(child):
            return True
    return False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _make_packet(ptype: PacketType, namespace: str, ack_id: int | None, payload: Any) -> Packet:
    match ptype:
        case PacketType.CONNECT:
            return Connect(namespace, payload)
        case PacketType.DISCONNECT:
            return Disconnect(namespace)
        case PacketType.EVENT | PacketType.BINARY_EVENT:
            return Event(payload[0], tuple(payload[1:]), namespace, ack_id)
        case PacketType.ACK | PacketType.BINARY_ACK:
            assert ack_id is not None
            return Ack(tuple(payload), ack_id, namespace)
        case PacketType.CONNECT_ERROR:
            return ConnectError(payload, namespace)
