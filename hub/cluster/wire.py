"""The messages hub nodes exchange through Redis, in the format of Node's socket.io cluster tools.

Sans-I/O: bytes in, values out; no sockets, no clock, no trio. The format is the one written by
``@socket.io/redis-adapter`` 8.3 (classic pub/sub, ``createAdapter``) and
``@socket.io/redis-emitter`` 5.1, so that Node services and Node socket.io nodes share a cluster
with hub nodes. What they do, from their sources (``lib/index.ts`` of both):

Channels, for a namespace ``nsp`` and the key prefix ``socket.io``::

    socket.io#<nsp>#                  a broadcast to every socket of the namespace, or to rooms
    socket.io#<nsp>#<room>#           a broadcast to exactly one room
    socket.io-request#<nsp>#          requests between nodes (every node subscribes)
    socket.io-response#<nsp>#         answers to requests
    socket.io-response#<nsp>#<uid>#   answers meant for one node
                                      (``publishOnSpecificResponseChannel``)

A node subscribes to the pattern ``socket.io#<nsp>#*`` and to the three other channels. It skips a
broadcast on a room channel when it has no socket in that room, before decoding it.

A broadcast is the msgpack (notepack.io) encoding of ``[uid, packet, opts]``::

    uid     the sending node's id ("emitter" for redis-emitter); a node ignores its own
    packet  {"type": 2, "data": [event, ...args], "nsp": "/"}   (binary args are msgpack bin)
    opts    {"rooms": [...], "except": [...], "flags": {"volatile": true, ...}}

``except`` holds room names, and socket ids for a broadcast that leaves one socket out
(``socket.to(room)``: every socket is in the room named after its id).

Requests are JSON objects, except BROADCAST, which is msgpack because its packet may carry binary.
An answer is JSON too, except BROADCAST_ACK. A receiver tells them apart by the first byte: "if the
buffer starts with a "{" character" it is JSON, else msgpack. Fields by type::

    SOCKETS            {uid, requestId, type: 0, rooms}       -> {requestId, sockets: [ids]}
    ALL_ROOMS          {uid, requestId, type: 1}              -> {requestId, rooms}
    REMOTE_JOIN        {uid, type: 2, opts: {rooms, except}, rooms}        (no answer)
    REMOTE_LEAVE       {uid, type: 3, opts: {rooms, except}, rooms}        (no answer)
    REMOTE_DISCONNECT  {uid, type: 4, opts: {rooms, except}, close}        (no answer)
    REMOTE_FETCH       {uid, requestId, type: 5, opts: {rooms, except}}
                           -> {requestId, sockets: [{id, handshake, rooms, data}]}
    SERVER_SIDE_EMIT   {uid, type: 6, data: [event, ...args], requestId?}
                           -> {type: 6, requestId, data}  (only with a requestId)
    BROADCAST          {uid, requestId, type: 7, packet, opts}   (msgpack)
                           -> {type: 8, requestId, clientCount}  (BROADCAST_CLIENT_COUNT)
                           -> {type: 9, requestId, packet}  (BROADCAST_ACK, msgpack, per client ack)

The older single-socket forms of REMOTE_JOIN / LEAVE / DISCONNECT (``{sid, room, requestId}``,
answered ``{requestId}``) are still understood. The emitter's requests have no ``uid``.

Extensions of hub nodes, which Node nodes ignore or never see:

- A BROADCAST whose ``opts.flags.countOnly`` is true asks for the count of sockets reached and no
  acknowledgements, so hub nodes deliver it as a plain event (Node's BROADCAST handler reads only
  rooms and except).
- A hub node's answers carry its ``uid`` (Node reads only the fields of the answer's type), so that
  a hub node knows which of the nodes it knows have answered.
- Heartbeats, on a channel of their own that only hub nodes subscribe to (Node's pattern
  ``socket.io#<nsp>#*`` does not match it)::

      socket.io-heartbeat#<nsp>#        {uid, type}   (JSON)

  with the numbers of ``@socket.io/cluster-adapter``'s ``MessageType``: 1 INITIAL_HEARTBEAT (a
  node (re)connected to Redis; the others answer with a HEARTBEAT at once), 2 HEARTBEAT (every
  few seconds), 13 ADAPTER_CLOSE (the node stops). See :mod:`hub.cluster.peers`.

msgpack conventions of notepack.io: a JS ``Buffer`` / ``ArrayBuffer`` / typed array is ``bin``,
``undefined`` is nil, a ``Date`` is the timestamp extension (-1); older notepack versions wrote
fixext type 0 for ``undefined`` and ext type 0 for an ``ArrayBuffer``. Decoded here as ``bytes``,
``None``, the ISO string ``Date.toJSON()`` gives (what a Node server would send its clients), None
and ``bytes``.
"""

