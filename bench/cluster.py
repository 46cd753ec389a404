"""What serves the clients: one server process, or the nodes of a cluster and their Redis.

A target with ``nodes`` over 1 (``hub-2nodes``, ``node-socketio-2nodes``) runs as that many
server processes, each started with ``--redis URL`` on one redis-server that the suite starts
for the measurement (a free loopback port, no persistence: ``--save '' --appendonly no``). The
suite waits until every node has subscribed (``PUBSUB NUMSUB`` of the request channel that hub and
Node's ``@socket.io/redis-adapter`` alike subscribe to) before any client connects.

Cores: each node gets a core of its own, and the load and Redis the cores left. A machine with no
more cores than nodes cannot give the load one: node ``i`` then runs on core ``i`` (modulo the
cores) and the load and Redis on all of them, beside the nodes.
"""

from __future__ import annotations

import shutil
import string
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from bench.procs import BenchError, Child, Cores, open_child
from bench.targets import START_TIMEOUT, Server, Target, free_port, open_server

__all__ = [
    "REQUEST_CHANNEL",
    "Deployment",
    "NodeCores",
    "Redis",
    "open_deployment",
    "open_redis",
    "plan_nodes",
    "redis_command",
]

REQUEST_CHANNEL = "socket.io-request#/#"
"""The main namespace's request channel: every node of a cluster subscribes to it, hub's
(``hub.cluster.wire.Channels``) as Node's adapter's."""
# redis-server does not watch its standard input: the shell does, and stops it at EOF, so that
# Redis too goes when the suite dies, however it dies. (A SIGKILL of the process group, which is
# how the suite stops it, takes both at once.)
_WATCHED = 'redis-server "$@" & cat >/dev/null; kill $!'


@attrs.frozen
class NodeCores:
    """Where each node of a cluster runs, and where the load and Redis run."""

    nodes: tuple[frozenset[int], ...]
    load: frozenset[int]

    @property
    def split(self) -> bool:
        """Whether no two nodes share a core and the load runs on none of theirs."""
        used = [core for cores in self.nodes for core in cores]
        return len(set(used)) == len(used) and not self.load & set(used)


def plan_nodes(cores: Cores, nodes: int) -> NodeCores:
    """A core for each of ``nodes`` nodes, the cores left for the load and Redis; with too few
    cores, node ``i`` on core ``i`` modulo their number, the load and Redis on all of them."""
    allowed = sorted(cores.server | cores.load)
    if len(allowed) > nodes:
        return NodeCores(
            tuple(frozenset({core}) for core in allowed[:nodes]), frozenset(allowed[nodes:])
        )
    return NodeCores(
        tuple(frozenset({allowed[i % len(allowed)]}) for i in range(nodes)), frozenset(allowed)
    )


@attrs.frozen
class Redis:
    """A started redis-server (``child`` is the shell that watches it)."""

    child: Child
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def cpu_seconds(self) -> float:
        """User + system CPU time of redis-server (all its threads) so far, as Redis counts it
        (``INFO cpu``: getrusage, to the microsecond; /proc counts in 10 ms ticks, more than
        Redis spends on a short burst)."""
        info = _fields(await redis_command(self.port, "INFO", "cpu"))
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@asynccontextmanager
async def open_redis(*, cores: frozenset[int], logs: Path) -> AsyncIterator[Redis]:
    """Start redis-server on a free loopback port, pinned to ``cores``; stopped when the block
    ends. Ready once it answers PING."""
    port = free_port()
    program = shutil.which("redis-server") or "redis-server"
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    options += ["--dir", str(logs), "--loglevel", "warning"]
    command = ["sh", "-c", _WATCHED.replace("redis-server", program, 1), "redis", *options]
    async with open_child("redis", command, cores=cores, logs=logs) as child:
        with trio.move_on_after(START_TIMEOUT) as waiting:
            while not await _answers_ping(port):
                if child.process.returncode is not None:
                    raise child.failure("did not start")
                await trio.sleep(0.05)
        if waiting.cancelled_caught:
            raise child.failure(f"not answering within {START_TIMEOUT:.0f} s")
        yield Redis(child, port)


