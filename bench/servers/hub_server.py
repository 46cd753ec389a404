"""hub under test: its native listener, or (``--asgi``) ``server.asgi()`` under hypercorn's
trio worker. With ``--jwt-secret``, hub's real application instead of the bare server: the
``Hub`` of ``hub.app``, its JWT middleware, its internal API and an SQLite access store. With
``--redis URL``, a node of a cluster (``hub.cluster.RedisCluster`` with its defaults).
Behaviour: see ``common.py``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, cast

import hypercorn.config
import hypercorn.trio
import trio

import hub
from bench.servers.common import (
    BACKLOG,
    PING_INTERVAL,
    PING_TIMEOUT,
    ROOM,
    Burst,
    arguments,
    pause,
    ticks,
    user_id,
)
from hub.app.config import Config
from hub.app.hub import Hub
from hub.app.internal import InternalAPI
from hub.app.store import SQLiteStore
from hub.cluster import RedisCluster


def build(
    ping_interval: float = PING_INTERVAL,
    ping_timeout: float = PING_TIMEOUT,
    redis: str | None = None,
) -> hub.Server:
    cluster = RedisCluster(redis) if redis else None
    server = hub.Server(ping_interval=ping_interval, ping_timeout=ping_timeout, cluster=cluster)

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        socket.join(ROOM)

    @server.on("burst")
    async def burst(socket: hub.Socket, request: Burst) -> str:
        room = server.to(ROOM)
        wait, started = pause(request), trio.current_time()
        for index, payload in enumerate(ticks(request)):
            room.emit("tick", payload)
            if wait:
                await trio.sleep_until(started + (index + 1) * wait)  # paced: a fixed rate
            else:
                await trio.lowlevel.checkpoint()
        return "done"

    return server


def build_app(args: argparse.Namespace) -> Hub:
    """The application as ``hub serve`` builds it, with a store seeded with ``args.users``.

    One difference: ``hub serve`` freezes the garbage collector's view of start-up objects
    (``freeze_gc``), a tuning the other servers do not get, so it stays off here.
    """
    if not args.database:
        raise SystemExit("--jwt-secret needs --database")
    config = Config(
        host=args.host,
        port=args.port,
        database=args.database,
        jwt_secret=args.jwt_secret,
        emit_token=args.emit_token,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        redis_url=args.redis,
    ).check()
    for stale in (args.database, f"{args.database}-wal", f"{args.database}-shm"):
        Path(stale).unlink(missing_ok=True)
    store = SQLiteStore(config.database)
    for index in range(args.users):
        store.add_user(user_id(index))
    return Hub(config, store)


async def main() -> None:
    args = arguments("hub, as the benchmark serves it", asgi=True)
    logging.basicConfig(level=logging.WARNING)
    if args.jwt_secret:
        app = build_app(args)
        if not args.asgi:
            await app.serve()  # the internal API on the same port, as `hub serve` does
            return
        app.server.route("/internal/", InternalAPI(app))
        server = app.server
    else:
        server = build(args.ping_interval, args.ping_timeout, args.redis)
        if not args.asgi:
            await server.serve(args.host, args.port)  # listens with a backlog of 1024 too
            return
    config = hypercorn.config.Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.backlog = BACKLOG
    config.accesslog = None
    await hypercorn.trio.serve(cast(Any, server.asgi()), config)


if __name__ == "__main__":
    trio.run(main)
