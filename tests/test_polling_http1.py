"""The lean HTTP/1.1 reader and writer of the native server's common requests, held against h11
(which reads everything else): the same requests seen, the same bytes written, and every head
it does not accept left to h11. Then over a loopback socket: heads cut anywhere, bare LFs.
"""

from __future__ import annotations

import json

import h11
import pytest
import trio
from support.wire import WAIT, RawHttp, start_engine

from hub.conformance import EchoHandler
from hub.transport.http import Request, Response, encode_response, parse_request_head

ACCEPTED = [
    b"GET /engine.io/?EIO=4&transport=polling&sid=abc HTTP/1.1\r\nHost: 127.0.0.1:3000\r\n"
    b"Connection: keep-alive",
    b"POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nhost: a\r\n"
    b"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 12",
    b"GET /a%20b?q=%2F HTTP/1.1\r\nHost: a\r\nUser-Agent:   node  \t\r\nX-Empty:\r\n"
    b"Accept: */*\r\nCookie: a=1; b=2",
    b"OPTIONS /engine.io/ HTTP/1.1\r\nHost: a\r\nOrigin: http://x\r\nConnection: Keep-Alive",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Latin: caf\xe9",
]

LEFT_TO_H11 = [
    b"GET / HTTP/1.0\r\nHost: a",  # another version
    b"HEAD / HTTP/1.1\r\nHost: a",  # the head of a GET, no body
    b"PUT / HTTP/1.1\r\nHost: a",
    b"GET / HTTP/1.1",  # no Host (h11: 400)
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked",
    b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two",  # obs-fold
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x",
    b"GET / HTTP/1.1\r\nHost : a",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b",
    b"GET  / HTTP/1.1\r\nHost: a",
    b"GET /a b HTTP/1.1\r\nHost: a",
    b"GET * HTTP/1.1\r\nHost: a",
    b"\r\nGET / HTTP/1.1\r\nHost: a",
    b"get / HTTP/1.1\r\nHost: a",
]


def by_h11(head: bytes) -> Request:
    server = h11.Connection(h11.SERVER)
    server.receive_data(head + b"\r\n\r\n")
    event = server.next_event()
    assert isinstance(event, h11.Request)
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
    return Request.build(event.method.decode(), event.target.decode("latin-1"), headers)


@pytest.mark.parametrize("head", ACCEPTED)
def test_accepted_heads_read_as_h11_reads_them(head: bytes) -> None:
    parsed = parse_request_head(head)
    assert parsed is not None
    lean = Request.build(parsed.method, parsed.target, parsed.headers)
    expected = by_h11(head)
    assert (lean.method, lean.path, lean.raw_path, lean.query, lean.headers) == (
        expected.method,
        expected.path,
        expected.raw_path,
        expected.query,
        expected.headers,
    )
    length = expected.headers.get("content-length")
    assert parsed.content_length == (int(length) if length else 0)


@pytest.mark.parametrize("head", LEFT_TO_H11)
def test_other_heads_are_left_to_h11(head: bytes) -> None:
    assert parse_request_head(head) is None


def by_h11_writer(response: Response, *, head: bool = False) -> bytes:
    """What h11 writes for ``response`` (the native server's h11 path) after a kept-alive GET
    (HEAD when ``head``)."""
    server = h11.Connection(h11.SERVER)
    method = b"HEAD" if head else b"GET"
    server.receive_data(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(server.next_event(), h11.Request)
    headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in response.headers]
    headers.append((b"Content-Length", str(len(response.body)).encode()))
    reason = b"OK" if response.status == 200 else b"Bad Request"
    data = server.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    assert data is not None
    if response.body and not head:
        data += server.send(h11.Data(data=response.body)) or b""
    return data + (server.send(h11.EndOfMessage()) or b"")


RESPONSES = [
    Response.text(200, "4hello\x1e4€"),
    Response.text(200, "ok", (("Access-Control-Allow-Origin", "*"),)),
    Response.json(400, {"code": 1, "message": "Session ID unknown"}),
    Response(200, (("X-Empty", ""),), b""),
]


@pytest.mark.parametrize("response", RESPONSES)
@pytest.mark.parametrize("head", [False, True])
def test_responses_are_written_as_h11_writes_them(response: Response, head: bool) -> None:
    assert encode_response(response, head=head) == by_h11_writer(response, head=head)


@pytest.mark.parametrize(
    "headers",
    [(("X-Bad", "a\r\nInjected: 1"),), (("X-Bad", "a\nb"),), (("Bad Name", "x"),), (("X", "€"),)],
)
def test_invalid_response_headers_are_not_written(headers: tuple[tuple[str, str], ...]) -> None:
    assert encode_response(Response(200, headers, b"x")) is None


# --- over a loopback socket --------------------------------------------------------------------


def responses_in(data: bytes) -> list[bytes]:
    """The bodies of the whole responses (with a Content-Length) at the start of ``data``."""
    bodies = []
    while (end := data.find(b"\r\n\r\n")) >= 0:
        head = data[:end].lower()
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        if len(data) < end + 4 + length:
            break
        bodies.append(data[end + 4 : end + 4 + length])
        data = data[end + 4 + length :]
    return bodies


async def test_requests_sent_a_byte_at_a_time(nursery: trio.Nursery) -> None:
    _, address = await start_engine(nursery, EchoHandler())
    conn = await RawHttp.connect(address)
    _, body = await conn.request("GET", "/engine.io/?EIO=4&transport=polling")
    target = f"/engine.io/?EIO=4&transport=polling&sid={json.loads(body[1:])['sid']}"
    post = (
        f"POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n4a\x1e4bcde".encode()
        + f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    )
    for index in range(len(post)):
        await conn.stream.send_all(post[index : index + 1])
        await trio.sleep(0.001)  # one read of the server per byte
    data = b""
    bodies: list[bytes] = []
    with trio.fail_after(WAIT):
        while len(bodies) < 2:
            data += await conn.stream.receive_some(65536)
            bodies = responses_in(data)
    assert bodies == [b"ok", b"4a\x1e4bcde"]


async def test_head_with_bare_line_feeds_is_read_by_h11(nursery: trio.Nursery) -> None:
    _, address = await start_engine(nursery, EchoHandler())
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\nHost: t\n\n")
    with trio.fail_after(WAIT):
        data = await stream.receive_some(65536)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b'\r\n\r\n0{"sid":' in data
    await stream.aclose()


async def test_pipelined_behind_a_held_get_read_by_h11(nursery: trio.Nursery) -> None:
    # The head of the GET is h11's (its Connection header has another token): the bytes of the
    # POST behind it sit in h11's buffer while the GET is held, and are read after its answer.
    _, address = await start_engine(nursery, EchoHandler())
    first = await RawHttp.connect(address)
    _, body = await first.request("GET", "/engine.io/?EIO=4&transport=polling")
    target = f"/engine.io/?EIO=4&transport=polling&sid={json.loads(body[1:])['sid']}"
    await first.stream.send_all(
        f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, x\r\n\r\n".encode()
        + f"POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n4x".encode()
    )
    await trio.sleep(0.05)
    second = await RawHttp.connect(address)
    assert await second.request("POST", target, b"4y") == (200, b"ok")
    data = b""
    with trio.fail_after(WAIT):
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"ok"):
            data += await first.stream.receive_some(65536)
    assert data.index(b"\r\n\r\n4y") < data.index(b"\r\n\r\nok")
