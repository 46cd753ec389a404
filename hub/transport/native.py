"""The native server: trio + h11 (+ hub's own WebSocket frames) on sockets that hub owns.

:func:`serve` accepts TCP connections and runs each in its own nursery (a writer task beside the
HTTP/1.1 or WebSocket reader that the connection's task runs). Resources and errors, in the
manner of ``trio.serve_listeners``: a connection's failure ends that connection only, with one
log line; the listener socket is closed when :func:`serve` is cancelled.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, NoReturn

import attrs
import h11
import trio

from hub.engineio.outgoing import Outgoing, encode_frame
from hub.transport.counters import TransportStats
from hub.transport.frames import Close, FrameError, FrameReader, Ping
from hub.transport.http import App, Request, Response, WebSocketClosed
from hub.transport.stream import RawStream, StreamClosed

__all__ = ["Limits", "NativeWebSocket", "open_listener", "serve", "serve_listener"]

log = logging.getLogger("hub.transport")

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# RFC 6455 7.4.1: 1008, "a message that violates its policy": here, reading too slowly.
_CLOSE, _PONG = 0x8, 0xA
_SLOW_CONSUMER_CLOSE = encode_frame(_CLOSE, (1008).to_bytes(2, "big") + b"slow consumer")


@attrs.frozen
class Limits:
    """What one connection may cost. Sizes in bytes, times in seconds."""

    max_header_bytes: int = 16384
    header_timeout: float = 10.0
    body_timeout: float = 30.0
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
    stats: TransportStats | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``host:port`` until cancelled.

    Args:
        app: the handler of requests and WebSockets.
        host, port: where to listen; port 0 picks a free port.
        limits: per-connection limits.
        stats: where the connections add up the bytes they read and send.
        task_status: started with the bound ``(host, port)``.
    """
    listener = open_listener(host, port)
    try:
        bound = listener.getsockname()
        await serve_listener(
            app,
            listener,
            limits=limits,
            stats=stats,
            task_status=task_status,
            bound=(bound[0], bound[1]),
        )
    finally:
        listener.close()


