"""Connection state recovery across the cluster: sessions and replayable packets kept in Redis.

With a :class:`RedisSessions` in :class:`hub.RecoveryOptions` (``shared=``), what each node keeps
in memory for recovery (:mod:`hub.server.recovery`) is also written to Redis, so a client that
comes back to another node, or to its node started again, is recovered there too.

Rules:

- The delivery path never waits for Redis. A replayable packet is kept in memory and put on a
  bounded write queue (:meth:`RedisSessions.append`); so is a session that may come back
  (:meth:`RedisSessions.save`). One writer task sends the queue in order, as pipelines of
  everything queued. What does not fit, or comes while Redis is unreachable, is not written
  (and said once in the log): recovery then relies on what the node holds in memory.
- The packets of one namespace of one node run form one Redis stream, named by the prefix of
  the offsets it gave (an offset names its stream). Each entry holds the packets of one write
  that follow each other (one ``XADD`` for many broadcasts), from the one its id names
  (``<sequence + 1>-0``): their rooms, except rooms, wall time and encoded messages. The stream
  is trimmed as the node's memory is (``XTRIM MINID``: by age and count) and expires when
  nobody can need it.
  Once a packet of a stream could not be written, the stream is trimmed past it at the next
  write, so that a reader never replays around a hole.
- A run that stops (:meth:`RedisSessions.run` cancelled: ``hub serve`` on SIGTERM, after its
  clients were let go) writes what is queued, then one last entry per stream with the wall time
  it stopped storing, within ``close_timeout``. A node that restores a session of a stopped run
  replays that run's packets, then its own since that time; a node that began after that time
  (the same node started again) first reads the packets of the gap from another node's run
  (runs are listed per namespace with the time they began).
- A session is saved (JSON, with an expiry of the recovery's duration) when its socket goes for
  a recoverable reason, and taken with ``GETDEL``: one node at most restores it. Taking or
  forgetting it leaves a mark for as long, so that its node, which holds it in memory too,
  refuses it then; without a mark (Redis restarted empty) the node's memory decides. A session whose
  ``socket.data`` JSON cannot hold is not saved (said once in the log); its node still has it.
- Every wait on Redis has a deadline (``request_timeout``); when Redis is unreachable, a
  connect falls back at once to what the node holds, and :meth:`RedisSessions.edit` (logouts,
  revocations) raises :class:`~hub.cluster.errors.ClusterUnavailable`.

Keys, with ``key`` (``"hub"``) before each::

    {key}:recovery:stream:{stream}                 the packets of one run (a stream)
    {key}:recovery:{namespace}:session:{pid}       a session that may come back (a string)
    {key}:recovery:{namespace}:sessions            pid -> expiry (a sorted set, for logouts)
    {key}:recovery:{namespace}:group:{group}       the same, of one group (a user's sessions)
    {key}:recovery:{namespace}:gone:{pid}          a session taken or forgotten (for a while)
    {key}:recovery:{namespace}:runs                stream -> when its run began (a sorted set)
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import coredis
import coredis.exceptions
import msgpack
import trio
from coredis.retry import NoRetryPolicy
from coredis.tokens import PureToken

from hub.cluster.errors import ClusterUnavailable
from hub.cluster.health import UNREACHABLE, Backoff, attempt, describe, redacted
from hub.engineio.outgoing import Outgoing
from hub.server.recovery import Saved, SharedUnavailable, Stored

__all__ = ["RedisSessions", "SharedSession", "StreamRead"]

log = logging.getLogger("hub.cluster")


_BATCH = 1000
"""The most queued writes sent in one pipeline."""

_STREAM_MARGIN = 60
"""Seconds a stream outlives the sessions that may read it."""


@attrs.define
class SharedSession:
    """A session taken from Redis: its state, and where its packets are.

    Attributes:
        saved: its socket id, pid, rooms, data and ``since`` (its run's sequence when it
            connected).
        stream: the stream its offsets name.
        next: the sequence of that stream's next packet when it was saved.
    """

    saved: Saved
    stream: str
    next: int


@attrs.frozen
class StreamRead:
    """The packets of a stream after an offset, in order, and whether its run has stopped.

    Attributes:
        packets: the packets (with their rooms, to be filtered by the reader).
        ended: the wall time its run stopped storing, or None while it runs.
    """

    packets: list[Stored]
    ended: float | None


class _Append:
    __slots__ = ("first", "sequence", "stored", "stream", "ttl")

    def __init__(self, stream: str, sequence: int, first: int, stored: Stored, ttl: int) -> None:
        self.stream = stream
        self.sequence = sequence
        self.first = first  # the oldest sequence the node still keeps: older ones are trimmed
        self.stored = stored
        self.ttl = ttl


class _Save:
    __slots__ = ("group", "namespace", "payload", "saved", "stream", "ttl")

    def __init__(
        self,
        namespace: str,
        saved: Saved,
        payload: str,
        stream: str,
        ttl: float,
        group: str | None,
    ) -> None:
        self.namespace = namespace
        self.saved = saved
        self.payload = payload
        self.stream = stream
        self.ttl = ttl
        self.group = group


class _Discard:
    __slots__ = ("namespace", "pid")

    def __init__(self, namespace: str, pid: str) -> None:
        self.namespace = namespace
        self.pid = pid


_Op = _Append | _Save | _Discard


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _pack(run: list[Stored]) -> bytes:
    """Consecutive packets as one stream entry's value."""
    packed: bytes = msgpack.packb(
        [
            [
                list(stored.rooms),
                list(stored.except_rooms),
                stored.wall,
                [message.packet.data for message in stored.messages],
            ]
            for stored in run
        ],
        use_bin_type=True,
    )
    return packed


