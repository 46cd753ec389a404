"""The native server: trio + h11 + wsproto on sockets that hub owns.

:func:`serve` accepts TCP connections and runs each in its own nursery (a writer task beside the
HTTP/1.1 or WebSocket reader that the connection's task runs). Resources and errors, in the
manner of ``trio.serve_listeners``: a connection's failure ends that connection only, with one
log line; the listener socket is closed when :func:`serve` is cancelled.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import logging
import socket
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import attrs
import h11
import trio
import wsproto
import wsproto.events as ws_events
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from hub.engineio.outgoing import Outgoing, encode_frame
from hub.transport.http import App, Request, Response, WebSocketClosed
from hub.transport.stream import RawStream, StreamClosed

__all__ = ["Limits", "NativeWebSocket", "open_listener", "serve", "serve_listener"]

log = logging.getLogger("hub.transport")

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# RFC 6455 7.4.1: 1008, "a message that violates its policy": here, reading too slowly.
_SLOW_CONSUMER_CLOSE = encode_frame(0x8, (1008).to_bytes(2, "big") + b"slow consumer")


@attrs.frozen
class Limits:
    """What one connection may cost. Sizes in bytes, times in seconds."""

    max_header_bytes: int = 16384
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_body_bytes: int = 1_100_000
    max_message_bytes: int = 1_000_000
    max_buffered: int = 4_000_000
    close_timeout: float = 5.0


def open_listener(host: str, port: int, *, backlog: int = 1024) -> socket.socket:
    """A non-blocking listening socket (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(
    app: App,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    limits: Limits | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled.

    Args:
        app: the handler of requests and WebSockets.
        host, port: where to listen; port 0 picks a free port.
        limits: per-connection limits.
        task_status: started with the bound ``(host, port)``.
    """
    listener = open_listener(host, port)
    try:
        bound = listener.getsockname()
        await serve_listener(
            app, listener, limits=limits, task_status=task_status, bound=(bound[0], bound[1])
        )
    finally:
        listener.close()


async def serve_listener(
    app: App,
    listener: socket.socket,
    *,
    limits: Limits | None = None,
    bound: tuple[str, int] | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on ``listener`` (non-blocking, listening) and serve each connection."""
    limits = limits or Limits()
    if bound is None:
        name = listener.getsockname()
        bound = (name[0], name[1])
    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        try:
            while True:
                await trio.lowlevel.wait_readable(listener)
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        # EMFILE and friends: say so once per burst and let the loop breathe.
                        log.warning("accept failed: %s", exc)
                        await trio.sleep(0.05)
                        break
                    nursery.start_soon(_serve_connection, app, RawStream(conn), limits)
        finally:
            trio.lowlevel.notify_closing(listener)


async def _serve_connection(app: App, stream: RawStream, limits: Limits) -> None:
    """One TCP connection: a writer task and the HTTP reader, in the connection's nursery."""
    connection = _HttpConnection(app, stream, limits)
    try:
        async with trio.open_nursery() as nursery:
            stream.writer_nursery = nursery
            try:
                await connection.run()
            finally:
                nursery.cancel_scope.cancel()
    except* StreamClosed:
        pass
    except* Exception:
        # A bug below us (the app's, or ours): this connection ends, nothing else does.
        log.exception("connection from %s:%d failed", *stream.peer)
        connection._send_error(500, "internal server error")
    finally:
        await stream.aclose()


class _HttpConnection:
    """HTTP/1.1 with keep-alive on one stream; hands WebSocket upgrades to the app."""

    def __init__(self, app: App, stream: RawStream, limits: Limits) -> None:
        self.app = app
        self.stream = stream
        self.limits = limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.pending = b""

    async def _next_event(self) -> Any:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._send_error(exc.error_status_hint, str(exc))
                return None
            if event is not h11.NEED_DATA:
                return event
            if self.pending:
                data, self.pending = self.pending, b""
            else:
                data = await self.stream.receive_some()
            self.h11.receive_data(data)

    async def run(self) -> None:
        first = True
        while True:
            timeout = self.limits.header_timeout if first else self.limits.keepalive_timeout
            first = False
            with trio.move_on_after(timeout) as scope:
                event = await self._next_event()
            if scope.cancelled_caught:
                if self.h11.their_state is h11.SEND_BODY or self.pending:
                    self._send_error(408, "request timeout")
                return  # idle past the keep-alive timeout, or slow to send the head
            if not isinstance(event, h11.Request):
                return
            if await self._handle(event):
                return

    async def _handle(self, head: h11.Request) -> bool:
        """Answer one request. Returns True when the connection must end."""
        size = len(head.target) + sum(len(name) + len(value) + 4 for name, value in head.headers)
        if size > self.limits.max_header_bytes:
            # h11 bounds a head still incomplete; this, one that arrived whole.
            self._send_error(431, "request header fields too large")
            return True
        target = head.target.decode("latin-1")
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in head.headers]
        method = head.method.decode("ascii")
        request = Request.build(method, target, headers, client=self.stream.peer)
        if _is_websocket_upgrade(request):
            await self._read_body(limit=0)
            if self.h11.their_state is not h11.MIGHT_SWITCH_PROTOCOL:  # type: ignore[attr-defined]
                return True
            trailing, _ = self.h11.trailing_data
            websocket = NativeWebSocket(self, request, trailing)
            await self.app.handle_websocket(request, websocket)
            if not websocket.accepted:
                return True
            await websocket.aclose()
            return True
        body = await self._read_body(limit=self.limits.max_body_bytes)
        if body is None:
            if self.h11.their_state is h11.ERROR or self.h11.our_state is not h11.SEND_RESPONSE:
                return True
            if not getattr(self.app, "handles_body_too_large", False):
                self._send_error(413, "request body too large")
                return True
            request.body_too_large = True
            self._send((await self._answer(request)).with_headers((("Connection", "close"),)))
            return True
        request.body = body
        response = await self._answer(request)
        if self.stream.closed:
            return True
        self._send(response)
        if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
            return True
        try:
            self.h11.start_next_cycle()
        except h11.LocalProtocolError:
            return True
        return False

    async def _answer(self, request: Request) -> Response:
        """Run the handler; while a GET (a long-poll may wait) is answered, watch the peer: a
        hang-up sets ``request.disconnected``. Other methods are answered at once, unwatched:
        a task per request is the largest cost of a polling POST."""
        if request.method != "GET":
            return await self.app.handle_http(request)

        async def watch() -> None:
            try:
                data = await self.stream.receive_some()
            except StreamClosed:
                data = b""
            if data:
                self.pending += data  # a pipelined request; read after this one
            else:
                request.disconnected.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            response = await self.app.handle_http(request)
            nursery.cancel_scope.cancel()
        return response

    async def _read_body(self, *, limit: int) -> bytes | None:
        chunks = []
        size = 0
        while True:
            event = await self._next_event()
            if event is None:
                return None
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    return None
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                return None
            else:  # pragma: no cover - h11 yields nothing else here
                return None

    def _send(self, response: Response) -> None:
        headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
        ]
        headers.append((b"Content-Length", str(len(response.body)).encode()))
        try:
            data = self.h11.send(
                h11.Response(
                    status_code=response.status, headers=headers, reason=_reason(response.status)
                )
            )
            data += self.h11.send(h11.Data(data=response.body)) if response.body else b""
            data += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self.stream.close("response not allowed")
            return
        self.stream.send_nowait(data or b"")

    def _send_error(self, status: int, message: str) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        log.info("HTTP %d to %s:%d: %s", status, *self.stream.peer, message)
        response = Response.text(status, message, (("Connection", "close"),))
        self._send(response)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _is_websocket_upgrade(request: Request) -> bool:
    upgrade = request.headers.get("upgrade", "").lower()
    connection = request.headers.get("connection", "").lower()
    return (
        request.method == "GET"
        and "websocket" in upgrade
        and "upgrade" in [v.strip() for v in connection.split(",")]
    )


