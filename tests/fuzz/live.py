"""The decoders behind a real listener on 127.0.0.1: HTTP heads and bodies, WebSocket frames,
the emit endpoint's JSON.

The server runs in its own thread (its own ``trio.run``) so that inputs are sent with plain
blocking sockets, at a few thousand a second, from a hypothesis test or from the long run. The
server is the real one (the native listener, h11, wsproto, the Engine.IO endpoint, the hub);
the client is a socket and a little parsing, nothing of the server's.

Each ``send`` method raises :class:`AssertionError` when the server broke its contract: an answer
that is not HTTP, a 5xx, a connection that stays open after the input ended, an invalid frame or
an internal-error close code, an emit endpoint that answers 500 or delivers from a refused
request, or an error or traceback in the server's log.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import re
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import attrs
import trio
import trio_websocket
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from hub.app.auth import AuthSettings, mint_token
from hub.app.config import Config
from hub.app.hub import Hub, HubAddresses
from hub.app.store import SQLiteStore
from hub.conformance import serve_conformance

__all__ = [
    "KNOWN_BUGS",
    "SENTINEL",
    "WAIT",
    "EmitTarget",
    "ErrorLog",
    "HttpAnswer",
    "HttpTarget",
    "ServerThread",
    "TabStats",
    "WsOutcome",
    "WsTarget",
    "bystander",
    "conformance_thread",
    "frame_close",
    "hub_thread",
    "parse_frames",
    "parse_responses",
    "send_and_finish",
]

T = TypeVar("T")

WAIT = 3.0
"""How long the server may take to answer and close after an input ended (a hang otherwise)."""


KNOWN_BUGS: dict[str, str] = {
    "bad-handshake-traceback": "WebSocketClosed: WebSocket closed (1002: bad WebSocket handshake)",
}
"""Errors the server logged before they were fixed, by name and a fragment of the logged
traceback, each with a test that fails if it comes back. They are counted apart, so that a long
run reports them by name and goes on to find what is not known."""


class ErrorLog(logging.Handler):
    """Keeps every record of level WARNING and above that the ``hub`` loggers write, and counts
    the :data:`KNOWN_BUGS` apart."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self.known: dict[str, int] = dict.fromkeys(KNOWN_BUGS, 0)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            text = self.format(record)
            for name, fragment in KNOWN_BUGS.items():
                if fragment in text:
                    self.known[name] += 1
                    return
        self.records.append(record)

    def take_errors(self) -> list[str]:
        """Every ERROR (or worse) logged since the last call: a traceback, a connection or a
        session that failed."""
        errors = [self.format(r) for r in self.records if r.levelno >= logging.ERROR]
        self.records.clear()
        return errors


