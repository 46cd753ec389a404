"""Clients that speak to the real server on a loopback socket: httpx for long-polling,
trio-websocket for WebSocket, and h11 on a bare TCP stream when the connection itself matters.

Nothing here reaches into the server: every helper sends bytes and reads bytes.
"""

from __future__ import annotations

import json
from typing import Any

import h11
import httpx
import trio
import trio_websocket
import wsproto
import wsproto.events as ws_events

from hub.transport.engine import EngineHandler, EngineOptions, EngineServer
from hub.transport.native import Limits, serve

__all__ = [
    "WAIT",
    "Poller",
    "RawHttp",
    "RawWs",
    "closed_code",
    "connect_ws",
    "error_body",
    "receive",
    "refusal",
    "start_engine",
]

WAIT = 2.0
"""The longest any single wait in a test may take before it fails."""


async def start_engine(
    nursery: trio.Nursery,
    handler: EngineHandler,
    options: EngineOptions | None = None,
    *,
    limits: Limits | None = None,
) -> tuple[EngineServer, str]:
    """Run an :class:`EngineServer` on 127.0.0.1 (any free port), served at every path.

    Returns:
        The engine and ``host:port``.
    """
    engine = EngineServer(handler, options)
    await nursery.start(engine.run)
    host, port = await nursery.start(_serve, engine, limits)
    return engine, f"{host}:{port}"


