"""Engine.IO v4 over trio: the sessions of one endpoint, on long-polling and WebSocket.

:class:`EngineServer` answers the HTTP requests and WebSockets of its path, drives each
:class:`~hub.engineio.Session` (the sans-I/O state machine) with real time, and hands messages to
an :class:`EngineHandler` (the Socket.IO server, or the bare echo endpoint of the conformance
app). A session opened over long-polling runs in a task and nursery of its own, under the
engine's nursery. A session opened on a WebSocket has no task of its own: it runs in its
connection's task (the reader), and the handler's tasks run in the connection's nursery (the
native server's; under ASGI, one opened in that task). Every session's deadlines (heartbeat,
alarms) are kept by the endpoint's one timer task (:mod:`hub.transport.timers`).

A peer's mistake ends its session only, with engine.io's HTTP 400 answer
(``{"code": N, "message": "..."}``) or a WebSocket close, and one log line.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Sequence
from typing import Protocol

import attrs
import trio

from hub.engineio.outgoing import Outgoing
from hub.engineio.packets import Packet, PacketType, decode_packet, decode_payload
from hub.engineio.session import Incoming, Session, SessionOptions, State, Transport
from hub.errors import EngineErrorCode, EngineIOError
from hub.transport.admission import Admission, AdmissionOptions
from hub.transport.counters import TransportStats
from hub.transport.http import HELD, HeldAnswer, Request, Response, WebSocket, WebSocketClosed
from hub.transport.timers import Timers

__all__ = ["Alarm", "Cors", "EngineHandler", "EngineOptions", "EngineServer", "EngineSocket"]

log = logging.getLogger("hub.engineio")

_PING = Outgoing(Packet(PacketType.PING))
_NOOP = Outgoing(Packet(PacketType.NOOP))
_CLOSE = Outgoing(Packet(PacketType.CLOSE))
_PROBE_REPLY = Outgoing(Packet(PacketType.PONG, "probe"))
_TEXT = ("Content-Type", "text/plain; charset=UTF-8")
# Held GETs answered in one step of the endpoint's answering task before it lets others run.
_ANSWER_SLICE = 256


@attrs.frozen
class Cors:
    """Which browser origins may talk to the endpoint.

    Args:
        origins: ``"*"`` for any, a list of exact origins, or a predicate on the origin.
        credentials: send ``Access-Control-Allow-Credentials: true`` (then the origin is echoed
            instead of ``*``).

    A request with an ``Origin`` header that is not allowed is refused with HTTP 403
    (engine.io code 4, "Forbidden"), on polling and on the WebSocket handshake alike. A request
    without ``Origin`` (not from a browser) is let through.
    """

    origins: str | Sequence[str] | Callable[[str], bool] = "*"
    credentials: bool = False

    def allows(self, origin: str) -> bool:
        if isinstance(self.origins, str):
            return self.origins == "*" or self.origins == origin
        if callable(self.origins):
            return self.origins(origin)
        return origin in self.origins

    def headers(self, request: Request) -> tuple[tuple[str, str], ...] | None:
        """The CORS headers for ``request``, or None when its origin is refused."""
        origin = request.headers.get("origin")
        if origin is None:
            return ()
        if not self.allows(origin):
            return None
        if self.origins == "*" and not self.credentials:
            return (("Access-Control-Allow-Origin", "*"),)
        headers: tuple[tuple[str, str], ...] = (
            ("Access-Control-Allow-Origin", origin),
            ("Vary", "Origin"),
        )
        if self.credentials:
            headers += (("Access-Control-Allow-Credentials", "true"),)
        return headers


@attrs.frozen
class EngineOptions:
    """How an Engine.IO endpoint behaves."""

    session: SessionOptions = attrs.field(factory=SessionOptions)
    cors: Cors = attrs.field(factory=Cors)
    transports: tuple[str, ...] = ("polling", "websocket")
    # Put before every session id (``"n1."``): a proxy in front of several nodes reads it in the
    # ``sid`` query parameter and sends each request of a session to the node that holds it.
    sid_prefix: str = ""
    admission: AdmissionOptions = attrs.field(factory=AdmissionOptions)


class EngineHandler(Protocol):
    """What the layer above Engine.IO implements."""

    def on_open(self, socket: EngineSocket) -> None:
        """A session opened; ``socket.nursery`` is ready for the handler's tasks."""

    def on_message(self, socket: EngineSocket, data: str | bytes) -> None:
        """A message arrived. Called in order, synchronously; start a task for slow work."""

    async def on_close(self, socket: EngineSocket, reason: str) -> None:
        """The session ended; the session's nursery is cancelled once this returns."""


