"""hub.protocol: Socket.IO v5 packets on the wire, table-driven.

Each valid case is an exact wire form (the text packet, then its binary attachments) and the
packet it stands for; each malformed case is a list of messages and a fragment of the error.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Any

import pytest

import hub.protocol
from hub.errors import LocalProtocolError, SocketIOError
from hub.protocol import (
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

Wire = list[str | bytes]

P0 = '{"_placeholder":true,"num":0}'
P1 = '{"_placeholder":true,"num":1}'
P2 = '{"_placeholder":true,"num":2}'


def decode_all(messages: Wire, decoder: Decoder | None = None) -> Packet | None:
    decoder = decoder or Decoder()
    result: Packet | None = None
    for message in messages:
        result = decoder.receive(message)
    return result


# (wire, packet): encode(packet) == wire, and decoding wire gives packet.
ROUND_TRIP: list[tuple[Wire, Packet]] = [
    # CONNECT, client side
    (["0"], Connect()),
    (['0{"token":"123"}'], Connect(data={"token": "123"})),
    (["0/custom,"], Connect("/custom")),
    (['0/custom,{"token":"abc"}'], Connect("/custom", {"token": "abc"})),
    (["0{}"], Connect(data={})),
    # CONNECT, server side
    (['0{"sid":"abc"}'], Connect(data={"sid": "abc"})),
    (['0/custom,{"sid":"abc"}'], Connect("/custom", {"sid": "abc"})),
    (
        ['0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}'],
        Connect("/admin", {"sid": "oSO0OpakMV_3jnilAAAA"}),
    ),
    # DISCONNECT
    (["1"], Disconnect()),
    (["1/custom,"], Disconnect("/custom")),
    # EVENT
    (['2["hello",1]'], Event("hello", (1,))),
    (['2["foo"]'], Event("foo")),
    (['2/admin,["bar"]'], Event("bar", namespace="/admin")),
    (['212["foo"]'], Event("foo", id=12)),
    (['20["foo"]'], Event("foo", id=0)),
    (['2/admin,456["project:delete",123]'], Event("project:delete", (123,), "/admin", 456)),
    (
        ['2["message",1,"2",{"3":[true]}]'],
        Event("message", (1, "2", {"3": [True]})),
    ),
    (['29007199254740991["max id"]'], Event("max id", id=2**53 - 1)),
    # key order kept, compact separators, no ASCII escaping
    (
        ['2["é",{"b":1,"a":[null,false,1.5,"😀"]}]'],
        Event("é", ({"b": 1, "a": [None, False, 1.5, "😀"]},)),
    ),
    # ACK
    (["3/admin,456[]"], Ack((), 456, "/admin")),
    (['312["bar"]'], Ack(("bar",), 12)),
    (['3/admin,13["bar"]'], Ack(("bar",), 13, "/admin")),
    (['3456[1,"2",{"3":[false]}]'], Ack((1, "2", {"3": [False]}), 456)),
    # CONNECT_ERROR
    (['4{"message":"Not authorized"}'], ConnectError({"message": "Not authorized"})),
    (
        ['4/random,{"message":"Invalid namespace"}'],
        ConnectError({"message": "Invalid namespace"}, "/random"),
    ),
    (['4{"message":"x","data":{"code":7}}'], ConnectError({"message": "x", "data": {"code": 7}})),
    (['4"a plain string"'], ConnectError("a plain string")),
    # BINARY_EVENT
    ([f'51-["hello",{P0}]', b"\x01\x02"], Event("hello", (b"\x01\x02",))),
    ([f'51-["baz",{P0}]', b"\x01\x02\x03\x04"], Event("baz", (b"\x01\x02\x03\x04",))),
    (
        [f'52-789["message-with-ack",{P0},{P1}]', b"\x01\x02\x03", b"\x04\x05\x06"],
        Event("message-with-ack", (b"\x01\x02\x03", b"\x04\x05\x06"), id=789),
    ),
    (
        [f'52-/admin,["baz",{P0},{P1}]', b"\x01\x02", b"\x03\x04"],
        Event("baz", (b"\x01\x02", b"\x03\x04"), "/admin"),
    ),
    (
        [f'53-/admin,7["nested",{{"a":{P0},"b":[1,{P1}]}},[[{P2}]]]', b"A", b"", b"C"],
        Event("nested", ({"a": b"A", "b": [1, b""]}, [[b"C"]]), "/admin", 7),
    ),
    # BINARY_ACK
    (
        [f"62-789[{P0},{P1}]", b"\x01\x02\x03", b"\x04\x05\x06"],
        Ack((b"\x01\x02\x03", b"\x04\x05\x06"), 789),
    ),
    ([f'61-15["bar",{P0}]', b"\x01\x02\x03\x04"], Ack(("bar", b"\x01\x02\x03\x04"), 15)),
    ([f"61-/admin,1[{P0}]", b"\xff"], Ack((b"\xff",), 1, "/admin")),
    (
        [f'62-3[{{"x":[{P0},{{"y":{P1}}}]}}]', b"0", b"1"],
        Ack(({"x": [b"0", {"y": b"1"}]},), 3),
    ),
]


@pytest.mark.parametrize(("wire", "packet"), ROUND_TRIP)
def test_encode(wire: Wire, packet: Packet) -> None:
    assert encode(packet) == wire


@pytest.mark.parametrize(("wire", "packet"), ROUND_TRIP)
def test_decode(wire: Wire, packet: Packet) -> None:
    assert decode_all(wire) == packet


@pytest.mark.parametrize(("wire", "packet"), ROUND_TRIP)
def test_decode_one_message_at_a_time(wire: Wire, packet: Packet) -> None:
    decoder = Decoder()
    for message in wire[:-1]:
        assert decoder.receive(message) is None
    assert decoder.receive(wire[-1]) == packet
    # and the decoder is ready for the next packet
    assert decoder.receive('2/next,["after"]') == Event("after", namespace="/next")


def test_attachments_are_bytes() -> None:
    packet = decode_all([f'51-["a",{P0}]', b"xyz"])
    assert isinstance(packet, Event)
    assert type(packet.args[0]) is bytes


# Decoded as written, encoded in the canonical form.
DECODE_ONLY: list[tuple[str, Packet]] = [
    # "40/custom" and "41/custom" arrive without the trailing comma.
    ("0/custom", Connect("/custom")),
    ("1/custom", Disconnect("/custom")),
    ("0/", Connect()),
    ("0/,", Connect()),
    ('2/,["a"]', Event("a")),
    # socket.io-parser reads "012" as 12, as Number("012") does.
    ('2007["a"]', Event("a", id=7)),
    ("3/x,0012[]", Ack((), 12, "/x")),
    # The namespace runs to the first comma, whatever it holds.
    ('2/a b?c=d,["a"]', Event("a", namespace="/a b?c=d")),
    # Escapes are read; surrogate pairs are joined.
    ('2["\\u00e9\\ud83d\\ude00"]', Event("é😀")),
    ('2["a",1E3,-0,1e-2]', Event("a", (1000.0, 0, 0.01))),
    # Dicts that are not placeholders (in a non-binary packet, or not `_placeholder: true`).
    (f'2["a",{P0}]', Event("a", ({"_placeholder": True, "num": 0},))),
    ('2["a",{"_placeholder":1,"num":0}]', Event("a", ({"_placeholder": 1, "num": 0},))),
    # Attachment count with a leading zero, as Number("01") reads it.
    (f'501-["a",{P0}]', Event("a", (b"!",))),
]


@pytest.mark.parametrize(("text", "packet"), DECODE_ONLY)
def test_decode_lenient_forms(text: str, packet: Packet) -> None:
    messages: Wire = [text, b"!"] if text.startswith("5") else [text]
    assert decode_all(messages) == packet


# (messages, fragment of the SocketIOError's message)
MALFORMED: list[tuple[Wire, str]] = [
    # The official suite's three: "4abc", "42{}", "42abc[...]" minus the Engine.IO "4".
    (["abc"], "unknown packet type 'a'"),
    (["2{}"], "EVENT payload must be a JSON array, found '{}'"),
    (['2abc["message-with-ack",1,"2",{"3":[false]}]'], "EVENT payload must be a JSON array"),
    # packet type
    ([""], "empty Socket.IO packet"),
    (["7"], "unknown packet type '7'"),
    (["9[]"], "unknown packet type '9'"),
    ([" 2[]"], "unknown packet type ' '"),
    (["٢[]"], "unknown packet type"),
    # CONNECT
    (['0"x"'], "CONNECT payload must be a JSON object, found '\"x\"'"),
    (["0[1]"], "CONNECT payload must be a JSON object"),
    (["0null"], "CONNECT payload must be a JSON object"),
    (["0/custom,12{}"], "CONNECT packet cannot have an ack id"),
    (["0 {}"], "CONNECT payload must be a JSON object, found ' {}'"),
    (["0{}x"], "trailing data after the CONNECT payload at offset 3: 'x'"),
    # DISCONNECT
    (["1{}"], "DISCONNECT packet cannot have a payload"),
    (["1/custom,[]"], "DISCONNECT packet cannot have a payload"),
    (["112"], "DISCONNECT packet cannot have an ack id"),
    # EVENT
    (["2"], "EVENT packet has no payload"),
    (["2/admin,"], "EVENT packet has no payload"),
    (["212"], "EVENT packet has no payload"),
    (['2/admin["a"]'], "EVENT packet has no payload"),  # the namespace ran to the end
    (["2[]"], "EVENT payload must be a non-empty array"),
    (["2[1]"], "EVENT name must be a string, found number"),
    (["2[null]"], "EVENT name must be a string, found null"),
    (["2[true]"], "EVENT name must be a string, found boolean"),
    (['2[["a"]]'], "EVENT name must be a string, found array"),
    (['2"a"'], "EVENT payload must be a JSON array"),
    (['2admin,["a"]'], "EVENT payload must be a JSON array, found 'admin,"),
    (['2 ["a"]'], "EVENT payload must be a JSON array, found ' [\"a\"]'"),
    (['2-1["a"]'], "EVENT payload must be a JSON array, found '-1"),
    (['2["a"] '], "trailing data after the EVENT payload"),
    (['2["a"]["b"]'], "trailing data after the EVENT payload at offset 6"),
    (['2["a"'], "invalid JSON in EVENT payload: Expecting ',' delimiter"),
    (["2[\"a\",'b']"], "invalid JSON in EVENT payload: Expecting value"),
    (['2["a",NaN]'], "invalid JSON in EVENT payload: NaN is not valid JSON"),
    (['2["a",Infinity]'], "Infinity is not valid JSON"),
    (['2["a",-Infinity]'], "-Infinity is not valid JSON"),
    (['2["a",1e400]'], "number '1e400' is out of range"),
    (['2["a","\\ud800"]'], "lone surrogate"),
    (['2["a",{"\\udfff":1}]'], "lone surrogate"),
    (['2["a",' + "1" * 5000 + "]"], "invalid JSON in EVENT payload: Exceeds the limit"),
    (["2" + "[" * 100_000], "EVENT payload is nested too deeply"),
    # reserved event names, as socket.io-parser refuses them
    (['2["connect"]'], "EVENT name 'connect' is reserved"),
    (['2["connect_error",1]'], "EVENT name 'connect_error' is reserved"),
    (['2/admin,1["disconnect"]'], "EVENT name 'disconnect' is reserved"),
    (['2["disconnecting"]'], "EVENT name 'disconnecting' is reserved"),
    (['2["newListener"]'], "EVENT name 'newListener' is reserved"),
    (['2["removeListener"]'], "EVENT name 'removeListener' is reserved"),
    (['2/x,["removeListener"]'], "is reserved"),
    # ack id
    (['29007199254740992["a"]'], "ack id is too large: '9007199254740992' (at most 2**53-1)"),
    (['299999999999999999["a"]'], "ack id is too large"),
    (["3" + "1" * 5000 + "[]"], "ack id is too large"),
    # ACK
    (["3[]"], "ACK packet has no ack id"),
    (['3/admin,["a"]'], "ACK packet has no ack id"),
    (["3"], "ACK packet has no ack id"),
    (["312"], "ACK packet has no payload"),
    (["312{}"], "ACK payload must be a JSON array, found '{}'"),
    (['312"a"'], "ACK payload must be a JSON array"),
    # CONNECT_ERROR
    (["4"], "CONNECT_ERROR packet has no payload"),
    (["4[]"], "CONNECT_ERROR payload must be a JSON object or string"),
    (["41"], "CONNECT_ERROR packet cannot have an ack id"),
    # attachment count
    (['5["a"]'], "BINARY_EVENT packet needs '<attachment count>-' after its type, found '[\"a\"]'"),
    (['51["a"]'], "BINARY_EVENT packet needs '<attachment count>-'"),
    (["5"], "BINARY_EVENT packet needs '<attachment count>-'"),
    (["5x-"], "found 'x-'"),
    (['5-["a"]'], "BINARY_EVENT packet has no attachment count before '-'"),
    (['50-["a"]'], "BINARY_EVENT packet announces 0 attachments"),
    (["5999999999-"], "BINARY_EVENT packet announces too many attachments: '999999999'"),
    (['511-["a"]'], "announces too many attachments: '11' (at most 10)"),
    (["5" + "9" * 5000 + "-"], "announces too many attachments"),
    (["6[1]"], "BINARY_ACK packet needs '<attachment count>-'"),
    (["61-[1]"], "BINARY_ACK packet has no ack id"),
    (["61-1"], "BINARY_ACK packet has no payload"),
    (["51-"], "BINARY_EVENT packet has no payload"),
    (['51-{"a":1}'], "BINARY_EVENT payload must be a JSON array"),
    (["51-[]"], "BINARY_EVENT payload must be a non-empty array"),
    ([f"51-[{P0}]"], "BINARY_EVENT name must be a string, found object"),
    ([f'51-["connect",{P0}]'], "BINARY_EVENT name 'connect' is reserved"),
    # placeholders
    (['51-["a"]'], "BINARY_EVENT announces 1 attachment(s) but has no placeholder with num 0"),
    ([f'52-["a",{P0}]'], "has no placeholder with num 1"),
    ([f'52-["a",{P1}]'], "has no placeholder with num 0"),
    ([f'51-["a",{P1}]'], "placeholder num 1 is out of range: the packet announces 1"),
    (['51-["a",{"_placeholder":true,"num":-1}]'], "placeholder num -1 is out of range"),
    ([f'52-["a",{P0},{P0}]'], "BINARY_EVENT has two placeholders with num 0"),
    ([f'62-1[{P0},{{"x":{P0}}}]'], "BINARY_ACK has two placeholders with num 0"),
    (['51-["a",{"_placeholder":true,"num":"0"}]'], "'num' must be an integer, found str"),
    (['51-["a",{"_placeholder":true,"num":0.0}]'], "'num' must be an integer, found float"),
    (['51-["a",{"_placeholder":true,"num":true}]'], "'num' must be an integer, found bool"),
    (['51-["a",{"_placeholder":true,"num":null}]'], "'num' must be an integer, found NoneType"),
    (['51-["a",{"_placeholder":true}]'], "BINARY_EVENT placeholder has no 'num'"),
    (['51-["a",{"_placeholder":true,"num":0,"x":1}]'], "placeholder has unexpected keys: ['x']"),
    # message order
    ([b"\x01"], "got a binary message while no attachment is expected"),
    (['2["a"]', b"\x01"], "got a binary message while no attachment is expected"),
    ([f'51-["a",{P0}]', b"x", b"y"], "got a binary message while no attachment is expected"),
    ([f'51-["a",{P0}]', '2["b"]'], "got a text message while 1 binary attachment(s)"),
    ([f'52-["a",{P0},{P1}]', b"x", "0"], "got a text message while 1 binary attachment(s)"),
    ([f'52-["a",{P0},{P1}]', f'51-["a",{P0}]'], "while 2 binary attachment(s) are still"),
]


@pytest.mark.parametrize(("messages", "fragment"), MALFORMED)
def test_malformed(messages: Wire, fragment: str) -> None:
    decoder = Decoder()
    *before, last = messages
    for message in before:
        decoder.receive(message)
    with pytest.raises(SocketIOError) as caught:
        decoder.receive(last)
    assert fragment in caught.value.message
    assert "\n" not in caught.value.message
    assert len(caught.value.message) < 200


@pytest.mark.parametrize(("messages", "fragment"), MALFORMED)
def test_decoder_is_dead_after_an_error(messages: Wire, fragment: str) -> None:
    decoder = Decoder()
    *before, last = messages
    for message in before:
        decoder.receive(message)
    with pytest.raises(SocketIOError):
        decoder.receive(last)
    with pytest.raises(LocalProtocolError, match="after the peer broke the protocol"):
        decoder.receive("0")


@pytest.mark.parametrize(
    ("max_attachments", "count", "ok"),
    [(10, 10, True), (10, 11, False), (2, 2, True), (2, 3, False), (0, 1, False), (100, 12, True)],
)
def test_max_attachments(max_attachments: int, count: int, ok: bool) -> None:
    placeholders = ",".join(f'{{"_placeholder":true,"num":{k}}}' for k in range(count))
    messages: Wire = [f'5{count}-["a",{placeholders}]', *(bytes([k]) for k in range(count))]
    decoder = Decoder(max_attachments=max_attachments)
    if ok:
        assert decode_all(messages, decoder) == Event("a", tuple(bytes([k]) for k in range(count)))
    else:
        with pytest.raises(SocketIOError, match="too many attachments"):
            decoder.receive(messages[0])


def test_negative_max_attachments() -> None:
    with pytest.raises(LocalProtocolError):
        Decoder(max_attachments=-1)


def test_attachment_setters_follow_num_not_position() -> None:
    text = f'52-["a",{{"later":{P1}}},{P0}]'
    assert decode_all([text, b"zero", b"one"]) == Event("a", ({"later": b"one"}, b"zero"))


def test_decoder_handles_many_packets() -> None:
    decoder = Decoder()
    for k in range(3):
        assert decoder.receive(f'2{k}["a"]') == Event("a", id=k)
        assert decoder.receive(f"61-{k}[{P0}]") is None
        assert decoder.receive(bytes([k])) == Ack((bytes([k]),), k)


# --- encoding ---------------------------------------------------------------------------------

# Accepted inputs that encode to a canonical form.
ENCODE_ONLY: list[tuple[Packet, Wire]] = [
    (Event("a", (bytearray(b"ba"),)), [f'51-["a",{P0}]', b"ba"]),
    (Event("a", (memoryview(b"mv"),)), [f'51-["a",{P0}]', b"mv"]),
    (Event("a", ((1, (2, b"t")),)), [f'51-["a",[1,[2,{P0}]]]', b"t"]),
    (Ack([b"x", {"k": b"y"}], 2), [f'62-2[{P0},{{"k":{P1}}}]', b"x", b"y"]),  # type: ignore[arg-type]
    (Event("a", ({"_placeholder": True},)), ['2["a",{"_placeholder":true}]']),
    (
        Event("a", ({"_placeholder": False}, b"b")),
        [f'51-["a",{{"_placeholder":false}},{P0}]', b"b"],
    ),
    (Connect("/"), ["0"]),
    (Event("a", (1.0, 1e16, -0.0)), ['2["a",1.0,1e+16,-0.0]']),
]


@pytest.mark.parametrize(("packet", "wire"), ENCODE_ONLY)
def test_encode_canonical(packet: Packet, wire: Wire) -> None:
    encoded = encode(packet)
    assert encoded == wire
    assert all(type(item) is bytes for item in encoded[1:])


class NotJSON:
    pass


# (packet, fragment of the LocalProtocolError's message)
UNENCODABLE: list[tuple[Any, str]] = [
    (Event("connect"), "'connect' is a reserved event name"),
    (Event("disconnecting"), "reserved event name"),
    (Event("newListener"), "reserved event name"),
    (Event(1), "event name must be a str, not int"),  # type: ignore[arg-type]
    (Event("a", namespace="admin"), "namespace must start with '/'"),
    (Event("a", namespace=""), "namespace must start with '/'"),
    (Disconnect("/a,b"), "namespace cannot contain ','"),
    (Connect(None), "namespace must be a str"),  # type: ignore[arg-type]
    (Event("a", id=-1), "ack id must be in 0..2**53-1, not -1"),
    (Ack((), 2**53), "ack id must be in 0..2**53-1"),
    (Ack((), True), "ack id must be an int, not bool"),
    (Event("a", id=1.0), "ack id must be an int, not float"),  # type: ignore[arg-type]
    (Event("a", (float("nan"),)), "payload is not JSON"),
    (Event("a", (float("inf"),)), "payload is not JSON"),
    (Ack((-float("inf"),), 1), "payload is not JSON"),
    (Event("a", (NotJSON(),)), "cannot encode a NotJSON as JSON"),
    (Event("a", ({1, 2},)), "cannot encode a set as JSON"),
    (Event("a", ({(1, 2): "tuple key"},)), "payload is not JSON"),
    (Event("a", ("\ud800",)), "lone surrogate"),
    (Connect(data=["a"]), "CONNECT payload must be a dict or None, not list"),  # type: ignore[arg-type]
    (Connect(data={"b": b"x"}), "CONNECT payload cannot hold binary data"),
    (ConnectError(None), "CONNECT_ERROR payload must be a dict or str, not NoneType"),
    (ConnectError(["x"]), "CONNECT_ERROR payload must be a dict or str"),
    (ConnectError({"data": b"x"}), "CONNECT_ERROR payload cannot hold binary data"),
    (Event("a", ({"_placeholder": True, "num": 0}, b"x")), "'_placeholder': True cannot be sent"),
    (Ack(([{"_placeholder": True}], b"x"), 1), "'_placeholder': True cannot be sent"),
    ("2[]", "not a Socket.IO packet: str"),
]


@pytest.mark.parametrize(("packet", "fragment"), UNENCODABLE)
def test_unencodable(packet: Any, fragment: str) -> None:
    with pytest.raises(LocalProtocolError) as caught:
        encode(packet)
    assert fragment in str(caught.value)


def test_encode_circular_reference() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(LocalProtocolError, match="payload is not JSON"):
        encode(Event("a", (loop,)))


def test_encode_too_deep() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(LocalProtocolError, match="nested too deeply"):
        encode(Event("a", (deep,)))


def test_placeholder_lookalike_key_in_a_string_is_fine() -> None:
    # The key text occurs in a string (escaped quotes); only real dicts are refused.
    args = ('"_placeholder":', b"x")
    text, data = encode(Event("a", args))
    assert data == b"x"
    assert decode_all([text, data]) == Event("a", args)


def test_packets_are_frozen() -> None:
    packet = Event("a")
    with pytest.raises(AttributeError):
        packet.name = "b"  # type: ignore[misc]


def test_packet_type_values() -> None:
    assert [(t.name, int(t)) for t in PacketType] == [
        ("CONNECT", 0),
        ("DISCONNECT", 1),
        ("EVENT", 2),
        ("ACK", 3),
        ("CONNECT_ERROR", 4),
        ("BINARY_EVENT", 5),
        ("BINARY_ACK", 6),
    ]


def test_public_api() -> None:
    assert hub.protocol.__all__ == [
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


def test_sans_io() -> None:
    # "Protocol layers are sans-I/O: they never import trio and never read a clock."
    allowed = {
        "__future__",
        "attrs",
        "collections.abc",
        "enum",
        "hub.errors",
        "hub.protocol.binary",
        "hub.protocol.packets",
        "json",
        "math",
        "re",
        "typing",
    }
    package = pathlib.Path(hub.protocol.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {node.module or ""}
            else:
                continue
            assert names <= allowed, (path.name, names - allowed)
