"""The cluster's wire format against bytes written by Node's own encoder.

The hex strings below were written by notepack.io 3.0.1, the msgpack encoder of
@socket.io/redis-adapter 8.3 and @socket.io/redis-emitter 5.1, from the JavaScript values in the
comments: hub must read them, and write byte for byte the same for the same values.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from hub.cluster.peers import Peers
from hub.cluster.wire import (
    Channels,
    Heartbeat,
    HeartbeatType,
    MalformedMessage,
    Request,
    RequestType,
    decode_broadcast,
    decode_heartbeat,
    encode_broadcast,
    encode_heartbeat,
    encode_json,
    own_prefix,
)
from hub.errors import LocalProtocolError
from hub.protocol import Event

# ["emitter", {type: 2, data: ["ev", {a: 1}, Buffer.from([1, 2])], nsp: "/"},
#  {rooms: ["r"], flags: {}, except: []}]      -- what redis-emitter publishes
EMITTER_BINARY = (
    "93a7656d697474657283a47479706502a46461746193a2657681a16101c4020102a36e7370a12f83a5726f6f6d"
    "7391a172a5666c61677380a665786365707490"
)
# ["AbC123", {type: 2, data: ["t", new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)), 1.5, -7, null,
#  true], nsp: "/admin"}, {rooms: ["a", "b"], except: ["c"], flags: {volatile: true}}]
ADAPTER_DATE = (
    "93a641624331323383a47479706502a46461746196a174d7ffa1a5d60065937d25cb3ff8000000000000f9c0c3"
    "a36e7370a62f61646d696e83a5726f6f6d7392a161a162a665786365707491a163a5666c61677381a8766f6c61"
    "74696c65c3"
)
# ["emitter", {type: 2, data: ["n"], nsp: "/"}, {rooms: [42], except: [], flags: {}}]
EMITTER_NUMBER_ROOM = (
    "93a7656d697474657283a47479706502a46461746191a16ea36e7370a12f83a5726f6f6d73912aa66578636570"
    "7490a5666c61677380"
)
# {uid: "AbC123", requestId: "XyZ987", type: 7, packet: {type: 2, data: ["ev",
#  Buffer.from("hi")], nsp: "/"}, opts: {rooms: [], except: ["x"], flags: {timeout: 1000}}}
BROADCAST_REQUEST = (
    "85a3756964a6416243313233a9726571756573744964a658795a393837a47479706507a67061636b657483a474"
    "79706502a46461746192a26576c4026869a36e7370a12fa46f70747383a5726f6f6d7390a665786365707491a1"
    "78a5666c61677381a774696d656f7574cd03e8"
)
# The adapter's broadcast of ["ev", {x: 1, "long key of more than 31 characters": "é"},
# Buffer.from([255]), 300, -200, 70000, 2.5] to room "room" except "s1", from node "AbC123".
ADAPTER_MIXED = (
    "93a641624331323383a47479706502a46461746197a2657682a17801d9236c6f6e67206b6579206f66206d6f72"
    "65207468616e2033312063686172616374657273a2c3a9c401ffcd012cd1ff38ce00011170cb40040000000000"
    "00a36e7370a12f83a5726f6f6d7391a4726f6f6da665786365707491a27331a5666c61677380"
)
# The adapter's volatile broadcast of ["v"] to every socket, from node "AbC123".
ADAPTER_VOLATILE = (
    "93a641624331323383a47479706502a46461746191a176a36e7370a12f83a5726f6f6d7390a665786365707490"
    "a5666c61677381a8766f6c6174696c65c3"
)


MIXED_MAP = {"x": 1, "long key of more than 31 characters": "é"}


def test_channels_are_the_adapters() -> None:
    channels = Channels.of("/", "AbC123")
    assert channels.broadcast == "socket.io#/#"
    assert channels.pattern == "socket.io#/#*"
    assert channels.request == "socket.io-request#/#"
    assert channels.response == "socket.io-response#/#"
    assert channels.own_response == "socket.io-response#/#AbC123#"
    assert channels.for_rooms(["user:1"]) == "socket.io#/#user:1#"
    assert channels.for_rooms(["a", "b"]) == "socket.io#/#"
    assert channels.for_rooms([]) == "socket.io#/#"
    assert channels.room_of("socket.io#/#user:1#") == "user:1"
    assert channels.room_of("socket.io#/#") == ""
    assert channels.room_of("socket.io#/admin#x#") is None
    assert Channels.of("/admin", "u", key="app").request == "app-request#/admin#"
    # hub's own: not matched by the adapter's pattern socket.io#/#*, so Node never reads it
    assert channels.heartbeat == "socket.io-heartbeat#/#"
    assert channels.room_of(channels.heartbeat) is None


def test_an_emitter_broadcast_with_binary() -> None:
    message = decode_broadcast(bytes.fromhex(EMITTER_BINARY), "/")
    assert message.uid == "emitter"
    assert message.event == Event("ev", ({"a": 1}, b"\x01\x02"), namespace="/")
    assert message.rooms == {"r"}
    assert message.except_rooms == frozenset()
    assert not message.volatile


def test_a_date_arrives_as_javascript_writes_it_in_json() -> None:
    message = decode_broadcast(bytes.fromhex(ADAPTER_DATE), "/admin")
    assert message.event.args == ("2024-01-02T03:04:05.678Z", 1.5, -7, None, True)
    assert message.rooms == {"a", "b"}
    assert message.except_rooms == {"c"}
    assert message.volatile


def test_a_number_room_is_its_javascript_name() -> None:
    assert decode_broadcast(bytes.fromhex(EMITTER_NUMBER_ROOM), "/").rooms == {"42"}


@pytest.mark.parametrize(
    ("event", "rooms", "except_rooms", "volatile", "expected"),
    [
        pytest.param(
            Event("ev", (MIXED_MAP, b"\xff", 300, -200, 70000, 2.5)),
            ["room"],
            ["s1"],
            False,
            ADAPTER_MIXED,
            id="mixed",
        ),
        pytest.param(Event("v"), [], [], True, ADAPTER_VOLATILE, id="volatile"),
    ],
)
def test_hub_writes_the_adapters_bytes(
    event: Event, rooms: list[str], except_rooms: list[str], volatile: bool, expected: str
) -> None:
    data = encode_broadcast("AbC123", event, rooms, except_rooms, volatile=volatile)
    assert data.hex() == expected


def test_own_broadcasts_are_known_by_their_first_bytes() -> None:
    data = encode_broadcast("AbC123", Event("x"), [], [])
    assert data.startswith(own_prefix("AbC123"))
    assert not data.startswith(own_prefix("AbC124"))


def test_a_broadcast_request_from_node() -> None:
    request = Request.decode(bytes.fromhex(BROADCAST_REQUEST))
    assert request.type is RequestType.BROADCAST
    assert request.uid == "AbC123"
    assert request.request_id == "XyZ987"
    assert request.targets() == (frozenset(), frozenset({"x"}))
    assert request.body["packet"]["data"] == ["ev", b"hi"]


@pytest.mark.parametrize(
    ("text", "kind", "uid", "request_id"),
    [
        # JSON.stringify of the adapter's requests and answers, and of the emitter's
        ('{"uid":"AbC123","requestId":"r1","type":5,"opts":{"rooms":["a"],"except":[]}}',
         RequestType.REMOTE_FETCH, "AbC123", "r1"),
        ('{"type":2,"opts":{"rooms":[],"except":[]},"rooms":["x"]}',
         RequestType.REMOTE_JOIN, None, None),
        ('{"requestId":"r1","sockets":[]}', None, None, "r1"),
        ('{"type":8,"requestId":"r2","clientCount":3}',
         RequestType.BROADCAST_CLIENT_COUNT, None, "r2"),
    ],
)  # fmt: skip
def test_json_requests_and_answers(
    text: str, kind: RequestType | None, uid: str | None, request_id: str | None
) -> None:
    request = Request.decode(text.encode())
    assert (request.type, request.uid, request.request_id) == (kind, uid, request_id)


@pytest.mark.parametrize("data", [b"{not json", b'{"type": 99}', b'"a string"'])
def test_malformed_requests_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        Request.decode(data)


@pytest.mark.parametrize(
    "data",
    [
        b'["a list"]',
        msgpack.packb(["uid", {"type": 2, "data": ["x"], "nsp": "/"}]),  # two items
        msgpack.packb(["uid", {"type": 3, "data": ["x"], "nsp": "/"}, {}]),  # an ACK
        msgpack.packb(["uid", {"type": 2, "data": [1], "nsp": "/"}, {}]),  # a number as name
        msgpack.packb(["uid", {"type": 2, "data": ["x"], "nsp": "/other"}, {}]),
        msgpack.packb(["uid", {"type": 2, "data": ["x"]}, {"rooms": "a"}]),  # rooms not a list
        msgpack.packb(["uid", {"type": 2, "data": ["x"]}, {"rooms": [None]}]),
        msgpack.packb(["uid", {"type": 2, "data": [msgpack.ExtType(5, b"")]}, {}]),
        b"\xc1",  # never used in msgpack
        b"\x93\xa1",  # cut short
    ],
)
def test_malformed_broadcasts_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_broadcast(data, "/")


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (HeartbeatType.INITIAL_HEARTBEAT, '{"uid":"AbC123","type":1}'),
        (HeartbeatType.HEARTBEAT, '{"uid":"AbC123","type":2}'),
        (HeartbeatType.ADAPTER_CLOSE, '{"uid":"AbC123","type":13}'),
    ],
)
def test_heartbeats_are_small_json_with_the_cluster_adapters_numbers(
    kind: HeartbeatType, text: str
) -> None:
    assert encode_heartbeat("AbC123", kind).decode() == text
    assert decode_heartbeat(text.encode()) == Heartbeat("AbC123", kind)


@pytest.mark.parametrize(
    "data", [b'{"type":2}', b'{"uid":"","type":2}', b'{"uid":"u","type":7}', b'{"uid":"u"}', b"[]"]
)
def test_malformed_heartbeats_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_heartbeat(data)


def test_a_node_is_known_until_its_goodbye_or_its_silence() -> None:
    peers = Peers(timeout=15.0)
    assert peers.heard("a", now=100.0)
    assert not peers.heard("a", now=101.0)  # known already
    assert peers.heard("b", now=105.0)
    assert peers.alive(now=116.0) == {"a", "b"}
    assert peers.alive(now=116.5) == {"b"}  # a: 15.5 s without a word
    assert not peers.forget("a")
    assert peers.forget("b")  # its goodbye
    assert peers.alive(now=116.5) == frozenset()


def test_a_node_back_on_redis_gives_the_others_a_full_timeout() -> None:
    peers = Peers(timeout=15.0)
    peers.heard("slow", now=100.0)
    # This node was off Redis from 101 to 130, hearing nobody; back at 130.
    peers.refresh(now=130.0)
    assert peers.alive(now=144.0) == {"slow"}  # still counted while it reconnects too
    assert peers.alive(now=146.0) == frozenset()  # never came back
    with pytest.raises(ValueError, match="positive"):
        Peers(timeout=0)


def test_old_notepack_forms_of_undefined_and_array_buffer() -> None:
    packet = {"type": 2, "data": ["x", msgpack.ExtType(0, b"\x00"), msgpack.ExtType(0, b"ab")]}
    data = msgpack.packb(["uid", packet, {}], use_bin_type=True)
    assert decode_broadcast(data, "/").event.args == (None, b"ab")


def test_json_is_written_as_node_writes_it() -> None:
    value: dict[str, Any] = {"requestId": "r", "data": [b"\x01", {"é": (1, 2)}]}
    text = encode_json(value).decode()
    assert text == '{"requestId":"r","data":[{"type":"Buffer","data":[1]},{"é":[1,2]}]}'
    assert json.loads(text)["data"][1] == {"é": [1, 2]}
    with pytest.raises(LocalProtocolError):
        encode_json({"x": object()})
    assert encode_json({"x": object()}, lenient=True).startswith(b'{"x":"<object object')
    with pytest.raises(LocalProtocolError):
        encode_json({"x": float("nan")})


def test_what_msgpack_cannot_hold_is_our_error() -> None:
    with pytest.raises(LocalProtocolError):
        encode_broadcast("u", Event("x", (2**70,)), [], [])


def test_the_public_names_of_the_cluster_package() -> None:
    import hub.cluster

    assert sorted(hub.cluster.__all__) == [
        "ClusterError",
        "ClusterIncomplete",
        "ClusterNamespace",
        "ClusterOperator",
        "ClusterStatus",
        "ClusterTimeout",
        "ClusterUnavailable",
        "RedisCluster",
        "RemoteSocket",
        "ServerEventHandler",
    ]
    assert issubclass(hub.cluster.ClusterTimeout, hub.cluster.ClusterError)
    assert issubclass(hub.cluster.ClusterUnavailable, hub.cluster.ClusterError)
    assert issubclass(hub.cluster.ClusterIncomplete, hub.cluster.ClusterError)