class NativeWebSocket:
    """A WebSocket on the native server: wsproto parses, hub builds and writes its own frames.

    Data frames are written with :func:`encode_frame` straight to the stream (so a broadcast's
    frame bytes are shared); control frames go through wsproto.
    """

    def __init__(self, http: _HttpConnection, request: Request, trailing: bytes) -> None:
        self._http = http
        self._stream = http.stream
        self._request = request
        self._trailing = trailing
        self._ws = wsproto.connection.Connection(ConnectionType.SERVER)
        self._max_message = http.limits.max_message_bytes
        self._events: collections.deque[ws_events.Event] = collections.deque()
        self._parts: list[Any] = []
        self._size = 0
        self.accepted = False
        self._closed = False
        self._sent_close = False
        self._close_deadline = float("inf")
        self._read_scope: trio.CancelScope | None = None
        self.close_code = 1006

    @property
    def closed(self) -> bool:
        return self._closed or self._stream.closed

    async def accept(self) -> None:
        key = self._request.headers.get("sec-websocket-key", "")
        version = self._request.headers.get("sec-websocket-version", "")
        if not key or version.strip() != "13":
            await self.reject(
                Response.text(400, "bad WebSocket handshake", (("Sec-WebSocket-Version", "13"),))
            )
            raise WebSocketClosed(1002, "bad WebSocket handshake")
        accept = base64.b64encode(hashlib.sha1(key.encode("latin-1") + _WS_GUID).digest())
        head = (
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self._stream.send_nowait(head)
        self._stream.goodbye = _SLOW_CONSUMER_CLOSE
        self.accepted = True
        if self._trailing:
            self._ws.receive_data(self._trailing)
            self._trailing = b""
            self._events.extend(self._ws.events())

    async def reject(self, response: Response) -> None:
        self._http._send(response.with_headers((("Connection", "close"),)))
        self._closed = True

    async def receive(self) -> str | bytes:
        while True:
            while self._events:
                event = self._events.popleft()
                if isinstance(event, ws_events.Message):
                    self._parts.append(event.data)
                    self._size += len(event.data)
                    if self._size > self._max_message:
                        self.close_nowait(1009, "message too big")
                        raise WebSocketClosed(1009, "message too big")
                    if event.message_finished:
                        parts, self._parts, self._size = self._parts, [], 0
                        if isinstance(event, ws_events.TextMessage):
                            return "".join(parts)
                        return b"".join(parts)
                elif isinstance(event, ws_events.Ping):
                    self._stream.send_nowait(self._ws.send(event.response()))
                elif isinstance(event, ws_events.CloseConnection):
                    if self._stream.overflowed:
                        self._closed = True
                        raise WebSocketClosed(1008, "slow consumer")
                    self.close_code = event.code
                    if not self._sent_close and self._ws.state is ConnectionState.REMOTE_CLOSING:
                        self._sent_close = True
                        self._stream.send_nowait(self._ws.send(event.response()))
                    self._closed = True
                    raise WebSocketClosed(event.code, event.reason or "")
            if self.closed:
                raise WebSocketClosed(self.close_code)
            try:
                with trio.CancelScope(deadline=self._close_deadline) as self._read_scope:
                    data = await self._stream.receive_some()
                if self._read_scope.cancelled_caught:
                    data = b""  # we sent a Close and the peer never answered it
            except StreamClosed:
                data = b""
            finally:
                self._read_scope = None
            if not data:
                self._closed = True
                if self._stream.overflowed:
                    raise WebSocketClosed(1008, "slow consumer")
                raise WebSocketClosed(1006, "connection lost")
            self._ws.receive_data(data)
            try:
                self._events.extend(self._ws.events())
            except WsRemoteProtocolError as exc:
                self.close_nowait(1002, "protocol error")
                raise WebSocketClosed(1002, str(exc)) from None

    def send_nowait(self, message: Outgoing, *, urgent: bool = False) -> None:
        if self.closed:
            return
        if urgent:
            self._stream.send_urgent(message.frame)
        else:
            self._stream.send_nowait(message.frame)

    @property
    def volatile_writer(self) -> Callable[[bytes], bool]:
        """Writes frame bytes only when nothing waits before them; see ``frame_writer``."""
        return self._stream.send_if_idle

    @property
    def frame_writer(self) -> Callable[[bytes], None]:
        """Writes pre-built frame bytes (a broadcast's shared frame) to the stream, at once.

        Valid until this WebSocket sends its close frame; its owner stops using it then.
        """
        return self._stream.send_nowait

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self._closed = True
        self._sent_close = True
        self._close_deadline = trio.current_time() + self._http.limits.close_timeout
        if self._read_scope is not None:
            self._read_scope.deadline = self._close_deadline
        self.close_code = code
        payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:120]
        self._stream.send_nowait(encode_frame(0x8, payload))

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        # The connection flushes and closes the stream when the app's handler returns.
        self.close_nowait(code, reason)
