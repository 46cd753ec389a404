"""The Engine.IO endpoint over a loopback socket: raw HTTP (httpx, h11) and WebSocket frames
(trio-websocket) against the real native server; and the heartbeat on trio's mock clock, driving
:meth:`EngineServer.handle_http` with :class:`Request` objects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
import trio.testing
import wsproto.events as ws_events
from support.wire import (
    Poller,
    RawHttp,
    RawWs,
    closed_code,
    connect_ws,
    error_body,
    receive,
    refusal,
    start_engine,
)

import hub
from hub.conformance import EchoHandler, serve_conformance
from hub.engineio import SessionOptions
from hub.transport.engine import Cors, EngineOptions, EngineServer, EngineSocket
from hub.transport.http import Request, Response
from hub.transport.native import Limits

PING_INTERVAL = 0.3  # the conformance app's values
PING_TIMEOUT = 0.2
MAX_PAYLOAD = 1_000_000


async def conformance(nursery: trio.Nursery) -> str:
    """Start the conformance app on a free port; returns ``host:port``."""
    host, port = await nursery.start(serve_conformance, "127.0.0.1", 0)
    return f"{host}:{port}"


@pytest.fixture
async def address(nursery: trio.Nursery) -> str:
    return await conformance(nursery)


@pytest.fixture
async def http(address: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{address}") as client:
        yield client


@pytest.fixture
def poller(http: httpx.AsyncClient) -> Poller:
    return Poller(http)


# --- handshake ------------------------------------------------------------------------------

# (method, query, status, engine.io code, message)
HANDSHAKE_ERRORS: list[tuple[str, str, int, int, str]] = [
    ("GET", "transport=polling", 400, 5, "Unsupported protocol version"),
    ("GET", "EIO=3&transport=polling", 400, 5, "Unsupported protocol version"),
    ("GET", "EIO=5&transport=polling", 400, 5, "Unsupported protocol version"),
    ("GET", "EIO=abc&transport=polling", 400, 5, "Unsupported protocol version"),
    ("GET", "EIO=4", 400, 0, "Transport unknown"),
    ("GET", "EIO=4&transport=abc", 400, 0, "Transport unknown"),
    ("GET", "EIO=4&transport=", 400, 0, "Transport unknown"),
    ("POST", "EIO=4&transport=polling", 400, 2, "Bad handshake method"),
    ("PUT", "EIO=4&transport=polling", 400, 2, "Bad handshake method"),
    ("DELETE", "EIO=4&transport=polling", 400, 2, "Bad handshake method"),
    ("GET", "EIO=4&transport=polling&sid=unknown", 400, 1, "Session ID unknown"),
    ("POST", "EIO=4&transport=polling&sid=unknown", 400, 1, "Session ID unknown"),
    ("GET", "EIO=4&transport=websocket", 400, 3, "WebSocket handshake expected"),
]


@pytest.mark.parametrize(("method", "query", "status", "code", "message"), HANDSHAKE_ERRORS)
async def test_handshake_errors(
    http: httpx.AsyncClient, method: str, query: str, status: int, code: int, message: str
) -> None:
    response = await http.request(method, f"/engine.io/?{query}", content=b"4hello")
    assert response.status_code == status
    assert error_body(response) == {"code": code, "message": message}


async def test_polling_handshake(http: httpx.AsyncClient) -> None:
    response = await http.get("/engine.io/?EIO=4&transport=polling")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=UTF-8"
    assert response.text[0] == "0"
    fields = json.loads(response.text[1:])
    assert list(fields) == ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]
    assert fields["upgrades"] == ["websocket"]
    assert (fields["pingInterval"], fields["pingTimeout"], fields["maxPayload"]) == (
        300,
        200,
        1000000,
    )
    assert isinstance(fields["sid"], str)
    assert len(fields["sid"]) >= 16
    # The open packet is alone in its body (no separator, nothing queued behind it).
    assert "\x1e" not in response.text


async def test_polling_only_endpoint_offers_no_upgrade(nursery: trio.Nursery) -> None:
    # engine.io: "upgrades" lists the transports the client may upgrade to; a WebSocket the
    # endpoint would refuse ("Transport unknown") must not be offered.
    _, address = await start_engine(nursery, EchoHandler(), EngineOptions(transports=("polling",)))
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        fields = await Poller(http).handshake()
    rejected = await refusal(address, "EIO=4&transport=websocket")
    assert json.loads(rejected.body or b"{}")["code"] == 0
    assert fields["upgrades"] == []


async def test_websocket_handshake(nursery: trio.Nursery, address: str) -> None:
    ws = await connect_ws(nursery, address)
    message = await receive(ws)
    assert isinstance(message, str)
    assert message[0] == "0"
    fields = json.loads(message[1:])
    assert list(fields) == ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]
    assert fields["upgrades"] == []
    assert fields["pingInterval"] == 300


async def test_websocket_handshake_errors(address: str) -> None:
    # (query, code): the WebSocket handshake is refused with the engine.io error body.
    cases = [
        ("transport=websocket", 5),
        ("EIO=4&transport=abc", 0),
        ("EIO=4&transport=websocket&sid=unknown", 1),
        ("EIO=4&transport=polling", 3),
    ]
    for query, code in cases:
        rejected = await refusal(address, query)
        assert rejected.status_code == 400
        assert rejected.body is not None
        assert json.loads(rejected.body)["code"] == code


# --- long-polling -----------------------------------------------------------------------------

# (POST body, what the next GET returns): every echo of one POST comes back in one body.
ECHOES: list[tuple[bytes, bytes]] = [
    (b"4hello", b"4hello"),
    (b"4", b"4"),
    ("4é€𝄞".encode(), "4é€𝄞".encode()),
    (b"bAQIDBA==", b"bAQIDBA=="),
    (b"4a\x1e4b\x1e4c", b"4a\x1e4b\x1e4c"),
    (b"4text\x1ebAQID\x1e4\xe2\x82\xac", b"4text\x1ebAQID\x1e4\xe2\x82\xac"),
    (b"6\x1e4x", b"4x"),
]


@pytest.mark.parametrize(("body", "echo"), ECHOES)
async def test_polling_round_trip(poller: Poller, body: bytes, echo: bytes) -> None:
    await poller.handshake()
    response = await poller.post(body)
    assert (response.status_code, response.text) == (200, "ok")
    response = await poller.get()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=UTF-8"
    assert response.content == echo


async def test_waiting_get_is_answered_by_a_post(poller: Poller, nursery: trio.Nursery) -> None:
    await poller.handshake()
    answers: list[bytes] = []

    async def get() -> None:
        answers.append((await poller.get()).content)

    async with trio.open_nursery() as inner:
        inner.start_soon(get)
        await trio.sleep(0.05)
        assert answers == []
        assert (await poller.post("4hi")).text == "ok"
    assert answers == [b"4hi"]


async def test_heartbeat_over_polling(poller: Poller) -> None:
    await poller.handshake()
    start = trio.current_time()
    response = await poller.get()
    assert response.text == "2"
    assert PING_INTERVAL - 0.02 <= trio.current_time() - start < PING_INTERVAL + 0.15
    pong_at = trio.current_time()
    assert (await poller.post("3")).text == "ok"
    # The next ping comes pingInterval after the pong, not after the first ping.
    response = await poller.get()
    assert response.text == "2"
    assert PING_INTERVAL - 0.02 <= trio.current_time() - pong_at < PING_INTERVAL + 0.15
    # No pong this time: the GET that waits is answered with a close at the pong deadline.
    ping_at = trio.current_time()
    response = await poller.get()
    assert response.text == "1"
    assert PING_TIMEOUT - 0.02 <= trio.current_time() - ping_at < PING_TIMEOUT + 0.15
    response = await poller.get()
    assert response.status_code == 400
    assert error_body(response) == {"code": 1, "message": "Session ID unknown"}


async def test_ping_timeout_without_any_get(poller: Poller) -> None:
    # The pingTimeout countdown starts when the ping is queued, whether or not a GET waits.
    await poller.handshake()
    await trio.sleep(PING_INTERVAL + PING_TIMEOUT + 0.05)
    response = await poller.get()
    assert response.status_code == 400
    assert error_body(response)["code"] == 1


async def test_duplicate_get_closes_the_session(poller: Poller) -> None:
    await poller.handshake()
    first: list[httpx.Response] = []

    async def get() -> None:
        first.append(await poller.get())

    async with trio.open_nursery() as inner:
        inner.start_soon(get)
        await trio.sleep(0.05)
        second = await poller.get()
    assert second.status_code == 400
    assert error_body(second)["code"] == 3
    assert first[0].status_code == 200
    assert first[0].text == "1"
    third = await poller.get()
    assert third.status_code == 400
    assert error_body(third)["code"] == 1


async def test_post_over_max_payload_is_413_and_closes(poller: Poller) -> None:
    await poller.handshake()
    response = await poller.post(b"4" + b"a" * MAX_PAYLOAD)
    assert response.status_code == 413
    assert error_body(response) == {"code": 3, "message": "payload over maxPayload"}
    response = await poller.get()
    assert response.status_code == 400
    assert error_body(response)["code"] == 1


async def test_post_far_over_max_payload_is_413_and_closes(nursery: trio.Nursery) -> None:
    # The same rule when the body is also over the listener's own body limit (maxPayload +
    # 1 KiB for hub.Server): the client broke maxPayload either way.
    server = hub.Server(hub.ServerOptions(max_payload=1000, ping_interval=5, ping_timeout=5))
    host, port = await nursery.start(server.serve, "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
        poller = Poller(http, "/socket.io/")
        await poller.handshake()
        response = await poller.post(b"4" + b"a" * 5000)
        assert response.status_code == 413
        response = await poller.post(b"4still open?")  # answered at once either way
        assert (response.status_code, response.text) == (
            400,
            '{"code":1,"message":"Session ID unknown"}',
        )


async def test_post_at_max_payload_is_accepted(poller: Poller) -> None:
    await poller.handshake()
    body = b"4" + b"a" * (MAX_PAYLOAD - 1)
    assert (await poller.post(body)).text == "ok"
    assert (await poller.get()).content == body


# (POST body, error fragment): each answered 400 code 3, and the session is closed.
INVALID_POSTS: list[tuple[bytes, str]] = [
    (b"abc", "unknown packet type 'a'"),
    (b"7", "unknown packet type '7'"),
    (b"", "empty payload"),
    (b"4a\x1e", "empty packet"),
    (b"b!!!", "invalid base64"),
    (b"4\xff", "not valid UTF-8"),
    (b"2", "unexpected ping packet"),
    (b"5", "unexpected upgrade packet"),
    (b"0", "unexpected open packet"),
]


@pytest.mark.parametrize(("body", "error"), INVALID_POSTS)
async def test_invalid_packet_closes_the_session(poller: Poller, body: bytes, error: str) -> None:
    await poller.handshake()
    response = await poller.post(body)
    assert response.status_code == 400
    answer = error_body(response)
    assert answer["code"] == 3
    assert error in answer["message"]
    response = await poller.get()
    assert response.status_code == 400
    assert error_body(response)["code"] == 1


async def test_close_packet_over_polling(poller: Poller) -> None:
    await poller.handshake()
    assert (await poller.post("1")).text == "ok"
    # The GET the client may have had in flight is ended with a noop; after it, the sid is gone.
    assert (await poller.get()).text == "6"
    assert error_body(await poller.get())["code"] == 1


async def test_close_packet_answers_the_waiting_get(poller: Poller) -> None:
    await poller.handshake()
    answers: list[httpx.Response] = []

    async def get() -> None:
        answers.append(await poller.get())

    async with trio.open_nursery() as inner:
        inner.start_soon(get)
        await trio.sleep(0.05)
        assert (await poller.post("1")).text == "ok"
    assert (answers[0].status_code, answers[0].text) == (200, "6")
    assert error_body(await poller.get())["code"] == 1


async def test_binary_content_type_is_refused(poller: Poller, http: httpx.AsyncClient) -> None:
    # Engine.IO v3 sent binary payloads as application/octet-stream; v4 never does.
    await poller.handshake()
    response = await http.post(
        poller.url(), content=b"\x04abc", headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 400
    assert error_body(response)["code"] == 3


async def test_unknown_method_on_a_session(poller: Poller, http: httpx.AsyncClient) -> None:
    await poller.handshake()
    response = await http.put(poller.url(), content=b"4a")
    assert response.status_code == 400
    assert error_body(response)["code"] == 3


# --- WebSocket ----------------------------------------------------------------------------------


async def test_websocket_echo(nursery: trio.Nursery, address: str) -> None:
    ws = await connect_ws(nursery, address)
    await receive(ws)  # open
    messages: list[str | bytes] = ["4hello", "4é€𝄞", "4", b"\x00\x01\xff", b""]
    for message in messages:
        await ws.send_message(message)
        assert await receive(ws) == message


async def test_websocket_control_and_fragmented_frames(address: str) -> None:
    client = await RawWs.connect(address, "/engine.io/?EIO=4&transport=websocket")
    (opened,) = await client.next_events()
    assert isinstance(opened, ws_events.TextMessage)
    await client.send(ws_events.Ping(payload=b"hi"))
    assert await client.next_events() == [ws_events.Pong(payload=b"hi")]
    # A message in three frames, with a ping between two of them, is one message.
    await client.send(ws_events.TextMessage(data="4frag", message_finished=False))
    await client.send(ws_events.TextMessage(data="men", message_finished=False))
    await client.send(ws_events.Ping(payload=b""))
    await client.send(ws_events.TextMessage(data="ted €", message_finished=True))
    events = await client.next_events()
    while len(events) < 2:
        events += await client.next_events()
    assert events == [
        ws_events.Pong(payload=b""),
        ws_events.TextMessage(data="4fragmented €"),
    ]
    await client.send(ws_events.BytesMessage(data=b"\x01", message_finished=False))
    await client.send(ws_events.BytesMessage(data=b"\x02", message_finished=True))
    assert await client.next_events() == [ws_events.BytesMessage(data=b"\x01\x02")]


async def test_fragmented_message_over_max_payload_is_1009(nursery: trio.Nursery) -> None:
    _, address = await start_engine(nursery, EchoHandler(), limits=Limits(max_message_bytes=100))
    client = await RawWs.connect(address, "/engine.io/?EIO=4&transport=websocket")
    await client.next_events()
    for _ in range(3):  # 3 x 40 bytes: each frame is small, the message is not
        await client.send(ws_events.TextMessage(data="4" + "a" * 39, message_finished=False))
    messages, close = await client.until_close()
    assert messages == []
    assert close.code == 1009


async def test_heartbeat_over_websocket(nursery: trio.Nursery, address: str) -> None:
    ws = await connect_ws(nursery, address)
    await receive(ws)  # open
    start = trio.current_time()
    assert await receive(ws) == "2"
    assert PING_INTERVAL - 0.02 <= trio.current_time() - start < PING_INTERVAL + 0.15
    pong_at = trio.current_time()
    await ws.send_message("3")
    assert await receive(ws) == "2"
    assert PING_INTERVAL - 0.02 <= trio.current_time() - pong_at < PING_INTERVAL + 0.15
    ping_at = trio.current_time()
    # No pong: the server closes the WebSocket at the pong deadline.
    assert await closed_code(ws) == 1000
    assert PING_TIMEOUT - 0.02 <= trio.current_time() - ping_at < PING_TIMEOUT + 0.15


async def test_websocket_message_over_max_payload_is_1009(
    nursery: trio.Nursery, address: str
) -> None:
    ws = await connect_ws(nursery, address)
    await receive(ws)
    await ws.send_message("4" + "a" * (MAX_PAYLOAD - 1))  # exactly maxPayload: fine
    assert len(await receive(ws)) == MAX_PAYLOAD
    await ws.send_message("4" + "a" * MAX_PAYLOAD)
    assert await closed_code(ws) == 1009


# (message, close code): a malformed packet ends the session with a protocol error close.
INVALID_WS: list[tuple[str, int]] = [
    ("abc", 1002),
    ("", 1002),
    ("2", 1002),
    ("2probe", 1002),
    ("5", 1002),
]


@pytest.mark.parametrize(("message", "code"), INVALID_WS)
async def test_invalid_websocket_packet_closes(
    nursery: trio.Nursery, address: str, message: str, code: int
) -> None:
    ws = await connect_ws(nursery, address)
    await receive(ws)
    await ws.send_message(message)
    assert await closed_code(ws) == code


async def test_close_packet_over_websocket(nursery: trio.Nursery, address: str) -> None:
    ws = await connect_ws(nursery, address)
    await receive(ws)
    await ws.send_message("1")
    assert await closed_code(ws) == 1000


# --- upgrade ------------------------------------------------------------------------------------


async def test_upgrade(nursery: trio.Nursery, address: str, poller: Poller) -> None:
    await poller.handshake()
    waiting: list[httpx.Response] = []

    async def get() -> None:
        waiting.append(await poller.get())

    async with trio.open_nursery() as inner:
        inner.start_soon(get)
        await trio.sleep(0.05)
        ws = await connect_ws(nursery, address, sid=poller.sid)
        await ws.send_message("2probe")
        assert await receive(ws) == "3probe"
    # The GET that waited is answered with a noop as soon as the probe is answered.
    assert waiting[0].text == "6"
    # Until the upgrade, polling still carries the session: an echo queued now...
    assert (await poller.post("4queued")).text == "ok"
    assert (await poller.get()).text == "6"  # (every GET while upgrading is a noop)
    await ws.send_message("5")
    # ... is flushed on the WebSocket once it carries the session.
    assert await receive(ws) == "4queued"
    await ws.send_message("4over ws")
    assert await receive(ws) == "4over ws"
    await ws.send_message(b"\x01\x02")
    assert await receive(ws) == b"\x01\x02"
    # Polling is over for this session.
    response = await poller.get()
    assert response.status_code == 400
    assert error_body(response)["code"] == 3
    # A second WebSocket for the same sid is accepted, then closed at once.
    again = await connect_ws(nursery, address, sid=poller.sid)
    assert await closed_code(again) == 1000
    # The upgraded session goes on, heartbeat included.
    assert await receive(ws) == "2"
    await ws.send_message("3")
    await ws.send_message("4still here")
    assert await receive(ws) == "4still here"


async def test_polling_post_after_upgrade_is_refused_and_the_session_goes_on(
    nursery: trio.Nursery, address: str, poller: Poller
) -> None:
    # Rule 5 of hub.engineio.session: "After the upgrade, polling requests for the session are
    # refused" -- refused, as a GET is, not a reason to end the upgraded session.
    await poller.handshake()
    ws = await connect_ws(nursery, address, sid=poller.sid)
    await ws.send_message("2probe")
    assert await receive(ws) == "3probe"
    await ws.send_message("5")
    response = await poller.post("4late")
    assert response.status_code == 400
    assert error_body(response)["code"] == 3
    await ws.send_message("4still upgraded")
    assert await receive(ws) == "4still upgraded"


async def test_message_over_probing_websocket_closes(
    nursery: trio.Nursery, address: str, poller: Poller
) -> None:
    await poller.handshake()
    ws = await connect_ws(nursery, address, sid=poller.sid)
    await ws.send_message("2probe")
    assert await receive(ws) == "3probe"
    await ws.send_message("4too early")
    assert await closed_code(ws) == 1002
    assert error_body(await poller.get())["code"] == 1


async def test_upgrade_without_probe_closes(
    nursery: trio.Nursery, address: str, poller: Poller
) -> None:
    await poller.handshake()
    ws = await connect_ws(nursery, address, sid=poller.sid)
    await ws.send_message("5")
    assert await closed_code(ws) == 1002
    assert error_body(await poller.get())["code"] == 1


async def test_probe_of_websocket_session_is_refused(nursery: trio.Nursery, address: str) -> None:
    ws = await connect_ws(nursery, address)
    sid = json.loads(str(await receive(ws))[1:])["sid"]
    # Already on WebSocket: the second one is accepted and closed, the first goes on.
    again = await connect_ws(nursery, address, sid=sid)
    assert await closed_code(again) == 1000
    await ws.send_message("4x")
    assert await receive(ws) == "4x"


async def test_abandoned_probe_leaves_polling_working(
    nursery: trio.Nursery, address: str, poller: Poller
) -> None:
    await poller.handshake()
    ws = await connect_ws(nursery, address, sid=poller.sid)
    await ws.send_message("2probe")
    assert await receive(ws) == "3probe"
    await ws.aclose()
    await trio.sleep(0.05)
    assert (await poller.post("4after")).text == "ok"
    assert (await poller.get()).text == "4after"


async def test_upgrade_timeout_closes_the_probe(nursery: trio.Nursery) -> None:
    options = EngineOptions(
        session=SessionOptions(ping_interval=5, ping_timeout=5, upgrade_timeout=0.2)
    )
    _, address = await start_engine(nursery, EchoHandler(), options)
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        poller = Poller(http)
        await poller.handshake()
        ws = await connect_ws(nursery, address, sid=poller.sid)
        await ws.send_message("2probe")
        assert await receive(ws) == "3probe"
        start = trio.current_time()
        assert await closed_code(ws) == 1000
        assert 0.15 <= trio.current_time() - start < 0.4
        # Polling goes on; GETs are no longer answered with noops.
        assert (await poller.post("4still polling")).text == "ok"
        assert (await poller.get()).text == "4still polling"


class CrashOnMessage(EchoHandler):
    """Echoes, except that the message "4crash" raises (a bug in the application)."""

    def on_message(self, socket: EngineSocket, data: str | bytes) -> None:
        if data == "crash":
            raise RuntimeError("application bug")
        super().on_message(socket, data)


async def test_handler_failure_ends_that_connection_only(nursery: trio.Nursery) -> None:
    # hub.transport.native: "a connection's failure ends that connection only, with one log
    # line" -- the listener and the other sessions go on.
    _, address = await start_engine(nursery, CrashOnMessage())
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        bystander = Poller(http)
        await bystander.handshake()
        culprit = Poller(http)
        await culprit.handshake()
        try:
            response = await culprit.post("4crash")
        except httpx.HTTPError:
            pass  # the connection was dropped: fine
        else:
            assert response.status_code >= 500
        assert (await bystander.post("4still served")).text == "ok"
        assert (await bystander.get()).text == "4still served"
        await Poller(http).handshake()


# --- CORS ---------------------------------------------------------------------------------------

ALLOWED = "http://ok.example"
REFUSED = "http://evil.example"


@pytest.fixture
async def cors_address(nursery: trio.Nursery) -> str:
    options = EngineOptions(cors=Cors(origins=[ALLOWED], credentials=True))
    _, address = await start_engine(nursery, EchoHandler(), options)
    return address


async def test_cors_preflight(cors_address: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{cors_address}") as http:
        response = await http.options(
            "/engine.io/?EIO=4&transport=polling",
            headers={
                "Origin": ALLOWED,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["vary"] == "Origin"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "content-type" in response.headers["access-control-allow-headers"].lower()


async def test_cors_allowed_origin(cors_address: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{cors_address}") as http:
        poller = Poller(http)
        response = await http.get(poller.url(), headers={"Origin": ALLOWED})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert response.headers["access-control-allow-credentials"] == "true"
        poller.sid = json.loads(response.text[1:])["sid"]
        response = await http.post(poller.url(), content=b"4x", headers={"Origin": ALLOWED})
        assert response.headers["access-control-allow-origin"] == ALLOWED
        # Errors carry the CORS headers too, so that the browser lets the page read them.
        response = await http.get(poller.url(sid="nope"), headers={"Origin": ALLOWED})
        assert response.status_code == 400
        assert response.headers["access-control-allow-origin"] == ALLOWED


async def test_cors_no_origin_is_let_through(cors_address: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{cors_address}") as http:
        response = await http.get("/engine.io/?EIO=4&transport=polling")
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("method", "query"),
    [
        ("GET", "EIO=4&transport=polling"),
        ("POST", "EIO=4&transport=polling&sid=x"),
        ("OPTIONS", "EIO=4&transport=polling"),
        ("GET", "EIO=3&transport=polling"),
    ],
)
async def test_cors_refused_origin_on_polling(cors_address: str, method: str, query: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{cors_address}") as http:
        response = await http.request(
            method, f"/engine.io/?{query}", headers={"Origin": REFUSED}, content=b"4x"
        )
    assert response.status_code == 403
    assert error_body(response) == {"code": 4, "message": "Forbidden"}
    assert "access-control-allow-origin" not in response.headers


async def test_cors_refused_origin_on_websocket(nursery: trio.Nursery, cors_address: str) -> None:
    query = "EIO=4&transport=websocket"
    rejected = await refusal(cors_address, query, headers=[(b"Origin", REFUSED.encode())])
    assert rejected.status_code == 403
    assert rejected.body is not None
    assert json.loads(rejected.body) == {"code": 4, "message": "Forbidden"}
    ws = await connect_ws(nursery, cors_address, headers=[(b"Origin", ALLOWED.encode())])
    assert str(await receive(ws)).startswith("0{")


async def test_cors_any_origin(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/engine.io/?EIO=4&transport=polling", headers={"Origin": "http://x.example"}
    )
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


# --- HTTP/1.1 keep-alive ------------------------------------------------------------------------


async def test_keep_alive_requests_on_one_connection(address: str) -> None:
    conn = await RawHttp.connect(address)
    status, body = await conn.request("GET", "/engine.io/?EIO=4&transport=polling")
    assert status == 200
    sid = json.loads(body[1:])["sid"]
    target = f"/engine.io/?EIO=4&transport=polling&sid={sid}"
    assert await conn.request("POST", target, b"4one") == (200, b"ok")
    assert await conn.request("GET", target) == (200, b"4one")
    assert await conn.request("POST", target, b"4two") == (200, b"ok")
    assert await conn.request("GET", target) == (200, b"4two")
    await conn.aclose()


async def test_pipelined_requests(address: str) -> None:
    conn = await RawHttp.connect(address)
    _, body = await conn.request("GET", "/engine.io/?EIO=4&transport=polling")
    sid = json.loads(body[1:])["sid"]
    target = f"/engine.io/?EIO=4&transport=polling&sid={sid}"
    responses = await conn.pipeline([("POST", target, b"4a"), ("GET", target, b"")])
    assert responses == [(200, b"ok"), (200, b"4a")]
    await conn.aclose()


async def test_long_poll_and_post_on_two_kept_alive_connections(address: str) -> None:
    # As the Node clients do: the GET waits on one connection while the POST uses another.
    first = await RawHttp.connect(address)
    second = await RawHttp.connect(address)
    _, body = await first.request("GET", "/engine.io/?EIO=4&transport=polling")
    target = f"/engine.io/?EIO=4&transport=polling&sid={json.loads(body[1:])['sid']}"
    for text in (b"4x", b"4y"):
        async with trio.open_nursery() as inner:
            got: list[tuple[int, bytes]] = []

            async def get(got: list[tuple[int, bytes]] = got) -> None:
                got.append(await first.request("GET", target))

            inner.start_soon(get)
            await trio.sleep(0.02)
            assert await second.request("POST", target, text) == (200, b"ok")
        assert got == [(200, text)]
    await first.aclose()
    await second.aclose()


async def test_hang_up_during_long_poll_closes_the_session(address: str, poller: Poller) -> None:
    conn = await RawHttp.connect(address)
    _, body = await conn.request("GET", "/engine.io/?EIO=4&transport=polling")
    sid = json.loads(body[1:])["sid"]
    await conn.stream.send_all(
        f"GET /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    )
    await trio.sleep(0.05)
    await conn.aclose()
    await trio.sleep(0.05)
    poller.sid = sid
    assert error_body(await poller.get())["code"] == 1


# --- heartbeat on the mock clock ---------------------------------------------------------------


def request(method: str, query: str, body: bytes = b"") -> Request:
    return Request.build(method, f"/engine.io/?{query}", [("Host", "test")], body=body)


async def mock_handshake(engine: EngineServer) -> str:
    response = await engine.handle_http(request("GET", "EIO=4&transport=polling"))
    assert response.status == 200
    fields = json.loads(response.body[1:])
    assert (fields["pingInterval"], fields["pingTimeout"]) == (25000, 20000)
    sid = fields["sid"]
    assert isinstance(sid, str)
    return sid


async def timed_get(engine: EngineServer, sid: str) -> tuple[float, Response]:
    response = await engine.handle_http(request("GET", f"EIO=4&transport=polling&sid={sid}"))
    return trio.current_time(), response


async def test_ping_and_timeout_in_virtual_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    engine = EngineServer(EchoHandler())  # defaults: pingInterval 25 s, pingTimeout 20 s
    await nursery.start(engine.run)
    t0 = trio.current_time()
    sid = await mock_handshake(engine)

    done: list[tuple[float, Response]] = []

    async def get() -> None:
        done.append(await timed_get(engine, sid))

    async with trio.open_nursery() as inner:
        inner.start_soon(get)
        await trio.sleep(10)
        assert done == []  # 10 s in: no ping yet
        await trio.sleep(14.9)
        assert done == []  # 24.9 s in: still none
    at, response = done[0]
    assert at - t0 == pytest.approx(25.0)
    assert (response.status, response.body) == (200, b"2")

    # No pong: the next GET is answered "1" at pingInterval + pingTimeout.
    at, response = await timed_get(engine, sid)
    assert at - t0 == pytest.approx(45.0)
    assert (response.status, response.body) == (200, b"1")
    assert sid not in engine.sockets
    _, response = await timed_get(engine, sid)
    assert response.status == 400
    assert json.loads(response.body) == {"code": 1, "message": "Session ID unknown"}


async def test_pong_moves_the_next_ping_in_virtual_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    engine = EngineServer(EchoHandler())
    await nursery.start(engine.run)
    t0 = trio.current_time()
    sid = await mock_handshake(engine)
    at, response = await timed_get(engine, sid)
    assert at - t0 == pytest.approx(25.0)
    assert response.body == b"2"
    await trio.sleep(5)
    pong = await engine.handle_http(request("POST", f"EIO=4&transport=polling&sid={sid}", b"3"))
    assert pong.body == b"ok"
    # The old deadline (45 s) passes without a close; the next ping is 25 s after the pong.
    at, response = await timed_get(engine, sid)
    assert at - t0 == pytest.approx(55.0)
    assert response.body == b"2"
    await trio.sleep(19.9)
    assert sid in engine.sockets
    await trio.sleep(0.2)
    assert sid not in engine.sockets  # closed at 55 + 20 s


async def test_ping_timeout_without_get_in_virtual_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    engine = EngineServer(EchoHandler())
    await nursery.start(engine.run)
    sid = await mock_handshake(engine)
    await trio.sleep(44.9)
    assert sid in engine.sockets
    await trio.sleep(0.2)
    assert sid not in engine.sockets
    _, response = await timed_get(engine, sid)
    assert response.status == 400


async def test_messages_wake_the_waiting_get_in_virtual_time(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    engine = EngineServer(EchoHandler())
    await nursery.start(engine.run)
    sid = await mock_handshake(engine)
    t0 = trio.current_time()
    done: list[tuple[float, Response]] = []

    async def get() -> None:
        done.append(await timed_get(engine, sid))

    async with trio.open_nursery() as inner:
        inner.start_soon(get)
        await trio.sleep(3)
        post = request("POST", f"EIO=4&transport=polling&sid={sid}", b"4a\x1e4b")
        assert (await engine.handle_http(post)).body == b"ok"
    at, response = done[0]
    assert at - t0 == pytest.approx(3.0)
    assert response.body == b"4a\x1e4b"


async def test_disconnected_get_closes_the_session(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    engine = EngineServer(EchoHandler())
    await nursery.start(engine.run)
    sid = await mock_handshake(engine)
    get = request("GET", f"EIO=4&transport=polling&sid={sid}")
    responses: list[Response] = []

    async def poll() -> None:
        responses.append(await engine.handle_http(get))

    async with trio.open_nursery() as inner:
        inner.start_soon(poll)
        await trio.sleep(1)
        get.disconnected.set()
    assert sid not in engine.sockets


async def test_handle_http_before_run_is_an_error() -> None:
    engine = EngineServer(EchoHandler())
    with pytest.raises(RuntimeError):
        await engine.handle_http(request("GET", "EIO=4&transport=polling"))
