"""What every server under test does, and what the Python ones share.

Each server (``hub_server.py``, ``psio_server.py``, ``node_server.mjs``) behaves alike:

- it listens on ``--host``/``--port`` with a backlog of 1024, pings every 25 s (timeout 20 s;
  ``--ping-interval``/``--ping-timeout`` in seconds change that, which only ``hold`` does),
  compresses nothing, and exits when its standard input closes (the suite holds the other end);
- a socket joins the room ``bench`` when it connects;
- on the event ``burst`` ``{"count", "size", "first"}`` it emits ``count`` broadcasts of
  ``tick`` ``{"seq", "t", "pad"}`` to the room, one per turn of its event loop (it yields
  between broadcasts, so sockets drain and heartbeats run), then acknowledges with ``"done"``;
  with ``"interval"`` (milliseconds) it waits that long after each broadcast instead: a paced
  burst, at a rate every server is asked for alike.

``seq`` runs from ``first``; ``t`` is when the broadcast was emitted, in milliseconds of
CLOCK_MONOTONIC (Python's ``time.monotonic``, Node's ``process.hrtime``): every process on the
machine reads the same clock, so the load generator subtracts it from its own reading.
``pad`` brings the JSON payload to about ``size`` bytes.

**The application mode** (``--jwt-secret``, for ``connect`` with the JWT check and for
``emit-api``): what a product built on each server does, as hub's own application
(``hub.app``) does it, and nothing more.

- A client must send an HS256 JWT in its CONNECT payload, ``{"token": "..."}`` (socket.io-client's
  ``auth`` option), signed with the secret, its ``exp`` in the future and its subject in ``sub``;
  the server verifies it with the JWT library its users would pick (pyjwt, npm ``jsonwebtoken``;
  hub: ``hub.app.auth``) before the connection is accepted, and refuses any other client with a
  CONNECT_ERROR. The socket then joins ``user:<sub>`` (and not ``bench``).
- ``POST /internal/emit`` with ``Authorization: Bearer <--emit-token>`` takes
  ``{"event", "data", "to": [rooms], "except": [rooms]}``, or a JSON array of those, emits each
  to its rooms and answers ``{"delivered": N}`` (and ``results``, one per item, for an array).
- hub runs its real application: ``hub.app.hub.Hub`` with its authentication middleware, the
  internal API of ``hub.app.internal`` and an SQLite access store (``--database``) seeded with
  the users ``user-0`` ... ``user-<--users - 1>``, which the hub looks up at every connect. The
  other servers keep no users: they trust any well-signed token.

**A node of a cluster** (``--redis URL``, for the ``-2nodes`` servers): the server shares its rooms
with the other nodes on that Redis, through the cluster tools its users would pick (hub:
``hub.cluster.RedisCluster``; Node: ``@socket.io/redis-adapter``), both in the wire format of the
Node adapter. A broadcast reaches the room's sockets on every node; nothing else changes.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TypedDict

__all__ = [
    "BACKLOG",
    "EMIT_TOKEN",
    "JWT_SECRET",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "ROOM",
    "Burst",
    "arguments",
    "pause",
    "ticks",
    "user_id",
]

ROOM = "bench"
PING_INTERVAL = 25.0
PING_TIMEOUT = 20.0
BACKLOG = 1024
JWT_SECRET = "bench-jwt-secret-a-32-byte-or-longer-hmac-key"
"""The HS256 secret of the application mode (a benchmark's, public)."""
EMIT_TOKEN = "bench-emit-token"
_PAYLOAD_OVERHEAD = 36  # len('{"seq":1,"t":123456.789,"pad":""}') + a few digits


class Burst(TypedDict, total=False):
    """What the control client sends with ``burst`` (``size`` defaults to 60, ``first`` to 0)."""

    count: int
    size: int
    first: int
    interval: float  # milliseconds between broadcasts: a paced burst


def ticks(request: Burst) -> Iterator[dict[str, Any]]:
    """The payloads of a burst, each stamped with the time it is taken (just before its emit)."""
    pad = "x" * max(0, request.get("size", 60) - _PAYLOAD_OVERHEAD)
    first = request.get("first", 0)
    for seq in range(first, first + request["count"]):
        yield {"seq": seq, "t": round(time.monotonic_ns() / 1e6, 3), "pad": pad}


def pause(request: Burst) -> float:
    """Seconds to wait after each broadcast of the burst: 0 (one turn of the loop) unless it is
    paced."""
    return max(0.0, float(request.get("interval", 0))) / 1000


def user_id(index: int) -> str:
    """The subject of the ``index``-th user's tokens (the load mints them alike)."""
    return f"user-{index}"


def arguments(description: str, *, asgi: bool = False) -> argparse.Namespace:
    """Parse a server's command line, and exit when standard input closes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ping-interval", type=float, default=PING_INTERVAL, help="seconds")
    parser.add_argument("--ping-timeout", type=float, default=PING_TIMEOUT, help="seconds")
    if asgi:
        parser.add_argument("--asgi", action="store_true", help="serve as ASGI under hypercorn")
    parser.add_argument("--jwt-secret", help="the application mode: connect needs a JWT")
    parser.add_argument("--emit-token", help="the bearer token of POST /internal/emit")
    parser.add_argument("--users", type=int, default=1, help="users to seed (hub's store)")
    parser.add_argument("--database", help="the SQLite access store to create (hub)")
    parser.add_argument("--redis", metavar="URL", help="a node of a cluster sharing rooms there")
    args = parser.parse_args()
    threading.Thread(target=_exit_at_eof, daemon=True).start()
    return args


def _exit_at_eof() -> None:
    # The suite never writes to a server: EOF means the suite is gone, however it ended.
    sys.stdin.buffer.read()
    os._exit(0)