class ServerThread(Generic[T]):
    """Runs ``start(nursery)`` (which starts servers and returns where they are) in a trio run on
    a thread of its own, until :meth:`stop`.

    Attributes:
        value: what ``start`` returned (an address).
        log: the ``hub`` loggers' warnings and errors while it runs.
        notes: what the tasks ``start`` started report (a bystander client's counters).
    """

    def __init__(
        self,
        start: Callable[[trio.Nursery], Awaitable[T]],
        notes: dict[str, Any] | None = None,
    ) -> None:
        self._start = start
        self.notes = notes if notes is not None else {}
        self._started: queue.Queue[tuple[T | None, BaseException | None]] = queue.Queue()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=self._main, name="fuzz-server", daemon=True)
        self.log = ErrorLog()
        self.failure: BaseException | None = None
        self.value: T

    def __enter__(self) -> ServerThread[T]:
        logging.getLogger("hub").addHandler(self.log)
        self._thread.start()
        value, error = self._started.get(timeout=30)
        if error is not None:
            raise error
        assert value is not None
        self.value = value
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            trio.run(self._run)
        except BaseException as exc:  # reported by check() and stop()
            self.failure = exc
            self._started.put((None, exc))

    async def _run(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            value = await self._start(nursery)
            self._started.put((value, None))

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``await fn(*args)`` in the server's trio run and return its result."""
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def check(self) -> None:
        """Fail if the server thread died, or logged an error since the last check."""
        assert self.failure is None, f"the server died: {self.failure!r}"
        assert self._thread.is_alive(), "the server thread ended"
        errors = self.log.take_errors()
        assert not errors, "the server logged errors:\n" + "\n".join(errors[:3])

    def stop(self) -> None:
        if self._token is not None and self._scope is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(timeout=10)
        logging.getLogger("hub").removeHandler(self.log)


# --- raw sockets ----------------------------------------------------------------------------


def _connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def send_and_finish(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data``, end our side, and read until the server closes (within :data:`WAIT`)."""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the server closed first (EPIPE, ECONNRESET, ENOTCONN): what it sent is read
    received = bytearray()
    deadline = time.monotonic() + WAIT
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break  # closed with our data unread: a close as good as any
        except TimeoutError:
            raise AssertionError(
                f"the server kept the connection open {WAIT} s after the input ended"
                f" (received {bytes(received[:200])!r})"
            ) from None
        if not chunk:
            break
        received += chunk
        assert len(received) < 4_000_000, "the server answers without end"
    return bytes(received)


_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")


@attrs.frozen
class HttpAnswer:
    """What the server said to one input: the statuses of its responses, in order, and the
    bytes after a 101 (WebSocket frames)."""

    statuses: tuple[int, ...]
    rest: bytes = b""


def parse_responses(data: bytes, *, heads: bool = False) -> HttpAnswer:
    """Split what a server sent into HTTP/1.1 responses, checking each is well formed.

    ``heads``: some of the requests may have been HEAD requests, whose answers declare the
    length of a body they do not carry: an answer followed by the next status line, or by
    nothing, is taken as one of those."""
    statuses: list[int] = []
    while data:
        match = _STATUS_LINE.match(data)
        assert match, f"not an HTTP/1.1 response: {data[:120]!r}"
        status = int(match.group(1))
        end = data.find(b"\r\n\r\n")
        assert end != -1, f"a response head without its end: {data[:200]!r}"
        headers = {}
        for line in data[match.end() : end].split(b"\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(b":")
            assert sep, f"bad header line {line!r}"
            assert name, f"bad header line {line!r}"
            assert name == name.strip(), f"bad header line {line!r}"
            headers[name.lower()] = value.strip()
        statuses.append(status)
        if status == 101:
            return HttpAnswer(tuple(statuses), data[end + 4 :])
        assert b"content-length" in headers, f"no Content-Length: {data[:200]!r}"
        length = int(headers[b"content-length"])
        after = data[end + 4 :]
        if heads and (not after or _STATUS_LINE.match(after)):
            length = 0
        body = data[end + 4 : end + 4 + length]
        assert len(body) == length, "a response body cut short"
        data = data[end + 4 + length :]
    return HttpAnswer(tuple(statuses))


# --- HTTP -----------------------------------------------------------------------------------

# What the listener and the apps behind it may answer to anything: the answers to valid
# requests, and the refusals of invalid ones (400, 413 body too large, 431 head too large,
# 501 a transfer coding h11 does not implement). Never another 5xx.
HTTP_STATUSES = frozenset({101, 200, 204, 400, 403, 404, 405, 408, 413, 431, 501})


class HttpTarget:
    """Sends raw bytes on a new connection to the native listener; checks the answer."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address

    def send(self, data: bytes) -> HttpAnswer:
        """Send ``data`` then end the connection; the server answers and closes.

        Returns:
            The statuses it answered (none when it just closed).
        """
        with _connect(self.address) as sock:
            answer = parse_responses(send_and_finish(sock, data), heads=b"HEAD" in data)
        unexpected = set(answer.statuses) - HTTP_STATUSES
        assert not unexpected, f"answered {sorted(unexpected)} to {data[:200]!r}"
        return answer

    def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        """One request on a new connection, as a well-behaved client sends it: status, body."""
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if body or method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        with _connect(self.address) as sock:
            sock.sendall(head.encode() + b"\r\n" + body)
            status, content, _head = _read_one(sock)
        return status, content

    def open_session(self) -> str:
        """A well-behaved client opens an Engine.IO session over polling; returns its sid.

        (The conformance app closes it within half a second when nothing answers its ping.)
        """
        request = b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n"
        with _connect(self.address) as sock:
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, f"the server closed on a valid handshake: {data!r}"
                data += chunk
        answer = parse_responses(data)
        assert answer.statuses == (200,), data
        body = data[data.index(b"\r\n\r\n") + 4 :]
        assert body.startswith(b'0{"sid":'), data
        sid: str = json.loads(body[1:])["sid"]
        return sid

    def healthy(self) -> None:
        """A well-behaved client still gets its handshake, and its message echoed."""
        sid = self.open_session()
        target = f"/engine.io/?EIO=4&transport=polling&sid={sid}"
        post = f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n4hello"
        get = f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"
        with _connect(self.address) as sock:
            sock.sendall(post.encode())
            assert _read_one(sock)[:2] == (200, b"ok")
            sock.sendall(get.encode())
            assert _read_one(sock)[:2] == (200, b"4hello")


def _read_one(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """One response (with Content-Length) read from a kept-alive connection: its status, body
    and head (lower case)."""
    data = b""
    sock.settimeout(WAIT)
    while True:
        end = data.find(b"\r\n\r\n")
        if end != -1:
            match = re.search(rb"\r\ncontent-length: *(\d+)", data[:end].lower())
            assert match, data[:200]
            total = end + 4 + int(match.group(1))
            if len(data) >= total:
                break
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError(f"closed by the server after {data[:200]!r}")
        data += chunk
    assert len(data) == total, "more than one response"
    answer = parse_responses(data)
    return answer.statuses[0], data[end + 4 :], data[:end].lower()


# --- WebSocket ------------------------------------------------------------------------------

UPGRADE = (
    b"GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Connection: Upgrade\r\n"
    b"Upgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef") + b"\r\n\r\n"
)

# Close codes a server may send on its own (RFC 6455 7.4.1): normal, going away, protocol
# error, invalid data, policy (slow consumer), too big. 1011 would be a bug of ours; 1005,
# 1006 and 1015 never travel in a frame.
SERVER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1007, 1008, 1009})


