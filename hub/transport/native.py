"""The native server: trio + h11 (+ hub's own WebSocket frames) on sockets that hub owns.

:func:`serve` accepts TCP connections and runs each in its own nursery (a writer task beside the
HTTP/1.1 or WebSocket reader that the connection's task runs). Resources and errors, in the
manner of ``trio.serve_listeners``: a connection's failure ends that connection only, with one
log line; the listener socket is closed when :func:`serve` is cancelled.

A long-poll costs no task of its own: a handler holds the request (:meth:`Request.hold`) and
sends the answer later, written at once by whoever sends it, while the connection's task reads
what the peer sends next (its end of stream is a hang-up; once the answer is out, the next
request). The common requests of a Socket.IO client are read and answered without h11
(:func:`~hub.transport.http.parse_request_head`); h11 reads any other.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import socket
from collections.abc import Callable
from typing import Any, NoReturn

import attrs
import h11
import trio

from hub.engineio.outgoing import Outgoing, encode_frame
from hub.transport.counters import TransportStats
from hub.transport.frames import Close, FrameError, FrameReader, Ping
from hub.transport.http import (
    HELD,
    App,
    HeldAnswer,
    Request,
    Response,
    WebSocketClosed,
    encode_response,
    parse_request_head,
    reason_phrase,
)
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
    """HTTP/1.1 with keep-alive on one stream; hands WebSocket upgrades to the app.

    Requests are read by the lean reader of :func:`~hub.transport.http.parse_request_head`
    while they are the common ones; from the first request it leaves to h11, h11 reads every
    request of the connection.
    """

    def __init__(self, app: App, stream: RawStream, limits: Limits) -> None:
        self.app = app
        self.stream = stream
        self.limits = limits
        self._h11: h11.Connection | None = None
        self.pending = b""
        self.answered = False  # the lean path: the current request has its answer
        self.upgrade: tuple[Request, bytes] | None = None
        # The answer a handler holds (a long-poll), and the scope of the task's wait for it.
        self.held: HeldAnswer | None = None
        self.held_scope: trio.CancelScope | None = None
        self.must_close = False

    @property
    def parser(self) -> h11.Connection:
        """The h11 state of the connection, made when a request needs it."""
        if self._h11 is None:
            self._h11 = h11.Connection(
                h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes
            )
        return self._h11

    async def _next_event(self) -> Any:
        while True:
            try:
                event = self.parser.next_event()
            except h11.RemoteProtocolError as exc:
                # h11's message quotes what the client sent (a token in a URL, say): neither
                # the answer nor the log repeats it.
                status = exc.error_status_hint
                self._send_error(
                    status, reason_phrase(status).decode("ascii").lower() or "bad request"
                )
                return None
            if event is not h11.NEED_DATA:
                return event
            if self.pending:
                data, self.pending = self.pending, b""
            else:
                data = await self.stream.receive_some()
            self.parser.receive_data(data)

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
            if self._h11 is None:
                ends = await self._lean_request(timeout)
                if ends is not None:
                    if ends:
                        return None
                    continue
            with trio.move_on_after(timeout) as scope:
                event = await self._next_event()
            if scope.cancelled_caught:
                if self.parser.their_state is h11.SEND_BODY or self.pending:
                    self._send_error(408, "request timeout")
                return None  # idle past the keep-alive timeout, or slow to send the head
            if not isinstance(event, h11.Request):
                return None
            if await self._handle(event):
                return self.upgrade

    async def _lean_request(self, timeout: float) -> bool | None:
        """Read and answer one request on the lean path.

        Returns:
            True when the connection must end, False for the next request, None when the
            request is h11's to read (then :attr:`parser` reads it from :attr:`pending`).
        """
        limit = self.limits.max_header_bytes
        self.answered = False
        end = self.pending.find(b"\r\n\r\n")
        if end < 0:
            with trio.move_on_after(timeout) as scope:
                while end < 0:
                    pending = self.pending
                    # A blank line of bare LFs (which h11 accepts), or a head over the limit.
                    if len(pending) > limit or b"\n\n" in pending or b"\n\r\n" in pending:
                        return None
                    data = await self.stream.receive_some()
                    if not data:
                        return True
                    self.pending += data
                    end = self.pending.find(b"\r\n\r\n", max(0, len(pending) - 3))
            if scope.cancelled_caught:
                if self.pending:
                    self._send_error(408, "request timeout")
                return True  # idle past the keep-alive timeout, or slow to send the head
        parsed = parse_request_head(self.pending[:end]) if end <= limit else None
        if parsed is None or parsed.content_length > self.limits.max_body_bytes:
            return None
        start = end + 4
        stop = start + parsed.content_length
        if len(self.pending) < stop:
            with trio.move_on_after(self.limits.body_timeout) as scope:
                while len(self.pending) < stop:
                    data = await self.stream.receive_some()
                    if not data:
                        return True
                    self.pending += data
            if scope.cancelled_caught:
                # A declared body that does not come would hold the connection open for good.
                self._send_error(408, "request timeout")
                return True
        body = self.pending[start:stop]
        self.pending = self.pending[stop:]
        request = Request.build(
            parsed.method, parsed.target, parsed.headers, body=body, client=self.stream.peer
        )
        return await self._dispatch(request)

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
            if self.parser.their_state is not h11.MIGHT_SWITCH_PROTOCOL:  # type: ignore[attr-defined]
                return True
            trailing, _ = self.parser.trailing_data
            self.upgrade = (request, trailing)
            return True
        with trio.move_on_after(self.limits.body_timeout) as scope:
            body = await self._read_body(limit=self.limits.max_body_bytes)
        if scope.cancelled_caught:
            # A declared body that does not come would hold the connection open for good.
            self._send_error(408, "request timeout")
            return True
        if body is None:
            if (
                self.parser.their_state is h11.ERROR
                or self.parser.our_state is not h11.SEND_RESPONSE
            ):
                return True
            if not getattr(self.app, "handles_body_too_large", False):
                self._send_error(413, "request body too large")
                return True
            request.body_too_large = True
            response = await self.app.handle_http(request)
            self._send(response.with_headers((("Connection", "close"),)))
            return True
        request.body = body
        return await self._dispatch(request)

    async def _dispatch(self, request: Request) -> bool:
        """Hand a request, body read, to the app and write its answer (or wait for it). Returns
        True when the connection must end."""
        if request.method == "GET":
            request.holder = self._hold
        response = await self.app.handle_http(request)
        if response is HELD:
            return await self._wait_held()
        if self.stream.closed:
            return True
        return self._respond(response, head=request.method == "HEAD")

    def _respond(self, response: Response, *, head: bool = False) -> bool:
        """Write the answer and make ready for the next request. Returns True when the
        connection must end."""
        if self._h11 is None:
            # The lean path: the connection stays open unless the answer says it closes
            # (h11's rule for a kept-alive HTTP/1.1 request).
            self._send(response, head=head)
            return self.stream.closed or any(
                name.lower() == "connection"
                and "close" in (token.strip() for token in value.lower().split(","))
                for name, value in response.headers
            )
        self._send(response, head=head)
        if self.parser.our_state is h11.MUST_CLOSE or self.parser.their_state is h11.MUST_CLOSE:
            return True
        try:
            self.parser.start_next_cycle()
        except h11.LocalProtocolError:
            return True
        return False

    def _hold(self) -> HeldAnswer:
        self.must_close = False
        held = self.held = HeldAnswer(self._send_held)
        return held

    def _send_held(self, response: Response) -> None:
        """A held answer, written at once by whoever sends it (the task of the connection
        waits for the peer's next bytes meanwhile, see :meth:`_wait_held`)."""
        if self.stream.closed:
            return
        self.must_close = self._respond(response)
        scope = self.held_scope
        if scope is not None:
            if self.must_close:
                scope.cancel()
            else:
                # The wait goes on as the wait for the next request, within the keep-alive.
                scope.deadline = trio.current_time() + self.limits.keepalive_timeout

    async def _wait_held(self) -> bool:
        """Wait while a handler holds the answer (a long-poll), watching the peer: its end of
        stream is a hang-up. No task and no nursery per request: this task reads what the
        peer sends next, which, once the answer is out, is the next request.

        Returns:
            True when the connection must end.
        """
        held = self.held
        if held is None:
            raise RuntimeError("the handler returned HELD without holding the request")
        # Bytes of a pipelined request read already (by us or by h11): the next request is
        # here, so nothing more is watched; this task waits for the answer only.
        buffered = bool(self.pending) or (
            self._h11 is not None and bool(self._h11.trailing_data[0])
        )
        data = b""
        try:
            with trio.CancelScope() as self.held_scope:
                if held.done:
                    if self.must_close:
                        return True
                    self.held_scope.deadline = trio.current_time() + self.limits.keepalive_timeout
                if buffered:
                    await held.wait()
                else:
                    data = await self.stream.receive_some()
                    if data and not held.done:
                        # Pipelined bytes before the answer: read after it; no more watching.
                        self.held_scope.deadline = math.inf
                        await held.wait()
            if not held.done:  # the peer hung up
                return True
            if self.held_scope.cancelled_caught:
                return True  # the answer said to close (must_close), or the keep-alive ran out
            if not buffered and not data:
                return True
            self.pending += data
            return self.must_close
        finally:
            self.held_scope = None
            self.held = None
            if not held.done:
                held.hang_up()

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
        if self._h11 is None:
            self.answered = True
            data = encode_response(response, head=head)
            if data is None:
                self.stream.close("response not allowed")
            else:
                self.stream.send_nowait(data)
            return
        headers = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
        ]
        headers.append((b"Content-Length", str(len(response.body)).encode()))
        try:
            data = self.parser.send(
                h11.Response(
                    status_code=response.status,
                    headers=headers,
                    reason=reason_phrase(response.status),
                )
            )
            if response.body and not head:
                data += self.parser.send(h11.Data(data=response.body))
            data += self.parser.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self.stream.close("response not allowed")
            return
        self.stream.send_nowait(data or b"")

    def _send_error(self, status: int, message: str) -> None:
        if self._h11 is None:
            if self.answered:
                return
        elif self.parser.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        log.info("HTTP %d to %s:%d: %s", status, *self.stream.peer, message)
        response = Response.text(status, message, (("Connection", "close"),))
        self._send(response)


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
    lines = [b"HTTP/1.1 %d %s" % (response.status, reason_phrase(response.status))]
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
