"""The hub as an ASGI 3 application, for ASGI servers on trio (hypercorn's trio worker).

Run the server with ``hypercorn --worker-class trio module:app`` where ``app = server.asgi()``.
The ASGI lifespan owns the sessions' nursery, so the ASGI server must run lifespan (hypercorn
does). Slower than the native listener, which writes to sockets it owns; ``bench/`` says how
much.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from hub.engineio.outgoing import Outgoing
from hub.transport.http import App, Request, Response, WebSocketClosed

__all__ = ["ASGIApp", "ASGIWebSocket"]

log = logging.getLogger("hub.transport")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_CLOSE = object()


def _request_of(scope: Scope, body: bytes = b"") -> Request:
    target = scope.get("raw_path") or scope["path"].encode()
    if isinstance(target, bytes):
        target = target.decode("latin-1")
    query = scope.get("query_string", b"")
    if query:
        target = f"{target}?{query.decode('latin-1')}"
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope.get("headers", [])]
    client = scope.get("client") or ("", 0)
    return Request.build(
        scope.get("method", "GET"), target, headers, body=body, client=(client[0], client[1])
    )


class ASGIApp:
    """Serve an :class:`~hub.transport.http.App` over ASGI.

    Args:
        app: the app (``server.app``).
        run: runs the sessions' owner until cancelled (``server.run``), started at lifespan
            startup.
        max_body_bytes: the largest request body read.
        max_buffered: the most bytes queued for one WebSocket before it is a slow consumer.
    """

    def __init__(
        self,
        app: App,
        run: Callable[..., Awaitable[None]],
        *,
        max_body_bytes: int = 1_100_000,
        max_buffered: int = 4_000_000,
    ) -> None:
        self.app = app
        self._run = run
        self.max_body_bytes = max_body_bytes
        self.max_buffered = max_buffered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with trio.open_nursery() as nursery:
            message = await receive()
            if message["type"] != "lifespan.startup":
                return
            await nursery.start(self._run)
            await send({"type": "lifespan.startup.complete"})
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            nursery.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                request = _request_of(scope)
                request.body_too_large = True
                if getattr(self.app, "handles_body_too_large", False):
                    await _send_response(send, await self.app.handle_http(request))
                else:
                    await _send_response(send, Response.text(413, "request body too large"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        request = _request_of(scope, b"".join(chunks))
        # The answer is sent as soon as the handler returns, before anything else of this task
        # yields, as the native listener and engine.io do. A polling POST's packets wake other
        # tasks (an ack resolves a call, a handler runs); if its "ok" waited behind a scheduler
        # step of its own, the application's reaction could reach the client first, and
        # python-engineio drops what it queued meanwhile (its write loop ends when disconnect()
        # is called while a POST is in flight, so the DISCONNECT and the close never leave).
        if request.method != "GET":
            # Answered at once, without a task watching for the peer to hang up: only a
            # long-poll waits long enough to need one.
            await _send_response(send, await self.app.handle_http(request))
            return
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                request.disconnected.set()

            nursery.start_soon(watch)
            response = await self.app.handle_http(request)
            await _send_response(send, response)
            nursery.cancel_scope.cancel()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = _request_of(scope)
        websocket = ASGIWebSocket(scope, receive, send, max_buffered=self.max_buffered)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(websocket._write_loop)
            try:
                await self.app.handle_websocket(request, websocket)
            finally:
                websocket.close_nowait(1000)
                with trio.move_on_after(2) as scope_:
                    scope_.shield = True
                    await websocket._done.wait()
                nursery.cancel_scope.cancel()


async def _send_response(send: Send, response: Response) -> None:
    headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in response.headers]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


class ASGIWebSocket:
    """A WebSocket under ASGI: sends queue (bounded) for a writer task."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, *, max_buffered: int) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._max_buffered = max_buffered
        self._queue: collections.deque[Any] = collections.deque()
        self._queued = 0
        self._wake = trio.Event()
        self._done = trio.Event()
        self._closing = False
        self._closed = False
        self.accepted = False

    @property
    def closed(self) -> bool:
        return self._closed or self._closing

    async def accept(self) -> None:
        message = await self._receive()
        if message["type"] != "websocket.connect":
            raise WebSocketClosed(1006, "no websocket.connect")
        await self._send({"type": "websocket.accept"})
        self.accepted = True

    async def reject(self, response: Response) -> None:
        extensions = self._scope.get("extensions") or {}
        if "websocket.http.response" in extensions:
            headers = [
                (n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in response.headers
            ]
            await self._send(
                {
                    "type": "websocket.http.response.start",
                    "status": response.status,
                    "headers": headers,
                }
            )
            await self._send({"type": "websocket.http.response.body", "body": response.body})
        else:
            await self._send({"type": "websocket.close", "code": 1008})
        self._closed = True
        self._done.set()

    async def receive(self) -> str | bytes:
        if self._closed:
            raise WebSocketClosed(1006)
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                if text is not None:
                    return str(text)
                return bytes(message.get("bytes") or b"")
            if kind == "websocket.disconnect":
                self._closed = True
                self._wake.set()
                raise WebSocketClosed(int(message.get("code", 1005)))

    def send_nowait(self, message: Outgoing, *, urgent: bool = False) -> None:
        if self.closed:
            return
        if urgent:
            self._queue.appendleft(message.message)
        else:
            self._queue.append(message.message)
        self._queued += len(message.message)
        if self._queued > self._max_buffered:
            log.info("WebSocket slow consumer: %d bytes queued", self._queued)
            self._queue.clear()
            self._queued = 0
            self.close_nowait(1008, "slow consumer")
            return
        self._wake.set()

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self._closing = True
        self._queue.append((_CLOSE, code, reason))
        self._wake.set()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        self.close_nowait(code, reason)

    async def _write_loop(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._queue:
                    item = self._queue.popleft()
                    if isinstance(item, tuple):
                        if self.accepted and not self._closed:
                            await self._send({"type": "websocket.close", "code": item[1]})
                        self._closed = True
                        return
                    self._queued -= len(item)
                    if self._closed:
                        continue
                    if isinstance(item, str):
                        await self._send({"type": "websocket.send", "text": item})
                    else:
                        await self._send({"type": "websocket.send", "bytes": item})
                if self._closed:
                    return
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self._closed = True
        finally:
            self._done.set()
