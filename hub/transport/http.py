"""HTTP requests and responses as the hub's handlers see them, whatever server carries them.

The native listener (:mod:`hub.transport.native`) and the ASGI adapter (:mod:`hub.transport.asgi`)
both build a :class:`Request` and send back a :class:`Response`; a WebSocket is offered to the
application as a :class:`WebSocket` that it accepts or rejects. A handler may also hold a
request and answer it later (:class:`HeldAnswer`), when the server offers it (the native one).
Below them, the wire form of the common HTTP/1.1 requests and of every response, for the native
listener (:func:`parse_request_head`, :func:`encode_response`).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from sys import intern
from typing import Final, Protocol

import attrs
import trio

from hub.engineio.outgoing import Outgoing

__all__ = [
    "HELD",
    "App",
    "HeldAnswer",
    "Request",
    "Response",
    "WebSocket",
    "WebSocketClosed",
    "encode_response",
    "parse_request_head",
    "reason_phrase",
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
        holder: set by a server that can send the answer after the handler has returned
            (the native listener); see :meth:`hold`.
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
    holder: Callable[[], HeldAnswer] | None = None

    @property
    def disconnected(self) -> trio.Event:
        event = self._disconnected
        if event is None:
            event = self._disconnected = trio.Event()
        return event

    def hold(self) -> HeldAnswer | None:
        """Answer this request later, without a task waiting for it (a long-poll).

        Returns:
            None when the server cannot (then the handler waits and returns the answer).
            Otherwise the handler returns :data:`HELD` and sends the answer with
            :meth:`HeldAnswer.send` once it has one; the server watches the peer meanwhile.
        """
        holder = self.holder
        return holder() if holder is not None else None

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


HELD: Final = Response(0)
"""What a handler returns when it has taken :meth:`Request.hold`: the answer comes later."""


class HeldAnswer:
    """The answer to a request, sent after its handler has returned.

    A long-poll GET waits until there is something to send. Held this way, it costs no task and
    no cancel scope while it waits: the connection's own task watches the peer (a hang-up shows
    as the end of its stream), and whoever has the answer writes it at once with :meth:`send`,
    from any task (as engine.io's polling transport answers inside the send, in Node).

    Attributes:
        response: the answer, once sent.
        hung_up: the peer went away before the answer.
        on_hang_up: called once, by the server, if the peer goes away before the answer; set
            by the handler.
    """

    __slots__ = ("_event", "_write", "hung_up", "on_hang_up", "response")

    def __init__(self, write: Callable[[Response], None] | None = None) -> None:
        self._write = write
        self._event: trio.Event | None = None
        self.response: Response | None = None
        self.hung_up = False
        self.on_hang_up: Callable[[], None] | None = None

    @property
    def done(self) -> bool:
        """Answered, or abandoned by the peer."""
        return self.response is not None or self.hung_up

    def send(self, response: Response) -> None:
        """Send the answer; never waits. Only the first call counts, and none after a hang-up."""
        if self.done:
            return
        self.response = response
        if self._write is not None:
            self._write(response)
        if self._event is not None:
            self._event.set()

    def hang_up(self) -> None:
        """The peer went away (the server calls this): ``on_hang_up`` runs, once."""
        if self.done:
            return
        self.hung_up = True
        if self._event is not None:
            self._event.set()
        if self.on_hang_up is not None:
            self.on_hang_up()

    async def wait(self) -> Response | None:
        """Wait until the answer is sent (returned) or the peer has gone (None)."""
        if not self.done:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        return self.response


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


# -- HTTP/1.1 on the wire, for the common requests ---------------------------------------------
#
# h11 checks every rule of RFC 9112 and costs more than everything else of a long-poll together.
# The requests a Socket.IO client sends over and over (a GET or POST with a few headers and a
# Content-Length body, kept alive) are read by :func:`parse_request_head` with h11's own grammar;
# any head it does not accept whole (another version or method, chunked, Expect, Upgrade,
# Connection: close, a folded line...) goes to h11, so an unusual request gets exactly h11's
# treatment, error answers included.

# RFC 9112 3: request-line = method SP request-target SP HTTP-version (h11: target = 1*VCHAR).
_REQUEST_LINE = re.compile(rb"(GET|POST|OPTIONS) (/[\x21-\x7e]*) HTTP/1\.1")
# RFC 9112 5: field-line = field-name ":" OWS field-value OWS (h11's _abnf.header_field).
_FIELD_LINE = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?)[ \t]*"
)
# Headers after which h11 must judge the request: framing, expectations, upgrades, closing.
_LEFT_TO_H11 = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"connection"})
_DIGITS = re.compile(rb"[0-9]{1,18}")


@attrs.frozen
class RequestHead:
    """A request head read by :func:`parse_request_head`."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    content_length: int


def parse_request_head(head: bytes) -> RequestHead | None:
    """Read an HTTP/1.1 request head (up to, without, its blank line) that needs no more than
    the common rules: GET, POST or OPTIONS, one Host, at most one Content-Length, and none of
    Transfer-Encoding, Expect, Upgrade or Connection other than ``keep-alive``.

    Returns:
        None when h11 must read it (it may be valid, or not: h11 says which).
    """
    lines = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        return None
    headers: list[tuple[str, str]] = []
    hosts = 0
    length = 0
    lengths = 0
    for line in lines[1:]:
        field = _FIELD_LINE.fullmatch(line)
        if field is None:
            return None
        name, value = field.group(1), field.group(2)
        lower = name.lower()
        if lower == b"host":
            hosts += 1
        elif lower == b"content-length":
            lengths += 1
            if _DIGITS.fullmatch(value) is None:
                return None
            length = int(value)
        elif lower in _LEFT_TO_H11 and (lower != b"connection" or value.lower() != b"keep-alive"):
            return None
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    if hosts != 1 or lengths > 1:
        return None
    return RequestHead(
        match.group(1).decode("ascii"), match.group(2).decode("ascii"), headers, length
    )


_REASONS: dict[int, bytes] = {}


def reason_phrase(status: int) -> bytes:
    """The reason phrase of ``status`` (empty for a code without one)."""
    reason = _REASONS.get(status)
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase.encode("ascii")
        except ValueError:
            reason = b""
        _REASONS[status] = reason
    return reason


def encode_response(response: Response, *, head: bool = False, close: bool = False) -> bytes | None:
    """The bytes of ``response`` as HTTP/1.1 with a Content-Length (what h11 writes for it).

    Args:
        head: the answer to a HEAD request: the head alone, with the body's length.
        close: add ``Connection: close`` (the connection ends after it).

    Returns:
        None when a header is not a valid header (a CR, LF or NUL in it, a name that is not a
        token): such a response is not sent.
    """
    lines = [b"HTTP/1.1 %d %s" % (response.status, reason_phrase(response.status))]
    for name, value in response.headers:
        if close and name.lower() == "connection":
            continue
        try:
            line = f"{name}: {value}".encode("latin-1")
        except UnicodeEncodeError:
            return None
        if _FIELD_LINE.fullmatch(line) is None:
            return None
        lines.append(line)
    lines.append(b"Content-Length: %d" % len(response.body))
    if close:
        lines.append(b"Connection: close")
    data = b"\r\n".join(lines) + b"\r\n\r\n"
    return data if head else data + response.body
