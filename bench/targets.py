"""The servers under test: how to start each one, how to tell it is ready, what it needs."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

from bench.procs import CHECKOUT, Child, open_child

__all__ = [
    "LOAD_NEEDS",
    "SERVERS",
    "SINGLE",
    "Server",
    "Target",
    "free_port",
    "missing",
    "open_server",
]

ENGINE_PATH = "/socket.io/?EIO=4&transport="
START_TIMEOUT = 30.0
_SCRIPTS = Path(__file__).resolve().parent / "servers"


@attrs.frozen
class Target:
    """A server under test: its command (the suite adds ``--port``, and the options of
    ``servers/common.py`` it asks for) and what it needs.

    With ``nodes`` over 1, the suite runs that many of it sharing rooms through a redis-server
    it starts (``--redis URL``; ``bench/cluster.py``).
    """

    name: str
    argv: tuple[str, ...]
    modules: tuple[str, ...] = ()  # Python modules
    npm: tuple[str, ...] = ()  # npm packages in the checkout's node_modules
    app_modules: tuple[str, ...] = ()  # what the application mode needs on top
    app_npm: tuple[str, ...] = ()
    nodes: int = 1
    programs: tuple[str, ...] = ()  # executables on the PATH (redis-server)

    def command(self, port: int, options: Sequence[str] = ()) -> list[str]:
        node = shutil.which("node") or "node"
        return [node if a == "node" else a for a in self.argv] + ["--port", str(port), *options]


def _python(module: str, *extra: str) -> tuple[str, ...]:
    return (sys.executable, "-m", f"bench.servers.{module}", *extra)


_NODE_SERVER = ("node", str(_SCRIPTS / "node_server.mjs"))
SERVERS = {
    target.name: target
    for target in (
        Target("hub", _python("hub_server"), ("hub",)),
        Target("hub-asgi", _python("hub_server", "--asgi"), ("hub", "hypercorn")),
        Target(
            "python-socketio",
            _python("psio_server"),
            ("socketio", "uvicorn", "uvloop", "httptools", "websockets"),
            app_modules=("jwt",),
        ),
        Target(
            "node-socketio",
            _NODE_SERVER,
            npm=("socket.io",),
            app_npm=("jsonwebtoken",),
        ),
        Target(
            "hub-2nodes",
            _python("hub_server"),
            ("hub", "coredis"),
            nodes=2,
            programs=("redis-server",),
        ),
        Target(
            "node-socketio-2nodes",
            _NODE_SERVER,
            npm=("socket.io", "@socket.io/redis-adapter", "redis"),
            nodes=2,
            programs=("redis-server",),
        ),
    )
}
SINGLE = tuple(name for name, target in SERVERS.items() if target.nodes == 1)
"""The servers that run as one process (every command measures them)."""
LOAD_NEEDS = Target("load", ("node",))


def missing(
    targets: Iterable[Target], modules: Iterable[str] = (), *, app: bool = False
) -> list[str]:
    """What is not installed among what ``targets`` (and the extra ``modules``) need; with
    ``app``, in their application mode too."""
    gaps: list[str] = []
    for target in targets:
        needs_node = target.npm or "node" in target.argv
        if needs_node and shutil.which("node") is None:
            gaps.append(f"{target.name}: node is not installed")
        gaps += [
            f"{target.name}: {program} is not installed (apt-get install {program})"
            for program in target.programs
            if shutil.which(program) is None
        ]
        for package in target.npm + (target.app_npm if app else ()):
            if not (CHECKOUT / "node_modules" / package / "package.json").exists():
                gaps.append(f"{target.name}: npm package {package} (run `npm install`)")
        for module in target.modules + (target.app_modules if app else ()):
            if importlib.util.find_spec(module) is None:
                gaps.append(f"{target.name}: Python module {module} (pip install -e '.[dev]')")
    gaps += [
        f"Python module {module} (pip install -e '.[dev]')"
        for module in modules
        if importlib.util.find_spec(module) is None
    ]
    return gaps


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@attrs.frozen
class Server:
    """A started server under test."""

    child: Child
    url: str


@asynccontextmanager
async def open_server(
    target: Target,
    *,
    cores: frozenset[int],
    logs: Path,
    options: Sequence[str] = (),
    name: str | None = None,
) -> AsyncIterator[Server]:
    """Start ``target`` on a free loopback port; ready once it answers an Engine.IO handshake.

    ``options``: more of its command line (``--ping-interval S``...); ``name``: the process's,
    for its log (the target's by default).
    """
    port = free_port()
    command = target.command(port, options)
    async with open_child(name or target.name, command, cores=cores, logs=logs) as child:
        with trio.move_on_after(START_TIMEOUT) as waiting:
            while not await _answers_handshake(port):
                if child.process.returncode is not None:
                    raise child.failure("did not start")
                await trio.sleep(0.1)
        if waiting.cancelled_caught:
            raise child.failure(f"not answering within {START_TIMEOUT:.0f} s")
        yield Server(child, f"http://127.0.0.1:{port}")


async def _answers_handshake(port: int) -> bool:
    request = f"GET {ENGINE_PATH}polling HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    answer = b""
    with trio.move_on_after(2.0):
        try:
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(request.encode())
                while b'"sid"' not in answer and (chunk := await stream.receive_some()):
                    answer += chunk
        except OSError:
            return False
    return answer.startswith(b"HTTP/1.1 200") and b'"sid"' in answer