from __future__ import annotations

import datetime
import enum
import json
import secrets
import string
from collections.abc import Iterable
from typing import Any, Final

import attrs
import msgpack

from hub.errors import LocalProtocolError, RemoteProtocolError
from hub.protocol import Event

__all__ = [
    "DEFAULT_KEY",
    "EMITTER_UID",
    "Broadcast",
    "Channels",
    "Heartbeat",
    "HeartbeatType",
    "MalformedMessage",
    "Request",
    "RequestType",
    "decode_broadcast",
    "decode_event",
    "decode_heartbeat",
    "decode_message",
    "encode_broadcast",
    "encode_heartbeat",
    "encode_json",
    "encode_msgpack",
    "new_id",
    "own_prefix",
    "packet_of",
    "room_names",
]

DEFAULT_KEY: Final = "socket.io"
"""The prefix of every channel (the adapter's and the emitter's ``key`` option)."""

EMITTER_UID: Final = "emitter"
"""The uid redis-emitter puts in its broadcasts."""

# uid2's alphabet: the adapter's node ids and request ids are uid2(6).
_ID_ALPHABET: Final = string.ascii_letters + string.digits

# The timestamp extension (-1) as notepack writes it: timestamp 32, 64 and 96.
_TIMESTAMP_MARKS: Final = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


class MalformedMessage(RemoteProtocolError):
    """A message read from Redis does not follow the format; it is ignored (and counted)."""


class RequestType(enum.IntEnum):
    """The request types of @socket.io/redis-adapter (``enum RequestType``)."""

    SOCKETS = 0
    ALL_ROOMS = 1
    REMOTE_JOIN = 2
    REMOTE_LEAVE = 3
    REMOTE_DISCONNECT = 4
    REMOTE_FETCH = 5
    SERVER_SIDE_EMIT = 6
    BROADCAST = 7
    BROADCAST_CLIENT_COUNT = 8
    BROADCAST_ACK = 9


def new_id(length: int = 6) -> str:
    """A random id as uid2 makes them (letters and digits)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


@attrs.frozen
class Channels:
    """The channels of one namespace.

    Attributes:
        broadcast: ``<key>#<nsp>#``, the prefix of every broadcast channel.
        request: ``<key>-request#<nsp>#``.
        response: ``<key>-response#<nsp>#``.
        own_response: ``<key>-response#<nsp>#<uid>#``, answers meant for this node alone.
        heartbeat: ``<key>-heartbeat#<nsp>#``, hub nodes' heartbeats.
    """

    broadcast: str
    request: str
    response: str
    own_response: str
    heartbeat: str

    @classmethod
    def of(cls, namespace: str, uid: str, key: str = DEFAULT_KEY) -> Channels:
        response = f"{key}-response#{namespace}#"
        return cls(
            broadcast=f"{key}#{namespace}#",
            request=f"{key}-request#{namespace}#",
            response=response,
            own_response=f"{response}{uid}#",
            heartbeat=f"{key}-heartbeat#{namespace}#",
        )

    @property
    def pattern(self) -> str:
        """The pattern that matches every broadcast channel of the namespace."""
        return self.broadcast + "*"

    def for_rooms(self, rooms: Iterable[str]) -> str:
        """The channel of a broadcast: the room's own when there is exactly one room."""
        rooms = list(rooms)
        if len(rooms) == 1:
            return f"{self.broadcast}{rooms[0]}#"
        return self.broadcast

    def room_of(self, channel: str) -> str | None:
        """The room of a broadcast channel (``""`` for the namespace's own), or None when the
        channel is not one of this namespace's."""
        if not channel.startswith(self.broadcast):
            return None
        return channel[len(self.broadcast) : -1]

    def response_to(self, uid: str | None, *, specific: bool) -> str:
        """Where to answer a request of node ``uid``."""
        if specific and uid:
            return f"{self.response}{uid}#"
        return self.response


# -- values ------------------------------------------------------------------------------------


def _ext_hook(code: int, data: bytes) -> Any:
    if code == 0:
        # notepack.io before 3.0: fixext 1 type 0 was `undefined`, ext type 0 an ArrayBuffer
        return None if data == b"\x00" else data
    raise MalformedMessage(f"msgpack extension type {code} is not one notepack writes")


def _js_date(stamp: msgpack.Timestamp) -> str:
    """A timestamp as JavaScript's ``Date.prototype.toJSON`` writes it (milliseconds, UTC)."""
    moment: datetime.datetime = stamp.to_datetime()
    millis = moment.microsecond // 1000
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{millis:03d}Z"