async def _answers_ping(port: int) -> bool:
    try:
        with trio.fail_after(2.0):
            return bool(await redis_command(port, "PING") == b"PONG")
    except (OSError, trio.TooSlowError, BenchError):
        return False


def _fields(info: bytes) -> dict[str, str]:
    """The ``name:value`` lines of an INFO reply."""
    lines = (line.partition(":") for line in info.decode().splitlines())
    return {name: value for name, colon, value in lines if colon}


@attrs.frozen
class Deployment:
    """What serves the clients of one measurement.

    Attributes:
        servers: the server, or each node of the cluster (the first is the one the control
            client asks for the bursts).
        cores: where each of them runs.
        load_cores: where the load runs (and Redis).
        redis: the cluster's Redis (None for one server).
        split: whether the servers and the load run on cores of their own.
    """

    servers: tuple[Server, ...]
    cores: tuple[frozenset[int], ...]
    load_cores: frozenset[int]
    redis: Redis | None = None
    split: bool = True

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def rss_kb(self) -> int:
        """Resident memory now of every server process together, KiB."""
        return sum(server.child.rss_kb() for server in self.servers)

    async def redis_cpu_seconds(self) -> float:
        """Redis's CPU time so far (0 without Redis)."""
        return await self.redis.cpu_seconds() if self.redis is not None else 0.0


@asynccontextmanager
async def open_deployment(
    target: Target, *, cores: Cores, logs: Path, options: Sequence[str] = ()
) -> AsyncIterator[Deployment]:
    """Start ``target``: one server on the server core, or (``target.nodes`` over 1) Redis and
    the nodes, pinned as :func:`plan_nodes` says; ready once every node has subscribed.

    ``options``: more of each server's command line.
    """
    if target.nodes == 1:
        async with open_server(target, cores=cores.server, logs=logs, options=options) as server:
            yield Deployment((server,), (cores.server,), cores.load, split=cores.split)
        return
    plan = plan_nodes(cores, target.nodes)
    async with AsyncExitStack() as stack:
        redis = await stack.enter_async_context(open_redis(cores=plan.load, logs=logs))
        servers: list[Server] = []
        for index, mine in enumerate(plan.nodes):
            server = await stack.enter_async_context(
                open_server(
                    target,
                    cores=mine,
                    logs=logs,
                    options=[*options, "--redis", redis.url],
                    name=f"{target.name}-{string.ascii_lowercase[index]}",
                )
            )
            servers.append(server)
        await _subscribed(redis, servers)
        yield Deployment(tuple(servers), plan.nodes, plan.load, redis, plan.split)


async def _subscribed(redis: Redis, servers: list[Server]) -> None:
    """Wait until every node subscribes to the request channel."""
    subscribed = 0
    with trio.move_on_after(START_TIMEOUT):
        while (subscribed := await _subscribers(redis)) < len(servers):
            await trio.sleep(0.05)
    if subscribed < len(servers):
        raise servers[-1].child.failure(
            f"{subscribed} of {len(servers)} nodes subscribed to Redis within {START_TIMEOUT:.0f} s"
        )


async def _subscribers(redis: Redis) -> int:
    _, count = await redis_command(redis.port, "PUBSUB", "NUMSUB", REQUEST_CHANNEL)
    return int(count)


async def redis_command(port: int, *args: str) -> Any:
    """Send one command to the Redis on ``port`` over a new connection; its reply (RESP2: an
    int, bytes, None, or a list of those).

    Raises:
        BenchError: Redis answered with an error, or the reply broke off.
        OSError: no connection.
    """
    request = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request.encode())
        return await _Reply(stream).read()


class _Reply:
    """Reads one RESP2 reply off a stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> None:
        chunk = await self.stream.receive_some()
        if not chunk:
            raise BenchError("Redis closed the connection before its reply ended")
        self.buffer += chunk

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            await self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    async def read(self) -> Any:
        line = await self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise BenchError(f"Redis: {rest.decode(errors='replace')}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                await self._fill()
            data = bytes(self.buffer[:size])
            del self.buffer[: size + 2]
            return data
        if kind == b"*":
            return [await self.read() for _ in range(int(rest))]
        raise BenchError(f"not a Redis reply: {line[:80]!r}")