@attrs.frozen
class WsOutcome:
    """What the server sent after the handshake: messages, pong payloads, its close code (None
    when it closed the TCP connection without a Close frame)."""

    messages: tuple[str | bytes, ...]
    pongs: tuple[bytes, ...]
    close_code: int | None


def parse_frames(data: bytes) -> WsOutcome:
    """The server's frames, which must be valid frames of a server (unmasked, well formed)."""
    protocol = FrameProtocol(client=True, extensions=[])
    protocol.receive_bytes(data)
    messages: list[str | bytes] = []
    pongs: list[bytes] = []
    parts: list[Any] = []
    close_code: int | None = None
    try:
        for received in protocol.received_frames():
            assert close_code is None, "a frame after the server's Close"
            payload = received.payload
            if received.opcode is Opcode.CLOSE:
                assert isinstance(payload, tuple)
                close_code = int(payload[0])
            elif received.opcode is Opcode.PONG:
                assert isinstance(payload, bytes | bytearray)
                pongs.append(bytes(payload))
            elif received.opcode is Opcode.PING:
                raise AssertionError("the server does not ping at the WebSocket level")
            else:
                parts.append(payload)
                if received.message_finished:
                    if isinstance(parts[0], str):
                        messages.append("".join(parts))
                    else:
                        messages.append(b"".join(parts))
                    parts = []
    except ParseFailed as exc:
        raise AssertionError(f"the server sent an invalid frame: {exc}") from None
    return WsOutcome(tuple(messages), tuple(pongs), close_code)


class WsTarget:
    """Opens an Engine.IO WebSocket on the conformance app's echo endpoint, sends raw frame
    bytes after the handshake, ends the connection, and checks what the server sent."""

    def __init__(self, address: tuple[str, int], path: str = "/engine.io/") -> None:
        self.address = address
        self.upgrade = UPGRADE.replace(b"/engine.io/", path.encode())

    def open(self) -> tuple[socket.socket, bytes]:
        """A socket after a valid upgrade, and the bytes received after the 101's head."""
        sock = _connect(self.address)
        sock.sendall(self.upgrade)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            assert chunk, "the server closed during a valid handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head[:200]
        return sock, head[head.index(b"\r\n\r\n") + 4 :]

    def send(self, frames: bytes, client_close_codes: frozenset[int] = frozenset()) -> WsOutcome:
        """Send ``frames`` after a valid upgrade.

        Args:
            frames: what to send after the 101.
            client_close_codes: close codes the client's frames carry (the server echoes them).

        Returns:
            The server's messages (the ``open`` packet first), pongs and close code.
        """
        sock, rest = self.open()
        with sock:
            data = rest + send_and_finish(sock, frames)
        outcome = parse_frames(data)
        assert outcome.messages, "no open packet"
        first = outcome.messages[0]
        assert isinstance(first, str), first
        assert first.startswith('0{"sid":'), first
        allowed = SERVER_CLOSE_CODES | client_close_codes
        assert outcome.close_code is None or outcome.close_code in allowed, outcome.close_code
        return outcome


