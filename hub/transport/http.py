"""HTTP requests and responses as the hub's handlers see them, whatever server carries them.

The native listener (:mod:`hub.transport.native`) and the ASGI adapter (:mod:`hub.transport.asgi`)
both build a :class:`Request` and send back a :class:`Response`; a WebSocket is offered to the
application as a :class:`WebSocket` that it accepts or rejects.
"""

from __future__ import annotations

import json
import urllib.parse
from sys import intern
from typing import Protocol

import attrs
import trio

from hub.engineio.outgoing import Outgoing

__all__ = [
    "App",
    "Request",
    "Response",
    "WebSocket",
    "WebSocketClosed",
]


# A WebSocket's request lives as long as the connection (its headers are the Socket.IO
# handshake's), so the strings that thousands of connections have in common are shared
# (``sys.intern``): header and query names, and the values of these, which are alike for every
# client of one application. Values that differ per client (cookies, keys) are not.
_SHARED_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "connection",
        "host",
        "origin",
        "pragma",
        "sec-websocket-extensions",
        "sec-websocket-version",
        "upgrade",
        "user-agent",
    }
)
_SHARED_QUERY = frozenset({"EIO", "transport"})


@attrs.define(eq=False)
class Request:
    """One HTTP request, body read.

    Attributes:
        method: upper-case method.
        path: the decoded path, without the query.
        query: each query parameter's first value.
        headers: lower-case names; repeated headers joined with ``", "``.
        body: the whole body (bounded by the server's limit).
        client: the peer's address and port.
        disconnected: set when the peer goes away while the request is being answered.
        body_too_large: the body was over the server's limit and was not read; only apps that
            say so (``handles_body_too_large = True``) see such a request, others get a 413.
        raw_path: the path as sent, still percent-encoded (split it before decoding when its
            segments may hold an encoded ``/``).
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    client: tuple[str, int] = ("", 0)
    # Made on first use: the request that opened a WebSocket lives as long as it does, and
    # nobody ever waits on its event.
    _disconnected: trio.Event | None = attrs.field(default=None, alias="disconnected")
    body_too_large: bool = False
    raw_path: str = ""

    @property
    def disconnected(self) -> trio.Event:
        event = self._disconnected
        if event is None:
            event = self._disconnected = trio.Event()
        return event

    @classmethod
    def build(
        cls,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        *,
        body: bytes = b"",
        client: tuple[str, int] = ("", 0),
    ) -> Request:
        path, _, query_string = target.partition("?")
        query: dict[str, str] = {}
        for name, value in urllib.parse.parse_qsl(query_string, keep_blank_values=True):
            query.setdefault(intern(name), intern(value) if name in _SHARED_QUERY else value)
        merged: dict[str, str] = {}
        for name, value in headers:
            key = intern(name.lower())
            if key in merged:
                merged[key] = f"{merged[key]}, {value}"
            else:
                merged[key] = intern(value) if key in _SHARED_HEADERS else value
        return cls(
            method=intern(method.upper()),
            path=intern(urllib.parse.unquote(path)),
            query=query,
            headers=merged,
            body=body,
            client=client,
            raw_path=path,
        )


@attrs.frozen
class Response:
    """One HTTP response."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @classmethod
    def text(cls, status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return cls(status, (("Content-Type", "text/plain; charset=UTF-8"), *headers), text.encode())

    @classmethod
    def json(
        cls, status: int, value: object, headers: tuple[tuple[str, str], ...] = ()
    ) -> Response:
        body = json.dumps(value, separators=(",", ":")).encode()
        return cls(status, (("Content-Type", "application/json"), *headers), body)

    def with_headers(self, headers: tuple[tuple[str, str], ...]) -> Response:
        return attrs.evolve(self, headers=self.headers + headers)


class WebSocketClosed(Exception):
    """The WebSocket is closed.

    Attributes:
        code: the close code (1006 when the connection dropped without a close frame).
        reason: the close reason, if any.
    """

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(f"WebSocket closed ({code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class WebSocket(Protocol):
    """A WebSocket offered to the application, in the native server or under ASGI."""

    @property
    def closed(self) -> bool: ...

    async def accept(self) -> None:
        """Complete the handshake (101)."""

    async def reject(self, response: Response) -> None:
        """Refuse the handshake with an HTTP response."""

    async def receive(self) -> str | bytes:
        """The next whole message.

        Raises:
            WebSocketClosed: the connection is closed or the message is over the size limit.
        """

    def send_nowait(self, message: Outgoing, *, urgent: bool = False) -> None:
        """Send an Engine.IO packet without waiting; queued (bounded) if it cannot go now.

        ``urgent`` (a heartbeat) goes ahead of what is queued.
        """

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start closing: send a close frame after what is queued; never waits."""

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close and wait (briefly) for what is queued to go out."""


class App(Protocol):
    """What a server (native or ASGI) hands its requests to."""

    async def handle_http(self, request: Request) -> Response: ...

    async def handle_websocket(self, request: Request, websocket: WebSocket) -> None: ...