def _error(code: EngineErrorCode, message: str | None = None, *, status: int = 400) -> Response:
    return Response.json(status, {"code": int(code), "message": message or code.message})


def _error_of(exc: EngineIOError) -> Response:
    return _error(exc.code, exc.message, status=exc.status)


class EngineSocket:
    """One Engine.IO session as the handler sees it.

    Attributes:
        sid: the session id.
        request: the request that opened the session (headers, query, client address).
        nursery: the session's nursery; tasks started here end with the session. A session
            opened on a native WebSocket shares its connection's nursery and task (no task of
            its own); one opened over polling has its own task and nursery.
        data: free for the handler's use.
    """

    # Thousands of these live at once: slots, and the events made only when someone waits.
    __slots__ = (
        "_alarm",
        "_alarms",
        "_answer_due",
        "_changed",
        "_closing",
        "_ended",
        "_ended_event",
        "_handler_closed",
        "_handler_event",
        "_held",
        "_held_headers",
        "_inline",
        "_probe_ws",
        "_server",
        "_ws",
        "data",
        "nursery",
        "request",
        "session",
        "sid",
        "timer_deadline",
        "write_frame",
        "write_volatile",
    )

    def __init__(self, server: EngineServer, session: Session, request: Request) -> None:
        self._server = server
        self.session = session
        self.sid = session.sid
        self.request = request
        self.nursery: trio.Nursery | None = None
        self.data: object = None
        self._ws: WebSocket | None = None
        self._probe_ws: WebSocket | None = None
        self._changed: trio.Event | None = None  # set (and dropped) at the next change
        # The GET waiting for something to carry, and the headers of its answer (CORS). A
        # change of the session puts the socket on the endpoint's list of answers due
        # (``_answer_due``), answered in the endpoint's next step.
        self._held: HeldAnswer | None = None
        self._held_headers: tuple[tuple[str, str], ...] = ()
        self._answer_due = False
        self._ended = False
        self._ended_event: trio.Event | None = None  # set when the session ends
        # The session runs in its WebSocket connection's task (``handle_websocket``): at its
        # end the handler's on_close runs in a task of that nursery, which sets these.
        self._inline = False
        self._handler_closed = False
        self._handler_event: trio.Event | None = None
        self.timer_deadline = math.inf  # kept by the endpoint's Timers
        # The earliest of the alarms' deadlines (math.inf, not float("inf"): one float object
        # for all the sessions, not one each).
        self._alarm = math.inf
        self._alarms: list[Alarm] | None = None
        self._closing: str | None = None  # closed by the server; the last GET is on its way
        # The delivery fast path: writes a WebSocket frame straight to the connection's stream
        # while the session is open on a native WebSocket; None otherwise (then send_nowait).
        self.write_frame: Callable[[bytes], None] | None = None
        self.write_volatile: Callable[[bytes], bool] | None = None

    @property
    def transport(self) -> str:
        return self.session.transport.value

    @property
    def closed(self) -> bool:
        return self.session.closed

    # -- sending ---------------------------------------------------------------------------

    def send_nowait(self, message: Outgoing, *, urgent: bool = False) -> None:
        """Send one Engine.IO packet; never waits. Does nothing once the session is closed.

        ``urgent`` packets (pings) go ahead of what waits for a WebSocket.
        """
        session = self.session
        if session.state is State.CLOSED or self._closing is not None:
            return
        ws = self._ws
        if ws is not None:
            if ws.closed:
                self._end("transport close")
                return
            ws.send_nowait(message, urgent=urgent)
            return
        try:
            session.queue(message)
        except OverflowError:
            self._end("slow consumer")
            return
        self._wake()

    def send_volatile(self, message: Outgoing) -> bool:
        """Send a packet only if the connection can take it now; drop it otherwise.

        socket.io's volatile events: on a WebSocket with nothing queued it goes out; over
        long-polling only when a GET is waiting for it.

        Returns:
            Whether it was sent.
        """
        write = self.write_volatile
        if write is not None:
            return write(message.frame)
        session = self.session
        if session.closed or self._closing is not None:
            return False
        if self._ws is not None:
            self.send_nowait(message)  # a WebSocket without a fast path (ASGI)
            return True
        if not session.polling_waiting or session.has_queued:
            return False
        self.send_nowait(message)
        return True

    def _use_websocket(self, ws: WebSocket) -> None:
        self._ws = ws
        self.write_frame = getattr(ws, "frame_writer", None)
        self.write_volatile = getattr(ws, "volatile_writer", None)

    def send_message(self, data: str | bytes) -> None:
        """Send one ``message`` packet."""
        self.send_nowait(Outgoing.message_of(data))

    def close(self, reason: str = "forced close") -> None:
        """Close the session from the server side: the client gets an Engine.IO ``close``.

        The stock client reconnects by itself after this (unlike after a Socket.IO disconnect).
        """
        if self.session.closed or self._closing is not None:
            return
        ws = self._ws
        if ws is not None:
            ws.send_nowait(_CLOSE)
            ws.close_nowait(1000)
            self._end(reason)
            return
        # Over polling, as engine.io does: what is queued drains with the next GET, and the
        # close packet goes with the GET after it (a client handles a payload's messages after
        # the payload, so a close in the same payload would overtake them). The session ends
        # when the close has gone, or after pingTimeout without a GET.
        self._closing = reason
        self.write_frame = self.write_volatile = None
        self._wake()
        if self.nursery is None or self.session.closed:
            self._end(reason)
            return
        self.nursery.start_soon(self._end_after, self.session.options.ping_timeout, reason)

    # -- internals -------------------------------------------------------------------------

    async def _end_after(self, delay: float, reason: str) -> None:
        await trio.sleep(delay)
        self._end(reason)

    def _wake(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            changed.set()
        if self._held is not None and not self._answer_due:
            self._answer_due = True
            self._server._answer_soon(self)

    def _hold(self, held: HeldAnswer, headers: tuple[tuple[str, str], ...]) -> None:
        """Keep the GET ``held`` until the session has something for it (:meth:`_answer`)."""
        self._held = held
        self._held_headers = headers
        held.on_hang_up = self._hung_up

    def _hung_up(self) -> None:
        # engine.io: a polling request closed before its answer is a "transport close"
        # ("poll connection closed prematurely").
        self._held = None
        self._end("transport close")
        self.session.end_poll()

    def _answer(self) -> None:
        """Answer the held GET with what the session has for it, if anything (called by the
        endpoint, a step after the change: what one step queues leaves in one answer)."""
        self._answer_due = False
        held = self._held
        if held is None:
            return
        body = self._server._poll_body(self)
        if body is None:
            return
        self._held = None
        self.session.end_poll()
        held.send(Response(200, (_TEXT, *self._held_headers), body.encode()))

    def _next_change(self) -> trio.Event:
        """An event set at the next change of the session (a packet queued, its end...)."""
        changed = self._changed
        if changed is None:
            changed = self._changed = trio.Event()
        return changed

    def _rearm(self) -> None:
        if not self.session.closed:
            self._server._timers.schedule(self, self._next_deadline())

    def _end(self, reason: str) -> None:
        """The session is over (if it was not already); wake everything that waits on it."""
        self.session.close(reason)
        self.write_frame = self.write_volatile = None
        if not self._ended:
            self._ended = True
            self._server._timers.schedule(self, math.inf)
            self._wake()
            for ws in (self._ws, self._probe_ws):
                if ws is not None:
                    ws.close_nowait(1000)
            self._server._forget(self)
            if self._ended_event is not None:
                self._ended_event.set()
            if self._inline:
                self._start_close_handler()

    def _start_close_handler(self) -> None:
        # At once, even while the connection's reader still waits for the client's close frame.
        nursery = self.nursery
        try:
            if nursery is None:
                raise RuntimeError("no nursery")
            nursery.start_soon(self._close_handler)
        except RuntimeError:
            self._handler_closed = True  # the connection is gone already: nothing to wait for
            if self._handler_event is not None:
                self._handler_event.set()

    async def _close_handler(self) -> None:
        try:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                reason = self.session.close_reason or "transport close"
                await self._server.handler.on_close(self, reason)
        finally:
            self._handler_closed = True
            if self._handler_event is not None:
                self._handler_event.set()

    async def _handler_closing(self) -> None:
        """Wait until the handler's on_close has returned (an inline session's end)."""
        if not self._handler_closed:
            if self._handler_event is None:
                self._handler_event = trio.Event()
            await self._handler_event.wait()

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The session's own nursery: heartbeat and the handler's tasks."""
        handler = self._server.handler
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                task_status.started()
                handler.on_open(self)
                self._rearm()  # the endpoint's Timers keep its deadlines from now on
                if not self._ended:
                    self._ended_event = trio.Event()
                    await self._ended_event.wait()
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await handler.on_close(self, self.session.close_reason or "transport close")
                nursery.cancel_scope.cancel()
        except* Exception:
            # A bug in the handler's tasks: this session ends, the server goes on.
            log.exception("session %s failed", self.sid)
            self.session.close("server error")
        finally:
            self._end(self.session.close_reason or "server shutting down")

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Alarm:
        """Call ``callback`` at ``deadline`` (trio time) unless the session ended first.

        The alarms are kept with the session's other deadlines by the endpoint's one timer
        task: no task, no cancel scope per alarm (a connect timeout, a token's expiry...).

        Returns:
            The alarm; its :meth:`Alarm.cancel` takes it back.
        """
        alarm = Alarm(self, deadline, callback)
        if self._alarms is None:
            self._alarms = [alarm]
        else:
            self._alarms.append(alarm)
        if deadline < self._alarm:
            self._alarm = deadline
            self._rearm()
        return alarm

    def _forget_alarm(self, alarm: Alarm) -> None:
        alarms = self._alarms
        if alarms is None or alarm not in alarms:
            return
        alarms.remove(alarm)
        self._alarms = alarms or None
        self._alarm = min((a.deadline for a in alarms), default=math.inf)

    def _ring(self, now: float) -> None:
        """Call the alarms due at ``now``, earliest first."""
        alarms = self._alarms or []
        due = sorted((a for a in alarms if a.deadline <= now), key=lambda a: a.deadline)
        for alarm in due:
            self._forget_alarm(alarm)
        for alarm in due:
            if self.session.closed:
                return
            alarm.callback()

    def _next_deadline(self) -> float:
        return min(self.session.next_deadline(), self._alarm)

    def on_timer(self, now: float) -> None:
        """A deadline passed (called by the endpoint's :class:`Timers`): pings, pong timeout,
        an abandoned probe, the alarm."""
        session = self.session
        if session.closed:
            return
        if now >= self._alarm:
            self._ring(now)
            if session.closed:
                return
        was_upgrading = session.state is State.UPGRADING
        for packet in session.on_deadline(now):
            if packet.type is PacketType.PING and self._closing is None:
                self.send_nowait(_PING, urgent=True)
        if session.closed:
            log.info("session %s: %s", self.sid, session.close_reason)
            self._end(session.close_reason or "ping timeout")
            return
        if was_upgrading and session.state is State.OPEN and self._probe_ws is not None:
            self._probe_ws.close_nowait(1000)
            self._probe_ws = None
        self._rearm()

    def on_timer_error(self) -> None:
        self._end("server error")

    def _receive(self, packet: Packet, *, via: Transport) -> Incoming:
        """Feed one packet to the session and act on it. Raises EngineIOError."""
        incoming = self.session.receive(packet, trio.current_time(), via=via)
        if incoming is Incoming.MESSAGE:
            self._server.handler.on_message(self, packet.data)
        elif incoming is Incoming.PONG:
            self._rearm()
        elif incoming is Incoming.CLOSE:
            self._end("transport close")
        return incoming


class Alarm:
    """A callback due at a time, kept by its session (:meth:`EngineSocket.call_at`)."""

    __slots__ = ("_socket", "callback", "deadline")

    def __init__(self, socket: EngineSocket, deadline: float, callback: Callable[[], None]) -> None:
        self._socket = socket
        self.deadline = deadline
        self.callback = callback

    def cancel(self) -> None:
        """Take the alarm back (nothing happens if it rang already)."""
        self._socket._forget_alarm(self)


class EngineServer:
    """The Engine.IO endpoint of one path.

    Run :meth:`run` in a nursery first (it owns the sessions), then route the path's HTTP
    requests to :meth:`handle_http` and its WebSockets to :meth:`handle_websocket`.
    """

    handles_body_too_large = True  # an oversize POST closes its session (413)

    def __init__(self, handler: EngineHandler, options: EngineOptions | None = None) -> None:
        self.handler = handler
        options = options or EngineOptions()
        if "websocket" not in options.transports and options.session.allow_upgrades:
            # Offer no upgrade that the endpoint would then refuse.
            session = attrs.evolve(options.session, allow_upgrades=False)
            options = attrs.evolve(options, session=session)
        self.options = options
        self.sockets: dict[str, EngineSocket] = {}
        # Upgrades, and the bytes of the listener that serves this endpoint (Server.serve).
        self.stats = TransportStats()
        self._nursery: trio.Nursery | None = None
        self._timers = Timers()
        # Sockets whose held GET may have its answer now, and what wakes the task answering
        # them (``_answer_held``) when the list stops being empty.
        self._due: list[EngineSocket] = []
        self._due_event = trio.Event()
        # Sessions that the client closed over polling while no GET was waiting, with the time
        # until which the GET it has in flight is answered "6" (noop) rather than refused.
        self._closed_by_client: dict[str, float] = {}
        # False once the server is shutting down: handshakes are refused (503), the sessions
        # that are open finish.
        self.accepting = True
        self._admission = Admission(options.admission)
        # The address a handshake is counted against (the server swaps in one that believes
        # its trusted proxies' X-Forwarded-For).
        self.address_of: Callable[[Request], str] = lambda request: request.client[0]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the sessions until cancelled; closing ends every session."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._timers.run)
            nursery.start_soon(self._answer_held)
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def close_all(self, reason: str = "server shutting down") -> None:
        """Close every session at the Engine.IO level (the clients reconnect elsewhere)."""
        for socket in list(self.sockets.values()):
            socket.close(reason)

    async def shutdown(self, grace: float) -> bool:
        """Refuse new sessions, close every open one at the Engine.IO level after what is
        queued for it (over polling, with its next GET), and wait for them to end.

        Returns:
            Whether every session ended within ``grace`` seconds.
        """
        self.accepting = False
        self.close_all("server shutting down")
        with trio.move_on_after(grace):
            while self.sockets:
                await trio.sleep(0.02)
        return not self.sockets

    def _answer_soon(self, socket: EngineSocket) -> None:
        if not self._due:
            self._due_event.set()
        self._due.append(socket)

    async def _answer_held(self) -> None:
        """Answer the held GETs whose sessions changed, in the step after the change.

        One task for the endpoint, woken once however many GETs are due: a broadcast to a room
        of long-polling clients costs no task switch per member, and everything queued within
        one step (the echoes of one POST, a handler's emits) leaves in one answer. A long list
        is answered in slices, so others run in between; the order of the list is kept.
        """
        while True:
            await self._due_event.wait()
            self._due_event = trio.Event()
            due, self._due = self._due, []
            for start in range(0, len(due), _ANSWER_SLICE):
                if start:
                    await trio.lowlevel.checkpoint()
                for socket in due[start : start + _ANSWER_SLICE]:
                    try:
                        socket._answer()
                    except Exception:
                        # A bug in writing one answer ends that session, not the endpoint.
                        log.exception("session %s: answering its GET failed", socket.sid)
                        socket._held = None
                        socket._end("server error")

    def _forget(self, socket: EngineSocket) -> None:
        if self.sockets.get(socket.sid) is socket:
            del self.sockets[socket.sid]
        session = socket.session
        if (
            session.close_reason == "transport close"
            and session.transport is Transport.POLLING
            and not session.polling_waiting
        ):
            now = trio.current_time()
            self._closed_by_client = {
                sid: until for sid, until in self._closed_by_client.items() if until > now
            }
            self._closed_by_client[socket.sid] = now + 1.0

    async def _open(
        self, request: Request, transport: Transport, *, task: bool = True
    ) -> EngineSocket:
        """A new session; with ``task``, running in a task of its own (else the caller runs it:
        ``_run_websocket``)."""
        if self._nursery is None:
            raise RuntimeError("EngineServer.run() is not running")
        # 20 URL-safe characters (``[A-Za-z0-9_-]``), after the node's prefix if there is one.
        sid = self.options.sid_prefix + secrets.token_urlsafe(15)
        session = Session(sid, transport, self.options.session, now=trio.current_time())
        socket = EngineSocket(self, session, request)
        self.sockets[sid] = socket
        if task:
            await self._nursery.start(socket._run)
        else:
            await trio.lowlevel.checkpoint()
        return socket

    # -- checks common to both transports -------------------------------------------------

    def _check(self, request: Request) -> Response | tuple[tuple[str, str], ...]:
        """Validate the query and the origin; a Response is the refusal."""
        cors = self.options.cors.headers(request)
        if cors is None:
            return _error(EngineErrorCode.FORBIDDEN, status=403)
        if not self.accepting and "sid" not in request.query:
            return Response.json(503, {"message": "Server shutting down"}).with_headers(cors)
        if request.query.get("EIO") != "4":
            return _error(EngineErrorCode.UNSUPPORTED_PROTOCOL_VERSION).with_headers(cors)
        if request.query.get("transport") not in self.options.transports:
            return _error(EngineErrorCode.UNKNOWN_TRANSPORT).with_headers(cors)
        if "sid" not in request.query:
            refusal = self._admission.refuse(
                self.address_of(request), len(self.sockets), trio.current_time()
            )
            if refusal is not None:
                status, message, retry_after = refusal
                return Response.json(status, {"message": message}).with_headers(
                    (*cors, ("Retry-After", str(retry_after)))
                )
        return cors

    # -- HTTP long-polling -----------------------------------------------------------------

    async def handle_http(self, request: Request) -> Response:
        """Answer a polling request (or a CORS preflight) of this endpoint."""
        if request.method == "OPTIONS":
            cors = self.options.cors.headers(request)
            if cors is None:
                return _error(EngineErrorCode.FORBIDDEN, status=403)
            return Response(
                204,
                (
                    *cors,
                    ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
                    ("Access-Control-Allow-Headers", "Content-Type, Authorization"),
                    ("Access-Control-Max-Age", "86400"),
                ),
            )
        checked = self._check(request)
        if isinstance(checked, Response):
            return checked
        cors = checked
        if request.query["transport"] != "polling":
            return _error(EngineErrorCode.BAD_REQUEST, "WebSocket handshake expected").with_headers(
                cors
            )
        sid = request.query.get("sid")
        if sid is None:
            if request.method != "GET":
                return _error(EngineErrorCode.BAD_HANDSHAKE_METHOD).with_headers(cors)
            socket = await self._open(request, Transport.POLLING)
            body = "0" + socket.session.open_packet().data  # type: ignore[operator]
            return Response.text(200, body, cors)
        socket_or_none = self.sockets.get(sid)
        if socket_or_none is None:
            until = self._closed_by_client.pop(sid, None)
            if request.method == "GET" and until is not None and until > trio.current_time():
                # The client closed the session while this GET was on its way (the POST of
                # "1" overtook it): end the GET as a close would have ended it, with a noop.
                return Response.text(200, "6", cors)
            return _error(EngineErrorCode.UNKNOWN_SID).with_headers(cors)
        if request.method == "GET":
            return await self._poll(socket_or_none, request, cors)
        if request.method == "POST":
            response = self._post(socket_or_none, request)
        else:
            response = _error(EngineErrorCode.BAD_REQUEST, "method not allowed")
        return response.with_headers(cors)

    async def _poll(
        self, socket: EngineSocket, request: Request, cors: tuple[tuple[str, str], ...]
    ) -> Response:
        session = socket.session
        try:
            session.begin_poll()
        except EngineIOError as exc:
            if session.closed:
                log.info("session %s: %s", socket.sid, exc.message)
                socket._end(session.close_reason or "transport error")
            return _error_of(exc).with_headers(cors)
        held: HeldAnswer | None = None
        kept = False  # the server holds the GET: its answer ends the poll
        try:
            if session.state is State.UPGRADING:
                # A GET that arrives between the probe and the upgrade is held for up to one
                # check interval (engine.io's is 100 ms): if the upgrade completes meanwhile,
                # the GET is refused like any after the upgrade; otherwise it gets a noop.
                with trio.move_on_after(0.1):
                    while session.state is State.UPGRADING:
                        await socket._next_change().wait()
                if session.transport is Transport.WEBSOCKET:
                    return _error(EngineErrorCode.BAD_REQUEST, "session upgraded").with_headers(
                        cors
                    )
            body = self._poll_body(socket)
            if body is not None:
                return Response(200, (_TEXT, *cors), body.encode())
            held = request.hold()
            if held is not None:
                # Nothing to send yet: the endpoint's answering task sends the answer; the
                # connection's task watches for a hang-up meanwhile.
                socket._hold(held, cors)
                kept = True
                return HELD
            # A server that cannot hold the request (ASGI): this task waits for the answer,
            # and a task of its own watches for the peer to hang up.
            held = HeldAnswer()
            socket._hold(held, cors)
            async with trio.open_nursery() as nursery:

                async def watch_peer(held: HeldAnswer = held) -> None:
                    await request.disconnected.wait()
                    held.hang_up()

                nursery.start_soon(watch_peer)
                response = await held.wait()
                nursery.cancel_scope.cancel()
            return response or Response(200, (_TEXT, *cors), b"6")
        finally:
            if not kept and (held is None or not held.done):
                if held is not None and socket._held is held:
                    socket._held = None  # cancelled while waiting
                session.end_poll()

    def _poll_body(self, socket: EngineSocket) -> str | None:
        """What a GET of ``socket`` carries now (an Engine.IO v4 payload), or None when it must
        wait for something to carry."""
        session = socket.session
        if session.closed:
            # The client's own close is answered with a noop; ours with a close packet.
            return "6" if session.close_reason == "transport close" else "1"
        if session.state is State.UPGRADING or session.transport is Transport.WEBSOCKET:
            return "6"
        if session.has_queued:
            # "the packets are concatenated with the record separator"; all that is queued.
            return "\x1e".join([item.polling_item for item in session.take()])
        if socket._closing is not None:
            socket._end(socket._closing)
            return "1"
        return None

    def _post(self, socket: EngineSocket, request: Request) -> Response:
        session = socket.session
        try:
            session.check_post()
        except EngineIOError as exc:
            return _error_of(exc)  # a stray request; the session itself goes on
        try:
            if request.body_too_large:
                raise EngineIOError(
                    EngineErrorCode.BAD_REQUEST, "payload over maxPayload", status=413
                )
            if request.headers.get("content-type", "").startswith("application/octet-stream"):
                raise EngineIOError(EngineErrorCode.BAD_REQUEST, "binary payloads are not v4")
            packets = decode_payload(request.body, max_payload=self.options.session.max_payload)
            for packet in packets:
                socket._receive(packet, via=Transport.POLLING)
                if session.closed or socket._closing is not None:
                    break
        except EngineIOError as exc:
            log.info("session %s: %s", socket.sid, exc.message)
            socket._end("parse error")
            return _error_of(exc)
        return Response.text(200, "ok")

    # -- WebSocket -------------------------------------------------------------------------

    async def handle_websocket(self, request: Request, ws: WebSocket) -> None:
        """Serve a WebSocket of this endpoint: a new session, or an upgrade of one."""
        checked = self._check(request)
        if isinstance(checked, Response):
            await ws.reject(checked)
            return
        if request.query["transport"] != "websocket":
            await ws.reject(_error(EngineErrorCode.BAD_REQUEST, "polling over a WebSocket"))
            return
        sid = request.query.get("sid")
        if sid is None:
            # A session opened on a WebSocket runs in this task (the connection's): no task of
            # its own, and its nursery (for the handler's tasks) is the connection's when the
            # WebSocket offers one (the native server's). When the session ends, the handler's
            # on_close runs at once in a task of that nursery; the connection ends after it.
            await ws.accept()
            socket = await self._open(request, Transport.WEBSOCKET, task=False)
            nursery: trio.Nursery | None = getattr(ws, "nursery", None)
            if nursery is None:
                await self._serve_websocket(socket, ws)
                return
            try:
                self._start_websocket(socket, ws, nursery)
                await self._read_websocket(socket, ws)
            finally:
                socket._end(socket.session.close_reason or "server shutting down")
            await socket._handler_closing()
            return
        existing = self.sockets.get(sid)
        if existing is None:
            await ws.reject(_error(EngineErrorCode.UNKNOWN_SID))
            return
        if existing.session.transport is Transport.WEBSOCKET or existing.session.upgrading:
            # The official suite's client needs the handshake to succeed before the close.
            await ws.accept()
            await ws.aclose(1000)
            return
        await self._upgrade(existing, ws)

    async def _upgrade(self, socket: EngineSocket, ws: WebSocket) -> None:
        session = socket.session
        try:
            session.begin_probe(trio.current_time())
        except EngineIOError as exc:
            await ws.reject(_error_of(exc))
            return
        socket._rearm()
        await ws.accept()
        socket._probe_ws = ws
        try:
            while session.transport is Transport.POLLING:
                message = await ws.receive()
                incoming = socket._receive(decode_packet(message), via=Transport.WEBSOCKET)
                if incoming is Incoming.PROBE:
                    ws.send_nowait(_PROBE_REPLY)
                    socket._wake()
                elif incoming is Incoming.UPGRADE:
                    self.stats.upgrades += 1
                    log.info(
                        "connection upgraded",
                        extra={"connection": socket.sid, "transport": "websocket"},
                    )
                    socket._probe_ws = None
                    socket._use_websocket(ws)
                    for queued in session.take():
                        ws.send_nowait(queued)
                    socket._rearm()
                    socket._wake()
        except WebSocketClosed:
            if socket._probe_ws is ws:  # the probe failed; polling goes on
                socket._probe_ws = None
                if session.state is State.UPGRADING:
                    session.state = State.OPEN
            return
        except EngineIOError as exc:
            log.info("session %s: %s", socket.sid, exc.message)
            ws.close_nowait(1002, exc.message)
            socket._end("parse error")
            return
        await self._read_websocket(socket, ws)

    async def _serve_websocket(self, socket: EngineSocket, ws: WebSocket) -> None:
        """A new session on a WebSocket without a nursery of its connection (under ASGI)."""
        try:
            async with trio.open_nursery() as nursery:
                try:
                    self._start_websocket(socket, ws, nursery)
                    await self._read_websocket(socket, ws)
                finally:
                    socket._end(socket.session.close_reason or "server shutting down")
                await socket._handler_closing()
                nursery.cancel_scope.cancel()
        except* Exception:
            # A bug in the handler's tasks: this session ends, the server goes on.
            log.exception("session %s failed", socket.sid)
            socket.session.close("server error")
        finally:
            socket._end(socket.session.close_reason or "server shutting down")

    def _start_websocket(self, socket: EngineSocket, ws: WebSocket, nursery: trio.Nursery) -> None:
        socket.nursery = nursery
        socket._inline = True
        self.handler.on_open(socket)
        socket._rearm()  # the endpoint's Timers keep its deadlines from now on
        socket._use_websocket(ws)
        ws.send_nowait(Outgoing(socket.session.open_packet()))

    async def _read_websocket(self, socket: EngineSocket, ws: WebSocket) -> None:
        reason = "transport close"
        session = socket.session
        try:
            while not session.closed:
                message = await ws.receive()
                if message == "3":
                    # A pong, the one message every client sends every pingInterval: straight
                    # to the session, without a packet object.
                    if session.receive_pong(trio.current_time()):
                        socket._rearm()
                    continue
                socket._receive(decode_packet(message), via=Transport.WEBSOCKET)
                # Not kept while waiting for the next one: an idle connection would hold its
                # last message (up to maxPayload) in this frame.
                del message
        except WebSocketClosed as exc:
            # As engine.io: the connection going away (with or without a close frame) is a
            # "transport close"; a broken frame or an oversize message is a "transport error".
            if exc.reason == "slow consumer":
                reason = "slow consumer"
            elif exc.code in (1002, 1007, 1009):
                reason = "transport error"
            else:
                reason = "transport close"
        except EngineIOError as exc:
            log.info("session %s: %s", socket.sid, exc.message)
            reason = "parse error"
            ws.close_nowait(1002, exc.message)
        finally:
            socket._end(reason)
