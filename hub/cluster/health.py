"""How the node's link to Redis is doing: connected or not, since when, what was dropped.

:class:`Health` keeps it and says it in the log, once per change: once when Redis cannot be
reached (at start or later), once when it is back. :class:`ClusterStatus` is its snapshot, for
health checks and metrics (``RedisCluster.status``).
"""

from __future__ import annotations

import logging
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import attrs
import coredis.exceptions
import trio

from hub.cluster.wire import MalformedMessage

__all__ = [
    "PUBLISHER",
    "SUBSCRIBER",
    "UNREACHABLE",
    "Backoff",
    "ClusterStatus",
    "Health",
    "attempt",
    "describe",
    "redacted",
]

UNREACHABLE: Final = (
    coredis.exceptions.RedisError,
    OSError,
    TimeoutError,
    trio.TooSlowError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)
"""What "Redis cannot be reached" looks like from coredis, trio and anyio."""


async def attempt(operation: Callable[[], Awaitable[Any]], timeout: float) -> BaseException | None:
    """Run ``operation`` within ``timeout``; the error when Redis could not be reached."""
    error: BaseException | None = None
    try:
        with trio.fail_after(timeout):
            await operation()
    except* UNREACHABLE as group:
        error = group
    return error


log = logging.getLogger("hub.cluster")

SUBSCRIBER = "subscriber"
PUBLISHER = "publisher"
_PARTS = frozenset({SUBSCRIBER, PUBLISHER})


@attrs.frozen
class ClusterStatus:
    """A snapshot of the node's link to Redis, for health checks and metrics.

    Attributes:
        connected: subscribed and publishing: cross-node messages flow.
        since: when ``connected`` last changed (seconds since the epoch).
        dropped: cross-node messages not published since start (Redis unreachable, or the
            publish queue full).
        outages: how many times the link was lost (or could not be made at start).
        malformed: messages read from Redis and ignored because they broke the format.
        queued: messages waiting in the publish queue now (written and not yet answered by
            Redis included).
        error: the last error while not connected, one line; None when connected.
        uid: this node's id in the cluster.
        dropped_received: broadcasts from other nodes for this node's rooms, read from Redis
            and not delivered because this node was more than ``max_backlog`` messages behind
            (since start).
        backlog: messages read from Redis and not yet handled, when last measured.
    """

    connected: bool
    since: float
    dropped: int
    outages: int
    malformed: int
    queued: int
    error: str | None
    uid: str
    dropped_received: int = 0
    backlog: int = 0


class Backoff:
    """Exponential delays with jitter: ``first``, doubling, at most ``most``."""

    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = most
        self._next = first

    def reset(self) -> None:
        self._next = self.first

    def delay(self) -> float:
        delay = self._next * random.uniform(0.8, 1.2)
        self._next = min(self._next * 2, self.most)
        return delay


def describe(error: BaseException) -> str:
    """One line for an error that may be a group of the same few errors."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if str(error) else text


def redacted(url: str) -> str:
    """``url`` without its password, for the log."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


class Health:
    """The state of the link (its two parts: the subscription and the publisher) and its counts.

    Args:
        uid: the node's id, in its log lines.
        url: Redis's URL (logged without its password).
    """

    def __init__(self, uid: str, url: str) -> None:
        self.uid = uid
        self.url = redacted(url)
        self.up: set[str] = set()
        self.since = time.time()
        self.dropped = 0
        self.outages = 0
        self.malformed = 0
        self.error: str | None = None
        self.dropped_received = 0
        self.backlog = 0
        self._outage_logged = False
        self._behind_logged = False

    @property
    def connected(self) -> bool:
        return self.up >= _PARTS

    def status(self, queued: int) -> ClusterStatus:
        return ClusterStatus(
            connected=self.connected,
            since=self.since,
            dropped=self.dropped,
            outages=self.outages,
            malformed=self.malformed,
            queued=queued,
            error=None if self.connected else self.error,
            uid=self.uid,
            dropped_received=self.dropped_received,
            backlog=self.backlog,
        )

    def part_up(self, part: str) -> None:
        """``part`` works (again)."""
        was = self.connected
        self.up.add(part)
        if not self.connected or was:
            return
        down_for = time.time() - self.since
        self.since = time.time()
        self.error = None
        if self._outage_logged:
            self._outage_logged = False
            log.warning(
                "cluster node %s: Redis at %s is reachable again after %.1f s: cross-node"
                " messages flow (%d dropped so far)",
                self.uid,
                self.url,
                down_for,
                self.dropped,
            )
        else:
            log.info("cluster node %s connected to Redis at %s", self.uid, self.url)

    def part_down(self, part: str | None, error: BaseException) -> None:
        """``part`` (or, for None, the whole link) is lost."""
        was = self.connected
        if part is None:
            self.up.clear()
        else:
            self.up.discard(part)
        self.error = describe(error)
        if was:
            self.since = time.time()
        if self._outage_logged:
            log.debug("Redis %s still unreachable: %s", part or "link", self.error)
            return
        # Once per outage, not once per message or per attempt.
        self.outages += 1
        self._outage_logged = True
        log.warning(
            "cluster node %s: Redis at %s cannot be reached (%s): this node serves its own"
            " sockets only and drops cross-node messages until Redis is back; trying again"
            " with backoff",
            self.uid,
            self.url,
            self.error,
        )

    def count_malformed(self, error: MalformedMessage) -> None:
        """A message from Redis broke the format: counted, and logged the first time."""
        self.malformed += 1
        if self.malformed == 1:
            log.warning("ignoring a malformed cluster message (logged once): %s", error.message)
        else:
            log.debug("ignoring a malformed cluster message: %s", error.message)

    def behind(self, backlog: int, bound: int) -> None:
        """``backlog`` messages read from Redis wait to be handled, more than ``bound``: a
        broadcast is dropped (counted; logged once per episode)."""
        self.backlog = backlog
        self.dropped_received += 1
        if self._behind_logged:
            return
        self._behind_logged = True
        log.warning(
            "cluster node %s is %d messages behind Redis (more than %d): dropping broadcasts from"
            " other nodes until it catches up",
            self.uid,
            backlog,
            bound,
        )

    def caught_up(self, backlog: int) -> None:
        """``backlog`` messages wait, under the bound (said once when an episode ends)."""
        self.backlog = backlog
        if self._behind_logged:
            self._behind_logged = False
            log.warning(
                "cluster node %s caught up with Redis (%d broadcasts from other nodes dropped"
                " so far)",
                self.uid,
                self.dropped_received,
            )