async def _serve(
    engine: EngineServer,
    limits: Limits | None,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(engine, "127.0.0.1", 0, limits=limits, task_status=task_status)


def error_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON error body of an engine.io refusal (checked to be exactly code and message)."""
    assert response.headers["content-type"] == "application/json"
    body = json.loads(response.content)
    assert isinstance(body, dict)
    assert list(body) == ["code", "message"]
    return body


class Poller:
    """An Engine.IO client on HTTP long-polling.

    Args:
        client: an httpx client whose ``base_url`` is the server.
        path: the endpoint, with its trailing slash.
    """

    def __init__(self, client: httpx.AsyncClient, path: str = "/engine.io/") -> None:
        self.client = client
        self.path = path
        self.sid = ""

    def url(self, **query: str) -> str:
        params = {"EIO": "4", "transport": "polling", **query}
        if self.sid and "sid" not in query:
            params["sid"] = self.sid
        return self.path + "?" + "&".join(f"{k}={v}" for k, v in params.items())

    async def handshake(self, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """Open a session; returns the fields of its ``open`` packet."""
        with trio.fail_after(WAIT):
            response = await self.client.get(self.url(), headers=headers)
        assert response.status_code == 200, response.text
        assert response.text.startswith("0")
        fields = json.loads(response.text[1:])
        assert isinstance(fields, dict)
        self.sid = fields["sid"]
        return fields

    async def get(self, timeout: float = WAIT) -> httpx.Response:
        with trio.fail_after(timeout):
            return await self.client.get(self.url())

    async def post(self, body: str | bytes) -> httpx.Response:
        content = body.encode("utf-8") if isinstance(body, str) else body
        with trio.fail_after(WAIT):
            return await self.client.post(
                self.url(), content=content, headers={"Content-Type": "text/plain;charset=UTF-8"}
            )


async def connect_ws(
    nursery: trio.Nursery,
    address: str,
    path: str = "/engine.io/",
    *,
    sid: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    max_message_size: int = 2**21,
) -> trio_websocket.WebSocketConnection:
    """Open a WebSocket to the endpoint (a new session, or a probe of ``sid``)."""
    url = f"ws://{address}{path}?EIO=4&transport=websocket"
    if sid is not None:
        url += f"&sid={sid}"
    with trio.fail_after(WAIT):
        return await trio_websocket.connect_websocket_url(
            nursery, url, extra_headers=headers, max_message_size=max_message_size
        )


async def refusal(
    address: str,
    query: str,
    path: str = "/engine.io/",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> trio_websocket.ConnectionRejected:
    """Try a WebSocket handshake that the server must refuse; returns the refusal."""
    rejected: list[trio_websocket.ConnectionRejected] = []
    with trio.fail_after(WAIT):
        try:
            async with trio_websocket.open_websocket_url(
                f"ws://{address}{path}?{query}", extra_headers=headers
            ):
                pass
        except* trio_websocket.ConnectionRejected as group:
            rejected += [
                e for e in group.exceptions if isinstance(e, trio_websocket.ConnectionRejected)
            ]
    assert rejected, "the WebSocket handshake was accepted"
    return rejected[0]


async def receive(ws: trio_websocket.WebSocketConnection, timeout: float = WAIT) -> str | bytes:
    """The next message, failing the test if none comes in time."""
    with trio.fail_after(timeout):
        return await ws.get_message()


async def closed_code(ws: trio_websocket.WebSocketConnection, timeout: float = WAIT) -> int:
    """Wait for the server to close; returns its close code (messages before it are dropped)."""
    reason: trio_websocket.CloseReason | None = None
    with trio.fail_after(timeout):
        while reason is None:
            try:
                await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                reason = exc.reason
                if reason is None:
                    raise
    return reason.code


def _request_events(method: str, target: str, body: bytes) -> list[h11.Event]:
    headers = [("Host", "test"), ("Content-Length", str(len(body)))]
    events: list[h11.Event] = [h11.Request(method=method, target=target, headers=headers)]
    if body:
        events.append(h11.Data(data=body))
    events.append(h11.EndOfMessage())
    return events


class RawHttp:
    """HTTP/1.1 over one bare TCP connection, parsed with h11: for keep-alive and pipelining."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, address: str) -> RawHttp:
        host, port = address.rsplit(":", 1)
        return cls(await trio.open_tcp_stream(host, int(port)))

    async def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request on this connection and read its response."""
        data = b"".join(self.h11.send(e) or b"" for e in _request_events(method, target, body))
        await self.stream.send_all(data)
        return await self._response()

    async def pipeline(self, requests: list[tuple[str, str, bytes]]) -> list[tuple[int, bytes]]:
        """Write every request at once, then read the responses in order."""
        data = b""
        for method, target, body in requests:
            writer = h11.Connection(h11.CLIENT)  # only to serialise the request
            data += b"".join(writer.send(e) or b"" for e in _request_events(method, target, body))
        await self.stream.send_all(data)
        responses = []
        for method, target, body in requests:
            for event in _request_events(method, target, body):
                self.h11.send(event)  # already on the wire; this keeps h11's states in step
            responses.append(await self._response())
        return responses

    async def _response(self) -> tuple[int, bytes]:
        status = 0
        body = b""
        with trio.fail_after(WAIT):
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    self.h11.receive_data(await self.stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise AssertionError(f"unexpected {event!r}")
        self.h11.start_next_cycle()  # raises if the server asked to close the connection
        return status, body

    async def aclose(self) -> None:
        await self.stream.aclose()


class RawWs:
    """A WebSocket client made of wsproto and a bare TCP stream: every byte the server sends
    after the handshake can be looked at (trio-websocket hides what follows a Close)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)

    @classmethod
    async def connect(cls, address: str, target: str) -> RawWs:
        host, port = address.rsplit(":", 1)
        client = cls(await trio.open_tcp_stream(host, int(port)))
        await client.send(ws_events.Request(host=host, target=target))
        (accepted,) = await client.next_events()
        assert isinstance(accepted, ws_events.AcceptConnection)
        return client

    async def send(self, event: ws_events.Event) -> None:
        await self.stream.send_all(self.ws.send(event))

    async def next_events(self) -> list[ws_events.Event]:
        """Read until at least one event comes (fails the test at end of stream)."""
        with trio.fail_after(WAIT):
            while True:
                events = list(self.ws.events())
                if events:
                    return events
                data = await self.stream.receive_some(65536)
                assert data, "connection closed by the server"
                self.ws.receive_data(data)

    async def until_close(self) -> tuple[list[str | bytes], ws_events.CloseConnection]:
        """The messages before the server's Close frame, and that frame."""
        messages: list[str | bytes] = []
        while True:
            for event in await self.next_events():
                if isinstance(event, ws_events.CloseConnection):
                    return messages, event
                assert isinstance(event, ws_events.Message)
                messages.append(event.data)

    async def rest(self, timeout: float = WAIT) -> bytes:
        """Every byte the server still sends, up to the end of the stream."""
        data = b""
        with trio.fail_after(timeout):
            while chunk := await self.stream.receive_some(65536):
                data += chunk
        return data