def _dates_to_text(value: Any) -> Any:
    if isinstance(value, msgpack.Timestamp):
        return _js_date(value)
    if isinstance(value, list):
        return [_dates_to_text(item) for item in value]
    if isinstance(value, dict):
        return {key: _dates_to_text(item) for key, item in value.items()}
    return value


def _unpack(data: bytes) -> Any:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook)
    except MalformedMessage:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedMessage(f"not msgpack: {exc}") from None
    if any(mark in data for mark in _TIMESTAMP_MARKS):
        value = _dates_to_text(value)  # rare: only a payload with a Date pays for the walk
    return value


def encode_msgpack(value: Any) -> bytes:
    """``value`` in msgpack as notepack.io reads it (``bytes`` as bin).

    Raises:
        hub.errors.LocalProtocolError: a value msgpack cannot hold (an int over 64 bits, an
            object of an unknown type).
    """
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode for the cluster: {exc}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        # What JSON.stringify makes of a Node Buffer.
        return {"type": "Buffer", "data": list(bytes(value))}
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _lenient_default(value: Any) -> Any:
    try:
        return _json_default(value)
    except TypeError:
        return repr(value)


def encode_json(value: Any, *, lenient: bool = False) -> bytes:
    """``value`` as compact JSON, as the adapter's ``JSON.stringify``.

    Args:
        value: the request or answer.
        lenient: write what JSON cannot hold as its ``repr`` instead of failing (for
            ``socket.data``, which the application fills freely).

    Raises:
        hub.errors.LocalProtocolError: a value JSON cannot hold (and not ``lenient``).
    """
    try:
        text = json.dumps(
            value,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_lenient_default if lenient else _json_default,
        )
    except (TypeError, ValueError) as exc:
        raise LocalProtocolError(f"cannot encode for the cluster: {exc}") from None
    return text.encode("utf-8")


def decode_message(data: bytes) -> dict[str, Any]:
    """A request or an answer: JSON when it starts with ``{``, else msgpack.

    Raises:
        MalformedMessage: neither, or not an object.
    """
    if data[:1] == b"{":
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise MalformedMessage(f"not JSON: {exc}") from None
    else:
        value = _unpack(data)
    if not isinstance(value, dict):
        raise MalformedMessage(f"expected an object, not {type(value).__name__}")
    return value


# -- rooms and packets -------------------------------------------------------------------------


def _room(value: Any) -> str:
    # A Node room may be a number (Room = string | number); its channel and its name here are
    # the number as JavaScript writes it.
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    raise MalformedMessage(f"a room is a string or a number, not {type(value).__name__}")


def room_names(value: Any) -> frozenset[str]:
    """A list of rooms from the wire (missing: none).

    Raises:
        MalformedMessage: not a list of strings and numbers.
    """
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise MalformedMessage(f"rooms are a list, not {type(value).__name__}")
    return frozenset(_room(item) for item in value)


def packet_of(event: Event) -> dict[str, Any]:
    """The packet object of an event, as socket.io's broadcast puts it on the wire."""
    return {"type": 2, "data": [event.name, *event.args], "nsp": event.namespace}


def decode_event(packet: Any, namespace: str) -> Event:
    """The event in a packet object read from another node.

    Raises:
        MalformedMessage: not an EVENT (or BINARY_EVENT, as old emitters wrote) with a string
            event name, or of another namespace.
    """
    if not isinstance(packet, dict):
        raise MalformedMessage("the packet is not an object")
    if packet.get("type") not in (2, 5):
        raise MalformedMessage(f"packet type {packet.get('type')!r} is not an event")
    nsp = packet.get("nsp", "/")
    if nsp != namespace:
        raise MalformedMessage(f"packet of namespace {nsp!r} on the channel of {namespace!r}")
    data = packet.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise MalformedMessage("the packet's data is not [event name, ...arguments]")
    return Event(data[0], tuple(data[1:]), namespace=namespace)


# -- broadcasts --------------------------------------------------------------------------------


@attrs.frozen
class Broadcast:
    """A broadcast from another node.

    Attributes:
        uid: the node that sent it.
        event: the event to deliver.
        rooms: the rooms it goes to (every socket when empty).
        except_rooms: rooms (and socket ids) left out.
        volatile: deliver only to the sockets that can take it at once.
    """

    uid: str
    event: Event
    rooms: frozenset[str]
    except_rooms: frozenset[str]
    volatile: bool = False


