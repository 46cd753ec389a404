"""The native listener under fuzzing: HTTP heads and bodies (h11), and WebSocket frames after a
valid upgrade (wsproto), sent with raw sockets to the conformance app on 127.0.0.1
(``tests/fuzz``; ``HUB_FUZZ_PROFILE=long`` for more examples).

After every test the server has logged no error, a bystander WebSocket client has had every
message echoed within a second all along, and a new client still gets its handshake and echo.
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fuzz import campaigns, examples, live, mutate
from hypothesis import given
from hypothesis import strategies as st

from hub.engineio import Packet, PacketType, decode_payload, encode_payload
from hub.transport.native import Limits

randoms = st.integers(0, 2**64).map(random.Random)
Server = live.ServerThread[tuple[str, int]]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with live.conformance_thread() as thread:
        yield thread


# Function-scoped on purpose: the check after the yield runs once per test, after all its
# examples (the profiles let hypothesis accept that).
@pytest.fixture
def http(server: Server) -> Iterator[live.HttpTarget]:
    target = live.HttpTarget(server.value)
    yield target
    _still_serving(server, target)


@pytest.fixture
def ws(server: Server) -> Iterator[live.WsTarget]:
    yield live.WsTarget(server.value)
    _still_serving(server, live.HttpTarget(server.value))


def _still_serving(server: Server, http: live.HttpTarget) -> None:
    server.check()
    stats = server.notes
    assert stats["failure"] is None, f"the bystander client failed: {stats['failure']}"
    assert stats["echoes"] > 0
    http.healthy()


# --- HTTP -----------------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x1e"), max_size=20)
messages = st.lists(
    st.builds(Packet, st.just(PacketType.MESSAGE), _text | st.binary(max_size=20)),
    min_size=1,
    max_size=6,
)


@examples(20)
@given(messages)
def test_polling_round_trip(http: live.HttpTarget, sent: list[Packet]) -> None:
    """Valid input: a POST's packets come back, equal, from the next GETs."""
    sid = http.open_session()
    target = f"/engine.io/?EIO=4&transport=polling&sid={sid}"
    assert http.request("POST", target, encode_payload(sent).encode()) == (200, b"ok")
    echoed: list[Packet] = []
    while len(echoed) < len(sent):
        status, body = http.request("GET", target)
        assert status == 200
        for packet in decode_payload(body, max_payload=len(body)):
            if packet.type is PacketType.PING:  # the heartbeat, every 300 ms here
                assert http.request("POST", target, b"3") == (200, b"ok")
            else:
                echoed.append(packet)
    assert echoed == sent


@examples(60)
@given(st.binary(min_size=1, max_size=300))
def test_random_bytes_get_a_400_or_a_close(http: live.HttpTarget, data: bytes) -> None:
    assert http.send(data).statuses in ((), (400,))


@examples(60)
@given(randoms)
def test_mutated_requests(http: live.HttpTarget, rng: random.Random) -> None:
    """Requests (several in a row, chunked bodies, upgrades...) with bytes flipped, inserted,
    deleted, repeated: a well-formed answer of the listener's statuses (never a 5xx but 501
    for an unknown transfer coding), and the connection closed once the input ended."""
    campaigns.http(rng, http)


@examples(25)
@given(randoms)
def test_mutated_bodies_on_a_live_session(http: live.HttpTarget, rng: random.Random) -> None:
    # 200 "ok", or the payload decoder's 400 (or 413), behind h11 and the engine.
    campaigns.http_session_body(rng, http)


def test_a_head_over_the_limit_in_pieces_is_431(http: live.HttpTarget) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * Limits().max_header_bytes
    with socket.create_connection(http.address) as sock:
        sock.sendall(head[:1000])
        time.sleep(0.05)
        assert live.parse_responses(live.send_and_finish(sock, head[1000:])).statuses == (431,)


def test_a_head_over_the_limit_at_once_is_431(http: live.HttpTarget) -> None:
    pad = b"a" * (Limits().max_header_bytes + 4000)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad + b"\r\n\r\n"
    assert http.send(head).statuses == (431,)


BAD_HANDSHAKES = [
    pytest.param(live.UPGRADE.replace(b"Version: 13", b"Version: 8"), id="version-8"),
    pytest.param(
        live.UPGRADE.replace(b"Sec-WebSocket-Key: ", b"X-Key: "), id="no-sec-websocket-key"
    ),
    pytest.param(
        live.UPGRADE.replace(b"/engine.io/", b"/socket.io/").replace(b"Version: 13", b"Version: "),
        id="empty-version",
    ),
]


@pytest.mark.parametrize("request_head", BAD_HANDSHAKES)
def test_a_bad_websocket_handshake_is_a_400_without_a_traceback(
    server: Server, http: live.HttpTarget, request_head: bytes
) -> None:
    before = server.log.known["bad-handshake-traceback"]
    assert http.send(request_head).statuses == (400,)
    assert server.log.known["bad-handshake-traceback"] == before


# --- WebSocket ------------------------------------------------------------------------------

frame_items = st.lists(
    st.one_of(
        st.tuples(st.just("text"), _text, st.booleans()),
        st.tuples(st.just("binary"), st.binary(max_size=300), st.booleans()),
        st.tuples(st.just("ping"), st.binary(max_size=125), st.just(False)),
    ),
    max_size=8,
)