async def bystander(address: tuple[str, int], stats: dict[str, Any]) -> None:
    """A well-behaved client beside the fuzzing: an Engine.IO WebSocket that answers pings and
    wants each of its messages echoed within a second, until cancelled.

    ``stats["echoes"]`` counts echoes; ``stats["failure"]`` says what went wrong, if anything.
    """
    url = f"ws://{address[0]}:{address[1]}/engine.io/?EIO=4&transport=websocket"
    try:
        async with trio_websocket.open_websocket_url(url) as ws:
            opened = await ws.get_message()
            assert isinstance(opened, str), opened
            assert opened.startswith("0{"), opened
            n = 0
            while True:
                n += 1
                await ws.send_message(f"4echo {n}")
                with trio.fail_after(1.0):
                    while (message := await ws.get_message()) != f"4echo {n}":
                        if message == "2":
                            await ws.send_message("3")
                        else:
                            raise AssertionError(f"unexpected {message!r}")
                stats["echoes"] += 1
                await trio.sleep(0.02)
    except (Exception, trio.TooSlowError) as exc:
        stats["failure"] = repr(exc)


def conformance_thread() -> ServerThread[tuple[str, int]]:
    """The conformance app (echo endpoint ``/engine.io/``, Socket.IO at ``/socket.io/``; pings
    every 300 ms, so fuzzed sessions end quickly) with a bystander client beside it.

    The bystander's counters are the thread's ``notes``.
    """
    stats: dict[str, Any] = {"echoes": 0, "failure": None}

    async def start(nursery: trio.Nursery) -> tuple[str, int]:
        address: tuple[str, int] = await nursery.start(serve_conformance, "127.0.0.1", 0)
        nursery.start_soon(bystander, address, stats)
        return address

    return ServerThread(start, stats)


# --- the emit endpoint ----------------------------------------------------------------------

SECRET = "fuzz-secret-0123456789abcdef0123456789"
EMIT_TOKEN = "fuzz-emit-token"
SENTINEL = "fuzz:sentinel"
USERS = ("alice", "alice", "bob")  # one tab each; alice has two


@attrs.define
class TabStats:
    """What one connected tab received."""

    user: str
    sid: str = ""
    events: int = 0
    sentinels: dict[str, trio.Event] = attrs.field(factory=dict)
    kept: list[tuple[str, Any]] = attrs.field(factory=list)
    keep: bool = False
    failure: str | None = None