async def serve_listener(
    app: App,
    listener: socket.socket,
    *,
    limits: Limits | None = None,
    stats: TransportStats | None = None,
    bound: tuple[str, int] | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on ``listener`` (non-blocking, listening) and serve each connection."""
    limits = limits or Limits()
    stats = stats if stats is not None else TransportStats()
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
                    stream = RawStream(conn, max_buffered=limits.max_buffered, stats=stats)
                    nursery.start_soon(_serve_connection, app, stream, limits)
        finally:
            trio.lowlevel.notify_closing(listener)


async def _serve_connection(app: App, stream: RawStream, limits: Limits) -> None:
    """One TCP connection: a writer task and the HTTP reader, in the connection's nursery.

    After a WebSocket upgrade the HTTP/1.1 state is dropped: an idle WebSocket holds only its
    stream, its frame reader and what the app keeps (the Engine.IO session, which runs its
    tasks in this same nursery).
    """
    connection: _HttpConnection | None = _HttpConnection(app, stream, limits)
    try:
        async with trio.open_nursery() as nursery:
            stream.writer_nursery = nursery
            try:
                assert connection is not None
                upgrade = await connection.run()
                if upgrade is not None:
                    connection = None
                    # Here, not in a function of its own: one coroutine frame less per idle
                    # WebSocket.
                    websocket = NativeWebSocket(stream, *upgrade, limits, nursery)
                    try:
                        await app.handle_websocket(upgrade[0], websocket)
                    except WebSocketClosed:
                        if websocket.accepted:
                            raise
                        # A bad handshake, already answered (400): nothing more to say.
                        return
                    except Exception:
                        if not websocket.accepted and not websocket.closed:
                            await websocket.reject(Response.text(500, "internal server error"))
                        raise
                    if websocket.accepted:
                        await websocket.aclose()
            finally:
                nursery.cancel_scope.cancel()
    except* StreamClosed:
        pass
    except* Exception:
        # A bug below us (the app's, or ours): this connection ends, nothing else does.
        log.exception("connection from %s:%d failed", *stream.peer)
        if connection is not None:
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
        self.upgrade: tuple[Request, bytes] | None = None

    async def _next_event(self) -> Any:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                # h11's message quotes what the client sent (a token in a URL, say): neither
                # the answer nor the log repeats it.
                status = exc.error_status_hint
                self._send_error(status, _reason(status).decode("ascii").lower() or "bad request")
                return None
            if event is not h11.NEED_DATA:
                return event
            if self.pending:
                data, self.pending = self.pending, b""
            else:
                data = await self.stream.receive_some()
            self.h11.receive_data(data)

    async def run(self) -> tuple[Request, bytes] | None:
        """Answer requests until the connection must end.

        Returns:
            A WebSocket upgrade, for the caller to serve once this object is dropped: the
            request, and the bytes the client sent after it (its first frames, if any).
        """
        first = True
        while True:
            timeout = self.limits.header_timeout if first else self.limits.keepalive_timeout
            first = False
            with trio.move_on_after(timeout) as scope:
                event = await self._next_event()
            if scope.cancelled_caught:
                if self.h11.their_state is h11.SEND_BODY or self.pending:
                    self._send_error(408, "request timeout")
                return None  # idle past the keep-alive timeout, or slow to send the head
            if not isinstance(event, h11.Request):
                return None
            if await self._handle(event):
                return self.upgrade

    async def _handle(self, head: h11.Request) -> bool:
        """Answer one request. Returns True when the connection must end (or is upgraded:
        then :attr:`upgrade` is set)."""
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
            with trio.move_on_after(self.limits.body_timeout):
                await self._read_body(limit=0)
            if self.h11.their_state is not h11.MIGHT_SWITCH_PROTOCOL:  # type: ignore[attr-defined]
                return True
            trailing, _ = self.h11.trailing_data
            self.upgrade = (request, trailing)
            return True
        with trio.move_on_after(self.limits.body_timeout) as scope:
            body = await self._read_body(limit=self.limits.max_body_bytes)
        if scope.cancelled_caught:
            # A declared body that does not come would hold the connection open for good.
            self._send_error(408, "request timeout")
            return True
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
        self._send(response, head=method == "HEAD")
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

    def _send(self, response: Response, *, head: bool = False) -> None:
        """Write one response. To a HEAD request, the head alone, with the length the body
        would have had."""
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
            if response.body and not head:
                data += self.h11.send(h11.Data(data=response.body))
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


def _closing_response(response: Response) -> bytes | None:
    """The bytes of an HTTP/1.1 response after which the connection closes: the refusal of a
    WebSocket handshake, written without the HTTP/1.1 state (dropped at the upgrade).

    Returns:
        None when a header would not be a valid header (a CR or LF in it).
    """
    lines = [b"HTTP/1.1 %d %s" % (response.status, _reason(response.status))]
    for name, value in (*response.headers, ("Connection", "close")):
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            return None
        if name.lower() != "connection":
            lines.append(f"{name}: {value}".encode("latin-1"))
    lines.append(b"Content-Length: %d" % len(response.body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + response.body


class NativeWebSocket:
    """A WebSocket on the native server: hub reads the client's frames with its own
    :class:`~hub.transport.frames.FrameReader` and writes its own frames.

    Data frames are written with :func:`encode_frame` straight to the stream (so a broadcast's
    frame bytes are shared). Per connection it holds a few slots: the stream, the frame reader
    (empty between frames) and the handshake's key; nothing of HTTP/1.1.

    Attributes:
        nursery: the connection's nursery; what the app starts there ends with the connection
            (the Engine.IO session of a WebSocket runs its tasks there).
    """

    __slots__ = (
        "_close_timeout",
        "_closed",
        "_key",
        "_reader",
        "_reading",
        "_sent_close",
        "_stream",
        "_version",
        "accepted",
        "close_code",
        "nursery",
    )

    def __init__(
        self,
        stream: RawStream,
        request: Request,
        trailing: bytes,
        limits: Limits,
        nursery: trio.Nursery,
    ) -> None:
        self._stream = stream
        self._key = request.headers.get("sec-websocket-key", "")
        self._version = request.headers.get("sec-websocket-version", "")
        self._reader = FrameReader(max_message=limits.max_message_bytes)
        if trailing:  # frames sent right behind the handshake, before the 101
            self._reader.receive_data(trailing)
        self._close_timeout = limits.close_timeout
        self.nursery = nursery
        self.accepted = False
        self._closed = False
        self._sent_close = False
        self._reading = False  # a receive() waits for bytes
        self.close_code = 1006

    @property
    def closed(self) -> bool:
        return self._closed or self._stream.closed

    async def accept(self) -> None:
        key = self._key
        if not key or self._version.strip() != "13":
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
        self._key = self._version = ""
        await trio.lowlevel.checkpoint()

    async def reject(self, response: Response) -> None:
        data = _closing_response(response)
        if data is None:
            self._stream.close("response not allowed")
        else:
            self._stream.send_nowait(data)
        self._closed = True

    async def receive(self) -> str | bytes:
        reader = self._reader
        stream = self._stream
        while True:
            try:
                event = reader.next_event()
            except FrameError as exc:
                # RFC 6455 7.1.7: _Fail the WebSocket Connection_, with the code of the error.
                self.close_nowait(exc.code, exc.message)
                raise WebSocketClosed(exc.code, exc.message) from None
            if event is None:
                if self.closed:
                    raise WebSocketClosed(self.close_code)
                self._reading = True
                try:
                    await trio.lowlevel.wait_readable(stream)
                    data = stream.receive_nowait()
                except trio.WouldBlock:
                    continue
                except (trio.ClosedResourceError, StreamClosed):
                    data = b""
                finally:
                    self._reading = False
                if not data:
                    self._closed = True
                    if stream.overflowed:
                        raise WebSocketClosed(1008, "slow consumer")
                    raise WebSocketClosed(1006, "connection lost")
                reader.receive_data(data)
            elif isinstance(event, str | bytes):
                return event
            elif isinstance(event, Ping):
                if not self._sent_close:
                    stream.send_nowait(encode_frame(_PONG, event.payload))
            else:
                self._on_close(event)

    def _on_close(self, event: Close) -> NoReturn:
        """The client's close frame: answered with the same code unless we sent ours first."""
        self._closed = True
        if self._stream.overflowed:
            raise WebSocketClosed(1008, "slow consumer")
        self.close_code = event.code
        if not self._sent_close:
            # RFC 6455 5.5.1: "the endpoint MUST send a Close frame in response", "typically
            # echoing the status code it received" (none when it carried none).
            self._sent_close = True
            payload = b""
            if event.code != 1005:
                payload = event.code.to_bytes(2, "big") + event.reason.encode("utf-8")
            self._stream.send_nowait(encode_frame(_CLOSE, payload))
        raise WebSocketClosed(event.code, event.reason)

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
        self.close_code = code
        payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:120]
        self._stream.send_nowait(encode_frame(_CLOSE, payload))
        if self._reading:
            # A reader waits for the client's close frame (RFC 6455 7.1.1: the server closes
            # the TCP connection after it); it waits ``close_timeout`` at most. A task for
            # this, only now: no deadline is kept while the connection lives.
            try:
                self.nursery.start_soon(self._close_after, self._close_timeout)
            except RuntimeError:
                self._stream.close("closing")  # the connection is ending anyway

    async def _close_after(self, delay: float) -> None:
        await trio.sleep(delay)
        self._stream.close("close timeout")

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        # The connection flushes and closes the stream when the app's handler returns.
        self.close_nowait(code, reason)