@examples(25)
@given(frame_items)
def test_websocket_round_trip(ws: live.WsTarget, items: list[tuple[str, Any, bool]]) -> None:
    """Valid input: messages (some fragmented) come back equal and in order, and pings get
    their pong. (The input ends without a Close: see test_a_ping_then_a_close_in_one_read.)"""
    rng = random.Random(0)
    frames = b""
    expected: list[str | bytes] = []
    pings: list[bytes] = []
    for kind, value, fragmented in items:
        if kind == "ping":
            frames += mutate.frame(rng, 0x9, value)
            pings.append(value)
            continue
        opcode, data = (0x1, ("4" + value).encode()) if kind == "text" else (0x2, value)
        expected.append("4" + value if kind == "text" else value)
        cut = len(data) // 2 if fragmented else len(data)
        if cut < len(data):
            frames += mutate.frame(rng, opcode, data[:cut], fin=False)
            frames += mutate.frame(rng, 0x0, data[cut:])
        else:
            frames += mutate.frame(rng, opcode, data)
    outcome = ws.send(frames)
    assert [m for m in outcome.messages[1:] if m != "2"] == expected
    assert list(outcome.pongs) == pings


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
def test_a_close_is_answered_with_its_code(ws: live.WsTarget, code: int) -> None:
    outcome = ws.send(
        _frame(0x1, b"4hi") + _frame(0x8, live.frame_close(code, b"bye")), frozenset({code})
    )
    assert outcome.messages[1:] == ("4hi",)
    assert outcome.close_code == code


@examples(60)
@given(randoms)
def test_mutated_frames(ws: live.WsTarget, rng: random.Random) -> None:
    """Frames with bytes changed, or random header fields (opcodes, RSV bits, lengths, masks):
    valid frames from the server, the client's own close code or a protocol one (never 1011),
    and the connection closed once the input ended."""
    campaigns.websocket(rng, ws)


@examples(40)
@given(st.binary(min_size=1, max_size=300))
def test_random_bytes_after_the_upgrade(ws: live.WsTarget, data: bytes) -> None:
    ws.send(data, campaigns.client_close_codes(data))


@examples(40)
@given(randoms)
def test_mutated_socketio_packets_over_the_wire(server: Server, rng: random.Random) -> None:
    # The Socket.IO decoder behind the listener and the engine, with a server's namespaces,
    # handlers and acks after it (an ack that echoes what decoded, for one).
    campaigns.socketio_wire(rng, live.WsTarget(server.value, "/socket.io/"))
    server.check()


def _frame(opcode: int, data: bytes, **fields: Any) -> bytes:
    return mutate.frame(random.Random(0), opcode, data, **fields)


INVALID_FRAMES = [
    pytest.param(_frame(0x1, b"4\xff\xfe"), 1007, id="text-not-utf8"),
    pytest.param(_frame(0x1, b"4x", rsv=4), 1002, id="rsv1-without-extension"),
    pytest.param(_frame(0x1, b"4x", masked=False), 1002, id="unmasked"),
    pytest.param(_frame(0x3, b""), 1002, id="reserved-opcode"),
    pytest.param(_frame(0x8, live.frame_close(999)), 1002, id="close-code-999"),
    pytest.param(_frame(0x9, b"p" * 126), 1002, id="control-over-125-bytes"),
    pytest.param(_frame(0x9, b"p", fin=False), 1002, id="fragmented-ping"),
    pytest.param(_frame(0x0, b"4x"), 1002, id="continuation-without-start"),
]


@pytest.mark.parametrize(("frame", "code"), INVALID_FRAMES)
def test_an_invalid_frame_is_answered_with_its_close_code(
    ws: live.WsTarget, frame: bytes, code: int
) -> None:
    """RFC 6455 7.1.7: the connection is failed with a Close frame carrying the code (a
    listener that just dropped the TCP connection left the client with 1006)."""
    assert ws.send(_frame(0x1, b"4before") + frame).close_code == code


def test_a_ping_then_a_close_in_one_read(ws: live.WsTarget) -> None:
    # Regression: the Close parsed ahead of the Ping's Pong made the Pong fail, with a
    # traceback in the log and no Close answered.
    outcome = ws.send(_frame(0x9, b"p") + _frame(0x8, live.frame_close(1000)), frozenset({1000}))
    assert outcome.pongs == (b"p",)
    assert outcome.close_code == 1000


# --- Socket.IO over the wire ----------------------------------------------------------------


def test_a_payload_too_deep_to_echo_closes_the_session_quietly(server: Server) -> None:
    """Regression: ``message-with-ack`` with ~970 levels of nesting decoded, and the server's
    ack (the same arguments) failed to encode: an error in the log, no answer. Now the
    decoder refuses it and the session is closed like for any invalid packet."""
    target = live.WsTarget(server.value, "/socket.io/")
    sock, rest = target.open()
    rng = random.Random(0)
    with sock:
        sock.sendall(mutate.frame(rng, 0x1, b"40"))
        received = rest
        deadline = time.monotonic() + live.WAIT
        while b'40{"sid":' not in received and time.monotonic() < deadline:
            received += sock.recv(65536)
        depth = 970
        nested = b"[" * depth + b"]" * depth
        event = b'421["message-with-ack",' + nested + b"]"
        received += live.send_and_finish(sock, mutate.frame(rng, 0x1, event))
    outcome = live.parse_frames(received)
    assert outcome.messages[-1] == "1"  # the Engine.IO close
    assert outcome.close_code == 1000
    assert not any(isinstance(m, str) and m.startswith("43") for m in outcome.messages)
    server.check()