def encode_broadcast(
    uid: str,
    event: Event,
    rooms: Iterable[str],
    except_rooms: Iterable[str],
    *,
    volatile: bool = False,
) -> bytes:
    """A broadcast as the adapter publishes it: msgpack ``[uid, packet, opts]``.

    Raises:
        hub.errors.LocalProtocolError: an argument msgpack cannot hold.
    """
    flags = {"volatile": True} if volatile else {}
    opts = {"rooms": list(rooms), "except": list(except_rooms), "flags": flags}
    return encode_msgpack([uid, packet_of(event), opts])


def own_prefix(uid: str) -> bytes:
    """The first bytes of every broadcast node ``uid`` publishes: a node skips its own without
    decoding them."""
    return b"\x93" + encode_msgpack(uid)


def decode_broadcast(data: bytes, namespace: str) -> Broadcast:
    """A broadcast read on a channel of ``namespace``.

    Raises:
        MalformedMessage: not ``[uid, packet, opts]`` with an event packet of ``namespace``.
    """
    value = _unpack(data)
    if not isinstance(value, list) or len(value) != 3:
        raise MalformedMessage("a broadcast is [uid, packet, opts]")
    uid, packet, opts = value
    if not isinstance(uid, str):
        raise MalformedMessage("the uid of a broadcast is not a string")
    if not isinstance(opts, dict):
        raise MalformedMessage("the opts of a broadcast are not an object")
    flags = opts.get("flags")
    return Broadcast(
        uid=uid,
        event=decode_event(packet, namespace),
        rooms=room_names(opts.get("rooms")),
        except_rooms=room_names(opts.get("except")),
        volatile=isinstance(flags, dict) and bool(flags.get("volatile")),
    )


# -- requests ----------------------------------------------------------------------------------


@attrs.frozen
class Request:
    """A request from another node (or an emitter), or an answer to one.

    Attributes:
        type: the request type; None for an answer that has none (SOCKETS, ALL_ROOMS,
            REMOTE_FETCH and the single-socket REMOTE_* answers carry only the request id).
        uid: the node that sent it (None from an emitter, or in an answer).
        request_id: the id an answer refers to (None when no answer is expected).
        body: the whole object, for the fields of its type.
    """

    type: RequestType | None
    uid: str | None
    request_id: str | None
    body: dict[str, Any]

    @classmethod
    def decode(cls, data: bytes) -> Request:
        """Raises: MalformedMessage."""
        body = decode_message(data)
        raw_type = body.get("type")
        try:
            kind = None if raw_type is None else RequestType(raw_type)
        except ValueError:
            raise MalformedMessage(f"unknown request type {raw_type!r}") from None
        uid = body.get("uid")
        request_id = body.get("requestId")
        if request_id is not None and not isinstance(request_id, str):
            request_id = str(request_id)
        return cls(kind, uid if isinstance(uid, str) else None, request_id, body)

    def targets(self) -> tuple[frozenset[str], frozenset[str]]:
        """The ``opts`` of a request: (rooms, except).

        Raises:
            MalformedMessage: no ``opts`` object.
        """
        opts = self.body.get("opts")
        if not isinstance(opts, dict):
            raise MalformedMessage("the request has no opts")
        return room_names(opts.get("rooms")), room_names(opts.get("except"))


# -- heartbeats --------------------------------------------------------------------------------


class HeartbeatType(enum.IntEnum):
    """The heartbeat messages of hub nodes, numbered as ``@socket.io/cluster-adapter``'s
    ``MessageType``."""

    INITIAL_HEARTBEAT = 1
    HEARTBEAT = 2
    ADAPTER_CLOSE = 13


@attrs.frozen
class Heartbeat:
    """A hub node's heartbeat.

    Attributes:
        uid: the node that sent it.
        type: what it says: here now and asking the others to say so too, here still, or leaving.
    """

    uid: str
    type: HeartbeatType


def encode_heartbeat(uid: str, kind: HeartbeatType) -> bytes:
    """A heartbeat as hub nodes publish it: JSON ``{uid, type}``."""
    return encode_json({"uid": uid, "type": kind.value})


def decode_heartbeat(data: bytes) -> Heartbeat:
    """A heartbeat read on a heartbeat channel.

    Raises:
        MalformedMessage: not ``{uid, type}`` with a string uid and a known type.
    """
    body = decode_message(data)
    uid = body.get("uid")
    if not isinstance(uid, str) or not uid:
        raise MalformedMessage("a heartbeat has no uid")
    raw_type = body.get("type")
    try:
        kind = HeartbeatType(raw_type if isinstance(raw_type, int) else -1)
    except ValueError:
        raise MalformedMessage(f"unknown heartbeat type {raw_type!r}") from None
    return Heartbeat(uid, kind)