async def _tab(
    address: tuple[str, int],
    tab: TabStats,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    token = mint_token(tab.user, AuthSettings(secret=SECRET), expires_in=86400)
    url = f"ws://{address[0]}:{address[1]}/socket.io/?EIO=4&transport=websocket"
    try:
        async with trio_websocket.open_websocket_url(url) as ws:
            await ws.get_message()
            await ws.send_message("40" + json.dumps({"token": token}))
            answer = await ws.get_message()
            assert isinstance(answer, str), answer
            assert answer.startswith('40{"sid":'), answer
            tab.sid = json.loads(answer[2:])["sid"]
            task_status.started()
            while True:
                message = await ws.get_message()
                if message == "2":
                    await ws.send_message("3")
                    continue
                assert isinstance(message, str), message
                assert message.startswith("42["), message
                event, *args = json.loads(message[2:])
                if event == SENTINEL:
                    tab.sentinels.setdefault(args[0], trio.Event()).set()
                    continue
                tab.events += 1
                if tab.keep:
                    tab.kept.append((event, args[0] if args else None))
    except (Exception, trio_websocket.ConnectionClosed) as exc:
        tab.failure = repr(exc)


class EmitTarget:
    """A hub (SQLite store in ``tmp``; users alice, bob, carol; alice owns ``p1``) with three
    connected tabs (alice twice, bob once), and an HTTP client of its internal API.

    Every answer is checked (status, JSON error shape); :meth:`sync` then checks that the tabs
    received exactly what the 200 answers said was delivered: nothing from a refused request.
    """

    STATUSES = frozenset({200, 400, 404, 405, 413, 422})

    def __init__(self, thread: ServerThread[tuple[HubAddresses, list[TabStats]]]) -> None:
        self.thread = thread
        addresses, self.tabs = thread.value
        self.address = addresses.internal
        self.delivered = 0
        self._conn: socket.socket | None = None
        self._syncs = 0

    def post(self, path: str, body: bytes) -> tuple[int, Any]:
        """POST ``body`` to ``/internal/<path>``; returns the status and the JSON answer."""
        head = (
            f"POST /internal/{path} HTTP/1.1\r\nHost: hub\r\n"
            f"Authorization: Bearer {EMIT_TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        for attempt in range(2):
            reused = self._conn is not None
            sock = self._conn or _connect(self.address)
            self._conn = sock
            try:
                sock.sendall(head + body)
                status, content, response_head = _read_one(sock)
            except ConnectionError:
                # A kept-alive connection that the server closed meanwhile: once more, anew.
                sock.close()
                self._conn = None
                if attempt or not reused:
                    raise
                continue
            if b"\r\nconnection: close" in response_head:
                sock.close()
                self._conn = None
            break
        assert status in self.STATUSES, (status, content[:200], body[:200])
        answer = json.loads(content)
        assert isinstance(answer, dict)
        if status == 200:
            delivered = answer.get("delivered", answer.get("sockets"))
            assert isinstance(delivered, int), answer
            assert delivered >= 0, answer
            if path in ("emit", "broadcast"):
                self.delivered += delivered
        else:
            assert list(answer) == ["error"], answer
            error = answer["error"]
            assert isinstance(error["code"], str), error
            assert error["code"], error
            message = error["message"]
            assert isinstance(message, str), error
            assert message, error
            assert "\n" not in message, error
            assert "Traceback" not in message, error
        return status, answer

    def sync(self) -> None:
        """Wait until every tab has read all that was sent before now, then check that the tabs
        received, together, exactly the deliveries that the 200 answers counted."""
        self._syncs += 1
        token = f"s{self._syncs}"
        for tab in self.tabs:
            assert tab.failure is None, f"tab of {tab.user}: {tab.failure}"
            body = json.dumps({"event": SENTINEL, "data": token, "to": [tab.sid]}).encode()
            assert self.post("emit", body) == (200, {"delivered": 1})
            self.delivered -= 1  # the tabs do not count sentinels

        async def wait() -> None:
            with trio.fail_after(WAIT):
                for tab in self.tabs:
                    await tab.sentinels.setdefault(token, trio.Event()).wait()
                    del tab.sentinels[token]

        self.thread.call(wait)
        received = sum(tab.events for tab in self.tabs)
        assert received == self.delivered, (
            f"tabs received {received} events, the endpoint said {self.delivered} were delivered"
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def hub_thread(tmp: Path) -> ServerThread[tuple[HubAddresses, list[TabStats]]]:
    """A running hub and its three connected tabs (see :class:`EmitTarget`)."""

    async def start(nursery: trio.Nursery) -> tuple[HubAddresses, list[TabStats]]:
        store = SQLiteStore(tmp / "fuzz.sqlite3")
        for user in ("alice", "bob", "carol"):
            store.add_user(user, email=f"{user}@example.com")
        store.add_project("p1", owner="alice")
        config = Config(port=0, jwt_secret=SECRET, emit_token=EMIT_TOKEN).check()
        addresses: HubAddresses = await nursery.start(Hub(config, store).serve)
        tabs = [TabStats(user) for user in USERS]
        for tab in tabs:
            await nursery.start(_tab, addresses.public, tab)
        return addresses, tabs

    return ServerThread(start)


def frame_close(code: int, reason: bytes = b"") -> bytes:
    """A close frame's payload."""
    return struct.pack("!H", code) + reason
