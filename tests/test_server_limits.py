"""Limits against hostile clients, each with the answer a client gets: too many connections
(503), too many connection attempts from one address (429), an oversize or slow request head
(431 / closed), a body that does not come (408), an idle keep-alive connection (closed), too many
namespaces on one connection, too many events awaiting their ack; and the answers to a HEAD
request and to a malformed one."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from support.sio import RawSio, start_server
from support.wire import refusal

import hub

HANDSHAKE = {"EIO": "4", "transport": "polling"}


async def _handshake(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get("/socket.io/", params=HANDSHAKE)


async def test_over_max_connections_a_new_session_gets_503_until_one_goes(
    nursery: trio.Nursery,
) -> None:
    server = hub.Server(max_connections=2)
    address = await start_server(nursery, server)
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        first = await _handshake(http)
        second = await _handshake(http)
        third = await _handshake(http)
        rejected = await refusal(address, "EIO=4&transport=websocket", path="/socket.io/")
        assert [first.status_code, second.status_code, third.status_code] == [200, 200, 503]
        assert third.json() == {"message": "Too many connections"}
        assert rejected.status_code == 503
        # The sessions already open go on; one closes, and a new one may come in.
        sid = json.loads(first.text[1:])["sid"]
        ping = await http.post("/socket.io/", params={**HANDSHAKE, "sid": sid}, content="1")
        assert ping.status_code == 200
        with trio.fail_after(5):
            while len(server.engine.sockets) > 1:
                await trio.sleep(0.01)
        assert (await _handshake(http)).status_code == 200


async def test_connection_attempts_per_address_are_rate_limited(nursery: trio.Nursery) -> None:
    server = hub.Server(connections_per_second=5, connection_burst=3)
    address = await start_server(nursery, server)
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        statuses = [(await _handshake(http)).status_code for _ in range(4)]
        refused = await _handshake(http)
        assert statuses == [200, 200, 200, 429]
        assert refused.status_code == 429
        assert refused.json() == {"message": "Too many connection attempts"}
        assert refused.headers["Retry-After"] == "1"
        await trio.sleep(0.25)  # a token back after 0.2 s
        assert (await _handshake(http)).status_code == 200
    # The sessions that were let in are all open: the limit cuts no one off.
    assert len(server.engine.sockets) == 4


async def test_an_oversize_request_head_is_431(nursery: trio.Nursery) -> None:
    server = hub.Server(max_header_bytes=2048)
    address = await start_server(nursery, server)
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        big = await http.get("/socket.io/", params=HANDSHAKE, headers={"X-Pad": "x" * 4096})
        fits = await http.get("/socket.io/", params=HANDSHAKE, headers={"X-Pad": "x" * 512})
    assert big.status_code == 431
    assert fits.status_code == 200


async def test_a_head_sent_too_slowly_is_cut_off(nursery: trio.Nursery) -> None:
    server = hub.Server(header_timeout=0.5)
    address = await start_server(nursery, server)
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))

    async def trickle() -> None:  # a slowloris: a header line now and then, never the end
        try:
            await stream.send_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n")
            while True:
                await stream.send_all(b"X-Slow: 1\r\n")
                await trio.sleep(0.1)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    started = trio.current_time()
    with trio.fail_after(5):
        async with trio.open_nursery() as slow:
            slow.start_soon(trickle)
            try:
                answer = await stream.receive_some()
            except trio.BrokenResourceError:
                answer = b""
            slow.cancel_scope.cancel()
    elapsed = trio.current_time() - started
    await stream.aclose()
    assert 0.4 < elapsed < 2, elapsed
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer


async def _raw_exchange(address: str, request: bytes, *, wait: float = 5) -> tuple[bytes, float]:
    """Send ``request`` on a fresh TCP connection; read until the server closes it. Returns
    what came back and how long the server took to close."""
    host, port = address.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    started = trio.current_time()
    answer = b""
    with trio.fail_after(wait):
        await stream.send_all(request)
        while True:
            try:
                data = await stream.receive_some()
            except trio.BrokenResourceError:
                data = b""
            if not data:
                break
            answer += data
    await stream.aclose()
    return answer, trio.current_time() - started


async def test_a_body_that_does_not_come_is_408(nursery: trio.Nursery) -> None:
    server = hub.Server(body_timeout=0.5)
    address = await start_server(nursery, server)
    promised = (
        b"POST /socket.io/?EIO=4&transport=polling&sid=x HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 100\r\n\r\n40"  # 2 bytes of 100, then nothing
    )
    answer, elapsed = await _raw_exchange(address, promised)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 0.4 < elapsed < 2, elapsed


async def test_an_idle_keep_alive_connection_is_closed(nursery: trio.Nursery) -> None:
    server = hub.Server(keepalive_timeout=0.5)
    address = await start_server(nursery, server)
    first = b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n"
    answer, elapsed = await _raw_exchange(address, first)
    # Answered, then kept open for a next request that does not come, then let go.
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert answer.count(b"HTTP/1.1") == 1
    assert 0.4 < elapsed < 2, elapsed


async def test_a_head_request_gets_the_head_and_the_connection_goes_on(
    nursery: trio.Nursery,
) -> None:
    server = hub.Server(keepalive_timeout=0.5)
    address = await start_server(nursery, server)
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        get = await http.get("/socket.io/", params={"EIO": "3", "transport": "polling"})
    both = (
        b"HEAD /socket.io/?EIO=3&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /socket.io/?EIO=3&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answer, _ = await _raw_exchange(address, both)
    assert get.status_code == 400  # a refusal with a body, to a GET
    assert get.content
    head, rest = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert f"content-length: {len(get.content)}".encode() in head.lower()
    # No body after the HEAD's head: the next bytes are the GET's answer, whole.
    assert rest.startswith(b"HTTP/1.1 400 "), rest
    assert rest.endswith(get.content)


async def test_a_malformed_request_is_400_without_repeating_it(nursery: trio.Nursery) -> None:
    server = hub.Server()
    address = await start_server(nursery, server)
    secret = b"eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2lnbmF0dXJl"
    bad = b"GET /socket.io/?token=" + secret + b" HTTP/1.1\r\nHost: x\r\nno colon " + secret
    answer, _ = await _raw_exchange(address, bad + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert secret not in answer


async def test_too_many_namespaces_on_one_connection_are_refused(nursery: trio.Nursery) -> None:
    server = hub.Server(max_namespaces=2)
    server.of(lambda name: True)  # any namespace exists
    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    await client.send("40/a,")
    assert (await client.receive_text()).startswith("40/a,{")
    await client.send("40/b,")
    assert await client.receive_text() == '44/b,{"message":"Too many namespaces"}'
    # The namespaces it has keep working.
    await client.send("41/a,")
    await client.send("40/b,")
    assert (await client.receive_text()).startswith("40/b,{")


async def test_too_many_events_awaiting_their_ack_disconnect_the_socket(
    nursery: trio.Nursery,
) -> None:
    server = hub.Server(max_pending_acks=3)
    release = trio.Event()
    reasons: list[str] = []

    @server.on("slow")
    async def slow(socket: hub.Socket, *args: Any) -> str:
        await release.wait()
        return "done"

    @server.on("disconnect")
    def disconnect(socket: hub.Socket, reason: str) -> None:
        reasons.append(reason)

    address = await start_server(nursery, server)
    client, _ = await RawSio.connected(nursery, address)
    for ack_id in range(3):
        await client.send(f'42{ack_id}["slow"]')
    await client.send('42["slow"]')  # no ack asked: not counted
    await trio.sleep(0.1)
    assert reasons == []
    await client.send('423["slow"]')
    assert await client.receive_text() == "41"
    assert reasons == ["server namespace disconnect"]
