"""A TCP connection that hub owns down to the non-blocking socket.

Why not ``trio.SocketStream``: a broadcast writes the same frame to thousands of sockets, and
``await stream.send_all()`` per member costs a scheduler round-trip each. Here a write is
synchronous (:meth:`RawStream.send_nowait`): when nothing is queued it goes straight to the
kernel; only what the kernel does not take is queued, in a buffer bounded in bytes, and drained
by a writer task that exists only while something is queued. See DESIGN.md, "Decisions
already measured".

Rules:
- Order is kept: once anything is queued, later writes queue behind it.
- Over ``max_buffered`` bytes queued the peer is a slow consumer: everything queued is dropped
  (but the rest of a frame the kernel took in part), the stream's ``goodbye`` (a WebSocket
  close frame saying why) is queued in its place, nothing else is accepted, and the stream
  closes once the goodbye is out or after ``GOODBYE_TIMEOUT`` seconds. Nobody else waits for it.
- Closing notifies trio first (``notify_closing``), so a task blocked on the socket wakes.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import math
import socket

import trio

from hub.transport.counters import TransportStats

__all__ = ["RawStream", "StreamClosed"]

_RECV_SIZE = 65536
GOODBYE_TIMEOUT = 5.0
_WRITE_BATCH = 262144


class StreamClosed(Exception):
    """The stream is closed (by us, by the peer, or because it failed)."""


class RawStream:
    """One accepted TCP connection on a non-blocking socket.

    Args:
        sock: a connected socket; it is made non-blocking and owned from now on.
        max_buffered: the most bytes queued for the peer before it counts as a slow consumer.
        stats: where the bytes read and sent are added up (shared by a listener's streams).
    """

    # Slots, and no queue until something waits: an idle connection costs only this object.
    __slots__ = (
        "_head_partial",
        "_max_buffered",
        "_pending",
        "_pending_bytes",
        "_seal_deadline",
        "_sealed",
        "_sock",
        "_writer_scope",
        "_writing",
        "close_reason",
        "closed",
        "goodbye",
        "overflowed",
        "peer",
        "stats",
        "writer_nursery",
    )

    def __init__(
        self,
        sock: socket.socket,
        *,
        max_buffered: int = 4_000_000,
        stats: TransportStats | None = None,
    ) -> None:
        self.stats = stats if stats is not None else TransportStats()
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # not TCP (a socketpair)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._max_buffered = max_buffered
        self._pending: collections.deque[bytes] | None = None  # made when needed
        self._pending_bytes = 0
        self._head_partial = False  # the first queued chunk is the rest of a partly sent one
        self._writing = False
        self._writer_scope: trio.CancelScope | None = None
        # Over the bound: the frame to leave with (set by the WebSocket), whether that
        # happened, and whether the stream takes no more writes (only the goodbye goes out).
        self.goodbye: bytes | None = None
        self.overflowed = False
        self._sealed = False
        self._seal_deadline = math.inf
        # Where the writer task runs when the kernel does not take everything at once (the
        # connection's nursery); set before the first write.
        self.writer_nursery: trio.Nursery | None = None
        self.closed = False
        self.close_reason: str | None = None
        try:
            peer = sock.getpeername()
            self.peer: tuple[str, int] = (str(peer[0]), int(peer[1]))
        except (OSError, IndexError, TypeError):
            self.peer = ("", 0)

    # -- reading ---------------------------------------------------------------------------

    async def receive_some(self) -> bytes:
        """Wait for bytes from the peer.

        Returns:
            The bytes, or ``b""`` at end of stream.

        Raises:
            StreamClosed: the stream was closed locally.
        """
        while True:
            if self.closed:
                raise StreamClosed(self.close_reason or "closed")
            try:
                await trio.lowlevel.wait_readable(self._sock)
            except trio.ClosedResourceError:
                raise StreamClosed(self.close_reason or "closed") from None
            if self.closed:
                raise StreamClosed(self.close_reason or "closed")
            try:
                data = self._sock.recv(_RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError:
                return b""
            self.stats.bytes_received += len(data)
            return data

    def fileno(self) -> int:
        """The socket's descriptor: ``await trio.lowlevel.wait_readable(stream)`` waits for
        bytes to read with :meth:`receive_nowait` (one coroutine frame less, for thousands of
        idle readers, than :meth:`receive_some`). Closing the stream wakes that wait with
        ``trio.ClosedResourceError``."""
        return self._sock.fileno()

    def receive_nowait(self) -> bytes:
        """What the kernel holds from the peer, without waiting.

        Returns:
            The bytes, or ``b""`` at end of stream.

        Raises:
            trio.WouldBlock: nothing yet.
            StreamClosed: the stream was closed locally.
        """
        if self.closed:
            raise StreamClosed(self.close_reason or "closed")
        try:
            data = self._sock.recv(_RECV_SIZE)
        except BlockingIOError:
            raise trio.WouldBlock from None
        except OSError:
            return b""
        self.stats.bytes_received += len(data)
        return data

    # -- writing ---------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        """Bytes queued and not yet taken by the kernel."""
        return self._pending_bytes

    def send_nowait(self, data: bytes) -> None:
        """Write ``data``, now if the kernel takes it, else queued behind what waits.

        Never blocks. On a closed stream it does nothing (the owner learns of the close from
        its reader). A peer over the buffer bound is failed as a slow consumer.
        """
        if self._pending or self.closed:
            if self.closed or self._sealed:
                return
        else:
            # The fast path of every delivery: one non-blocking send(), nothing queued.
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._fail(f"send failed: {errno.errorcode.get(exc.errno or 0, exc)}")
                return
            self.stats.bytes_sent += sent
            if sent == len(data):
                return
            data = data[sent:]
            self._head_partial = sent > 0
        self._queue().append(data)
        self._queued(len(data))

    def send_urgent(self, data: bytes) -> None:
        """Write ``data`` ahead of what is queued (a heartbeat must not wait behind a burst).

        It still goes after the remainder of a frame the kernel has partly taken.
        """
        if self.closed or self._sealed:
            return
        if not self._pending:
            self.send_nowait(data)
            return
        self._queue().insert(1 if self._head_partial else 0, data)
        self._queued(len(data))

    def send_if_idle(self, data: bytes) -> bool:
        """Write ``data`` only if nothing waits before it (a volatile message); else drop it.

        Returns:
            Whether it was written (or, if the kernel took part of it, queued behind that).
        """
        if self._pending or self.closed:
            return False
        self.send_nowait(data)
        return True

    def _queue(self) -> collections.deque[bytes]:
        pending = self._pending
        if pending is None:
            pending = self._pending = collections.deque()
        return pending

    def _queued(self, size: int) -> None:
        self._pending_bytes += size
        if self._pending_bytes > self._max_buffered:
            self._overflow()
            return
        self._start_writer()

    def _overflow(self) -> None:
        self.overflowed = True
        if self.goodbye is None:
            self._fail("slow consumer")
            return
        pending = self._queue()
        head = pending[0] if self._head_partial else None
        pending.clear()
        if head is not None:
            pending.append(head)  # a frame cut in two would corrupt the goodbye
        pending.append(self.goodbye)
        self._pending_bytes = sum(map(len, pending))
        self._sealed = True
        self._seal_deadline = trio.current_time() + GOODBYE_TIMEOUT
        if self._writer_scope is not None:
            self._writer_scope.deadline = self._seal_deadline
        self._start_writer()

    def _start_writer(self) -> None:
        if not self._writing and self.writer_nursery is not None:
            try:
                self.writer_nursery.start_soon(self._write_queued)
            except RuntimeError:
                return  # the connection is ending: aclose() flushes what is left
            self._writing = True

    async def _write_queued(self) -> None:
        """The writer task: lives only while something is queued (most connections, most of
        the time, have no queue and so no writer task)."""
        try:
            with trio.CancelScope(deadline=self._seal_deadline) as self._writer_scope:
                while self._pending and not self.closed:
                    await trio.lowlevel.wait_writable(self._sock)
                    if self.closed:
                        return
                    self._flush_some()
            if self._sealed:
                self.close("slow consumer")  # the goodbye is out, or the peer never read it
        except trio.ClosedResourceError:
            pass  # closed while waiting to write: nothing more to do
        finally:
            self._writer_scope = None
            self._writing = False

    def _try_send(self, data: bytes) -> int | None:
        """One non-blocking ``send``: bytes taken by the kernel, or None if the stream failed."""
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._fail(f"send failed: {errno.errorcode.get(exc.errno or 0, exc)}")
            return None

    def _flush_some(self) -> None:
        pending = self._pending
        if pending is None:
            return
        chunks = []
        size = 0
        while pending and size < _WRITE_BATCH:
            chunk = pending.popleft()
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        sent = self._try_send(data)
        if sent is None:
            return
        self.stats.bytes_sent += sent
        self._pending_bytes -= sent
        if sent < len(data):
            pending.appendleft(data[sent:])
            self._head_partial = self._head_partial or sent > 0
        else:
            self._head_partial = False
            if not pending and self._pending is pending:
                self._pending = None  # drained: an idle connection keeps no queue

    async def _flush_all(self) -> None:
        # Only once the writer task has ended: two tasks may not wait on one socket.
        while self._pending and not self.closed:
            try:
                await trio.lowlevel.wait_writable(self._sock)
            except trio.ClosedResourceError:
                return
            self._flush_some()

    # -- closing ---------------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        self.close(reason)

    def close(self, reason: str = "closed") -> None:
        """Close at once, dropping what is queued. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._pending = None
        self._pending_bytes = 0
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()

    async def aclose(self, *, timeout: float = 2.0) -> None:
        """Flush what is queued (within ``timeout``), then close.

        Call it after the writer task has ended (from the connection's ``finally``).
        """
        if not self.closed:
            with trio.move_on_after(timeout) as scope:
                scope.shield = True
                await self._flush_all()
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_WR)
                    await self._linger()
        self.close()

    async def _linger(self) -> None:
        """Read and drop what the peer still sends, until it closes its side.

        Closing a socket whose receive buffer holds unread bytes makes the kernel send a reset
        instead of the end of stream, and a reset can overtake our last bytes in the peer's
        kernel (a WebSocket close frame saying why, sent to a client that was still sending a
        message over the limit). Our side is shut down already: the peer has seen our last
        byte and its end of stream, and usually closes at once.
        """
        while not self.closed:
            await trio.lowlevel.wait_readable(self._sock)
            try:
                if not self._sock.recv(_RECV_SIZE):
                    return
            except BlockingIOError:
                continue
            except OSError:
                return