def _unpack(item: list[Any]) -> Stored:
    rooms, except_rooms, wall, data = item
    messages = [Outgoing.message_of(part) for part in data]
    return Stored(frozenset(rooms), frozenset(except_rooms), messages, 0.0, float(wall))


class RedisSessions:
    """Recovery state shared by the nodes of a cluster through Redis.

    ::

        sessions = RedisSessions("redis://127.0.0.1:6379")
        server = hub.Server(recovery=hub.RecoveryOptions(shared=sessions), cluster=...)
        async with trio.open_nursery() as nursery:
            await nursery.start(sessions.run)      # beside the server, for as long as it runs
            await nursery.start(server.serve, "0.0.0.0", 3000)

    Args:
        url: ``redis://...``, ``rediss://...`` or ``unix://...``.
        key: the prefix of its keys.
        request_timeout: the longest a connect waits for Redis before recovering from memory
            only (seconds); also the deadline of each write.
        connect_timeout: how long making a connection to Redis may take (seconds).
        close_timeout: how long a stopping run may take to write what is queued (seconds).
        max_queued: the most writes waiting for the writer; past it they are not written.
        group: what a session's ``data`` is grouped by (the hub: its user id), so that
            :meth:`edit` of one group reads only that group's sessions.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str = "hub",
        request_timeout: float = 1.0,
        connect_timeout: float = 2.0,
        close_timeout: float = 3.0,
        reconnect_delay: float = 0.1,
        max_reconnect_delay: float = 5.0,
        max_queued: int = 100_000,
        group: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> None:
        if request_timeout <= 0 or connect_timeout <= 0 or close_timeout <= 0:
            raise ValueError("the timeouts must be positive")
        if max_queued < 1:
            raise ValueError("max_queued must be positive")
        self.url = url
        self.key = key
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.max_queued = max_queued
        self.group = group
        self.available = False
        """Whether the last exchange with Redis worked."""
        self.dropped = 0
        """Writes not made (Redis unreachable, or the queue full)."""
        self._queue: deque[_Op] = deque()
        self._wake = trio.Event()
        self._written = 0  # writes done or dropped, of all those ever queued
        self._queued = 0  # writes ever queued
        self._progress = trio.Event()
        self._streams: dict[str, int] = {}  # stream -> its next sequence, as far as known
        self._floor: dict[str, int] = {}  # stream -> the sequence after its last hole
        self._starts: dict[str, deque[int]] = {}  # stream -> where its entries start
        # stream -> (its namespace, when it began), listed in Redis with each write
        self._registered: dict[str, tuple[str, float]] = {}
        self._ttl = 0  # the longest a session may be away, in seconds
        self._closed = False
        self._client: coredis.Redis[bytes] | None = None
        self._down_logged = False
        self._json_logged = False
        self._tried = trio.Event()

    def __repr__(self) -> str:
        return f"<RedisSessions {redacted(self.url)} {'up' if self.available else 'down'}>"

    # -- keys ------------------------------------------------------------------------------

    def _stream_key(self, stream: str) -> str:
        return f"{self.key}:recovery:stream:{stream}"

    def _session_key(self, namespace: str, pid: str) -> str:
        return f"{self.key}:recovery:{namespace}:session:{pid}"

    def _gone_key(self, namespace: str, pid: str) -> str:
        return f"{self.key}:recovery:{namespace}:gone:{pid}"

    def _runs_key(self, namespace: str) -> str:
        return f"{self.key}:recovery:{namespace}:runs"

    def _index_key(self, namespace: str, group: str | None = None) -> str:
        if group is not None:
            return f"{self.key}:recovery:{namespace}:group:{group}"
        return f"{self.key}:recovery:{namespace}:sessions"

    # -- writes (never wait) ---------------------------------------------------------------

    def _enqueue(self, op: _Op) -> bool:
        if self._closed or not self.available or len(self._queue) >= self.max_queued:
            self._not_written(op)
            return False
        self._queue.append(op)
        self._queued += 1
        self._wake.set()
        return True

    def _not_written(self, op: _Op) -> None:
        self.dropped += 1
        if isinstance(op, _Append):
            # A hole in the stream: trimmed past it at the next write (see the module's doc).
            self._floor[op.stream] = max(self._floor.get(op.stream, 0), op.sequence + 1)
        elif isinstance(op, _Save):
            op.saved.shared = False
        if not self._down_logged and not self._closed:
            self._down_logged = True
            reason = "unreachable" if not self.available else "its write queue is full"
            log.warning(
                "recovery state not written to Redis (%s): clients recover on their own node only",
                reason,
            )

    def register(self, namespace: str, stream: str, began: float) -> None:
        """List ``stream`` among the runs of ``namespace`` (with the wall time it began
        storing), so that a node started later reads from it what it stored before."""
        self._registered[stream] = (namespace, began)

    def append(self, stream: str, sequence: int, first: int, stored: Stored, ttl: int) -> None:
        """Queue a replayable packet of ``stream`` (``first``: the oldest sequence the node
        still keeps; ``ttl``: how long a session may be away, in whole seconds). Never waits:
        it is on the path of every broadcast."""
        self._streams[stream] = sequence + 1
        op = _Append(stream, sequence, first, stored, ttl)
        if self._closed or not self.available or len(self._queue) >= self.max_queued:
            self._not_written(op)
            return
        self._queue.append(op)
        self._queued += 1
        self._wake.set()

    def save(self, namespace: str, saved: Saved, stream: str, next: int, ttl: float) -> bool:
        """Queue a session that may come back for ``ttl`` seconds; its packets are those of
        ``stream`` from ``saved.since`` (``next``: that stream's next sequence now).

        Sets ``saved.shared`` to None while it is queued, True once Redis has it, False when it
        will not be written.

        Returns:
            False when it will not be written: ``saved.data`` cannot be written as JSON, Redis
            is unreachable, or the queue is full.
        """
        self._streams[stream] = max(self._streams.get(stream, 0), next)
        self._ttl = max(self._ttl, math.ceil(ttl))
        try:
            payload = json.dumps(
                {
                    "sid": saved.sid,
                    "pid": saved.pid,
                    "rooms": sorted(saved.rooms),
                    "data": saved.data,
                    "stream": stream,
                    "since": saved.since,
                    "next": next,
                },
                separators=(",", ":"),
                allow_nan=False,
            )
        except (TypeError, ValueError) as exc:
            saved.shared = False
            if not self._json_logged:
                self._json_logged = True
                log.warning(
                    "socket %s: its data cannot be written as JSON (%s): it recovers on this"
                    " node only (said once)",
                    saved.sid,
                    exc,
                )
            return False
        group = self.group(saved.data) if self.group is not None else None
        saved.shared = None
        return self._enqueue(_Save(namespace, saved, payload, stream, ttl, group))

    def discard(self, namespace: str, pid: str) -> None:
        """Queue the removal of a session (restored from a node's memory): after any write of
        it still queued."""
        self._enqueue(_Discard(namespace, pid))

    async def flush(self, timeout: float) -> bool:
        """Wait until what is queued now is written (or dropped), at most ``timeout`` seconds.

        Returns:
            Whether it was.
        """
        target = self._queued
        with trio.move_on_after(timeout):
            while self._written < target:
                await self._progress.wait()
        return self._written >= target

    # -- reads -----------------------------------------------------------------------------

    @property
    def client(self) -> coredis.Redis[bytes]:
        if self._client is None or not self.available:
            raise SharedUnavailable("Redis is not reachable")
        return self._client

    async def _ask(self, operation: Callable[[coredis.Redis[bytes]], Any]) -> Any:
        """Run ``operation(client)`` within ``request_timeout``.

        Raises:
            SharedUnavailable: Redis did not answer, or is known to be unreachable.
        """
        client = self.client
        try:
            with trio.fail_after(self.request_timeout):
                return await operation(client)
        except* UNREACHABLE as group:
            raise SharedUnavailable(f"Redis cannot be reached: {describe(group)}") from None

    async def take(self, namespace: str, pid: str, ttl: float) -> tuple[SharedSession | None, bool]:
        """Take a saved session out of Redis: no other node gets it after. A mark that it is
        gone is left for ``ttl`` seconds (the longest a session may be away), so that a node
        holding it in memory can tell "taken or forgotten" from "Redis lost it".

        Returns:
            The session (or None when Redis has none of that pid), and whether it was taken
            by another node or forgotten (a logout) before.

        Raises:
            SharedUnavailable: Redis cannot be reached.
        """
        key = self._session_key(namespace, pid)

        async def ask(client: coredis.Redis[bytes]) -> Any:
            async with client.pipeline(transaction=True) as pipe:  # MULTI ... EXEC: at once
                taken = pipe.getdel(key)
                before = pipe.set(self._gone_key(namespace, pid), "1", ex=math.ceil(ttl), get=True)
                pipe.zrem(self._index_key(namespace), [pid])
            return await taken, await before

        value, gone = await self._ask(ask)
        session = _session(value)
        return session, session is None and gone is not None

    async def read(self, stream: str, after: int, next: int, limit: int) -> StreamRead | None:
        """The packets of ``stream`` from the sequence ``after`` on (at most ``limit``).

        Returns:
            None when some of them are no longer kept (trimmed, expired, or never written),
            or ``after`` is past ``next`` (the stream's next sequence when the session was
            saved: a client cannot have seen more).

        Raises:
            SharedUnavailable: Redis cannot be reached.
        """
        if after > next:
            return None
        key = self._stream_key(stream)

        async def ask(client: coredis.Redis[bytes]) -> Any:
            # The entry that holds ``after`` starts at or before it: the last one that does.
            head = await client.xrevrange(key, f"{after + 1}-0", "-", 1)
            start = _text(head[0].identifier) if head else f"{after + 1}-0"
            return await client.xrange(key, start, "+", limit + 2)

        entries = await self._ask(ask)
        packets: list[Stored] = []
        ended: float | None = None
        expected = after
        for entry in entries:
            fields = {_text(name): value for name, value in entry.field_values.items()}
            if "e" in fields:
                ended = float(_text(fields["e"]))
                break
            start = int(_text(entry.identifier).partition("-")[0]) - 1
            if start > expected or "p" not in fields:
                return None  # a hole: a packet it missed is not kept
            run = msgpack.unpackb(fields["p"], raw=False)
            skip = expected - start
            packets.extend(_unpack(item) for item in run[skip:])
            expected = max(expected, start + len(run))
        if expected < next or len(packets) > limit:
            return None  # trimmed or expired before it came back
        return StreamRead(packets, ended)

    async def read_between(
        self, namespace: str, exclude: set[str], since: float, until: float, limit: int
    ) -> list[Stored] | None:
        """The packets another run of ``namespace`` stored after the wall time ``since`` and
        before ``until`` (a stopped run's end, and the start of the run that asks), in order:
        from a run that began before ``since`` and stored all along (not one of ``exclude``).

        Returns:
            None when no run can tell (none was storing then, or what it stored then is
            trimmed), or they are more than ``limit``.

        Raises:
            SharedUnavailable: Redis cannot be reached.
        """

        async def ask(client: coredis.Redis[bytes]) -> list[Stored] | None:
            runs = await client.zrangebyscore(self._runs_key(namespace), -math.inf, since)
            for stream in (_text(run) for run in runs):
                if stream not in exclude:
                    found = await self._between(client, stream, since, until, limit)
                    if found is not None:
                        return found
            return None

        found: list[Stored] | None = await self._ask(ask)
        return found

    async def _between(
        self, client: coredis.Redis[bytes], stream: str, since: float, until: float, limit: int
    ) -> list[Stored] | None:
        """What one run stored between ``since`` and ``until``, read from its newest entry
        back; None when it stopped before ``until`` or no longer holds ``since``."""
        key = self._stream_key(stream)
        found: list[Stored] = []  # newest first
        cursor = "+"
        oldest = -1
        while True:
            entries = await client.xrevrange(key, cursor, "-", 64)
            for entry in entries:
                fields = {_text(name): value for name, value in entry.field_values.items()}
                if "e" in fields:
                    if float(_text(fields["e"])) < until:
                        return None  # it stopped too
                    continue
                oldest = int(_text(entry.identifier).partition("-")[0]) - 1
                for item in reversed(msgpack.unpackb(fields["p"], raw=False)):
                    wall = float(item[2])
                    if wall <= since:
                        return found[::-1]
                    if wall < until:
                        found.append(_unpack(item))
                        if len(found) > limit:
                            return None
            if len(entries) < 64:
                # Its beginning: it holds all it stored only if nothing was trimmed.
                return found[::-1] if oldest == 0 or (not entries and cursor == "+") else None
            cursor = f"({_text(entries[-1].identifier)}"

    async def edit(
        self,
        namespace: str,
        predicate: Callable[[Saved], bool],
        change: Callable[[Saved], None] | None = None,
        *,
        group: str | None = None,
    ) -> int:
        """Change (``change``) or remove (without one) the saved sessions of ``namespace`` (of
        ``group`` only, when given) for which ``predicate`` holds: a logout, a revocation.
        What this node has queued is written first.

        Returns:
            How many sessions were changed or removed.

        Raises:
            ClusterUnavailable: Redis cannot be reached.
        """
        await self.flush(self.request_timeout)
        index = self._index_key(namespace, group)

        async def ask(client: coredis.Redis[bytes]) -> int:
            await client.zremrangebyscore(index, -math.inf, time.time())
            pids = [_text(pid) for pid in await client.zrangebyscore(index, -math.inf, math.inf)]
            if not pids:
                return 0
            keys = [self._session_key(namespace, pid) for pid in pids]
            values = await client.mget(keys)
            changed = 0
            async with client.pipeline(transaction=False) as pipe:
                for pid, key, value in zip(pids, keys, values, strict=True):
                    record = _session(value)
                    if record is None or not predicate(record.saved):
                        continue
                    changed += 1
                    if change is None:
                        pipe.delete([key])
                        pipe.zrem(index, [pid])
                        pipe.set(self._gone_key(namespace, pid), "1", ex=max(1, self._ttl))
                        continue
                    change(record.saved)
                    payload = json.loads(_text(value))
                    payload["rooms"] = sorted(record.saved.rooms)
                    payload["data"] = record.saved.data
                    # Only if it is still there (not taken meanwhile), with its expiry kept.
                    pipe.set(
                        key,
                        json.dumps(payload, separators=(",", ":")),
                        condition=PureToken.XX,
                        keepttl=True,
                    )
            return changed

        try:
            count: int = await self._ask(ask)
        except SharedUnavailable as exc:
            raise ClusterUnavailable(str(exc)) from None
        return count

    # -- the writer ------------------------------------------------------------------------

    def _runs(self, batch: list[_Op]) -> list[tuple[str, int, list[Stored]]]:
        """The batch's packets as runs of consecutive packets of one stream (a run never
        spans a packet that was not written)."""
        runs: list[tuple[str, int, list[Stored]]] = []
        last: dict[str, tuple[str, int, list[Stored]]] = {}
        for op in batch:
            if not isinstance(op, _Append):
                continue
            run = last.get(op.stream)
            if run is not None and run[1] + len(run[2]) == op.sequence:
                run[2].append(op.stored)
                continue
            run = (op.stream, op.sequence, [op.stored])
            runs.append(run)
            last[op.stream] = run
        return runs

    def _trim_point(self, stream: str, first: int) -> int:
        """The start of the oldest entry to keep: the one that holds ``first`` (the oldest
        packet the node keeps), or the first after the stream's last hole."""
        starts = self._starts.setdefault(stream, deque())
        while len(starts) > 1 and starts[1] <= first:
            starts.popleft()
        point = starts[0] if starts and starts[0] <= first else first
        return max(point, self._floor.get(stream, 0))

    async def _write(self, client: coredis.Redis[bytes], batch: list[_Op]) -> None:
        trims: dict[str, tuple[int, int]] = {}  # stream -> (oldest packet kept, ttl)
        now = time.time()
        async with client.pipeline(transaction=False) as pipe:
            for stream, start, run in self._runs(batch):
                pipe.xadd(self._stream_key(stream), {"p": _pack(run)}, identifier=f"{start + 1}-0")
                self._starts.setdefault(stream, deque()).append(start)
            for op in batch:
                if isinstance(op, _Append):
                    trims[op.stream] = (op.first, op.ttl)
                elif isinstance(op, _Save):
                    ttl = math.ceil(op.ttl)
                    index = self._index_key(op.namespace)
                    pipe.set(
                        self._session_key(op.namespace, op.saved.pid),
                        op.payload,
                        px=max(1, int(op.ttl * 1000)),
                    )
                    indexes = [index]
                    if op.group is not None:
                        indexes.append(self._index_key(op.namespace, op.group))
                    for index in indexes:
                        pipe.zadd(index, {op.saved.pid: now + op.ttl})
                        pipe.zremrangebyscore(index, -math.inf, now)
                        pipe.expire(index, ttl)
                    first, _ = trims.get(op.stream, (0, 0))
                    trims[op.stream] = (first, ttl)
                else:
                    key = self._session_key(op.namespace, op.pid)
                    pipe.delete([key])
                    pipe.zrem(self._index_key(op.namespace), [op.pid])
            for stream, (first, ttl) in trims.items():
                listed = self._registered.get(stream)
                if listed is not None:
                    runs_key = self._runs_key(listed[0])
                    pipe.zadd(runs_key, {stream: listed[1]})
                    pipe.expire(runs_key, ttl + _STREAM_MARGIN)
                key = self._stream_key(stream)
                point = self._trim_point(stream, first)
                if point > 0:
                    # XTRIM MINID drops the entries whose id is lower: those starting before.
                    pipe.xtrim(key, PureToken.MINID, point + 1)
                pipe.expire(key, ttl + _STREAM_MARGIN)

    def _done(self, batch: list[_Op], ok: bool) -> None:
        for op in batch:
            if not ok:
                self._not_written(op)
            elif isinstance(op, _Save):
                op.saved.shared = True
        self._written += len(batch)
        self._progress.set()
        self._progress = trio.Event()

    def _take_batch(self) -> list[_Op]:
        batch: list[_Op] = []
        while self._queue and len(batch) < _BATCH:
            batch.append(self._queue.popleft())
        return batch

    def _down(self, error: BaseException) -> None:
        if self.available:
            log.warning("recovery state in Redis unreachable: %s", describe(error))
        self.available = False
        batch = list(self._queue)
        self._queue.clear()
        self._done(batch, ok=False)

    async def _writer(self, client: coredis.Redis[bytes]) -> None:
        backoff = Backoff(self.reconnect_delay, self.max_reconnect_delay)
        while True:
            if not self.available:
                error = await attempt(client.ping, self.connect_timeout)
                self._tried.set()
                if error is not None:
                    self._down(error)
                    await trio.sleep(backoff.delay())
                    continue
                backoff.reset()
                self.available = True
                self._down_logged = False
                continue
            if not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            await self._write_queued(client)

    async def _write_queued(self, client: coredis.Redis[bytes]) -> None:
        batch = self._take_batch()
        error = await attempt(
            lambda: self._write(client, batch), self.request_timeout + len(batch) / 1000
        )
        if error is not None:
            self._done(batch, ok=False)
            self._down(error)
            return
        for op in batch:
            if isinstance(op, _Append) and self._floor.get(op.stream, 0) <= op.first:
                self._floor.pop(op.stream, None)  # trimmed past the hole
        self._done(batch, ok=True)

    async def _close(self, client: coredis.Redis[bytes]) -> None:
        """The run stops: write what is queued, then the end of every stream."""
        self._closed = True
        while self._queue and self.available:
            await self._write_queued(client)
        if not self._streams or not self.available:
            return
        now = time.time()

        async def end() -> None:
            async with client.pipeline(transaction=False) as pipe:
                for stream, next in self._streams.items():
                    key = self._stream_key(stream)
                    pipe.xadd(key, {"e": repr(now)}, identifier=f"{next + 1}-0")
                    pipe.expire(key, self._ttl + _STREAM_MARGIN)

        error = await attempt(end, self.request_timeout)
        if error is not None:
            log.warning("the end of this node's recovery streams not written: %s", describe(error))

    @asynccontextmanager
    async def _open_client(self) -> AsyncIterator[coredis.Redis[bytes]]:
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self.url,
            decode_responses=False,
            connect_timeout=self.connect_timeout,
            retry_policy=NoRetryPolicy(),
        )
        async with client:
            self._client = client
            try:
                yield client
            finally:
                self._client = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write to Redis until cancelled; then write what is queued and the end of this run's
        streams, within ``close_timeout``.

        ``task_status`` is started once Redis answered, or could not be reached (at most
        ``connect_timeout`` and a bit): recovery works from memory meanwhile.
        """
        if self._client is not None:
            raise RuntimeError("these sessions are already running")
        self._closed = False
        try:
            async with self._open_client() as client, trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, client)
                with trio.move_on_after(self.connect_timeout + 0.5):
                    await self._tried.wait()
                task_status.started()
        finally:
            # Cancelled, the client's connections are gone: the last writes take a new one.
            with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout):
                async with self._open_client() as client:
                    await self._close(client)
            self.available = False


def _session(value: Any) -> SharedSession | None:
    if value is None:
        return None
    try:
        record = json.loads(_text(value))
        saved = Saved(
            sid=str(record["sid"]),
            pid=str(record["pid"]),
            rooms={str(room) for room in record["rooms"]},
            data=dict(record["data"]),
            disconnected_at=0.0,
            since=int(record["since"]),
        )
        return SharedSession(saved, str(record["stream"]), int(record["next"]))
    except (ValueError, KeyError, TypeError):
        log.warning("a recovery session in Redis is not in this node's format: ignored")
        return None
