"""The processes of a soak run: hub nodes (``hub serve``), and the swarm of Node tabs.

Redis is :class:`support.redis_server.RedisServer`, the suite's own. Every process is started
in its own session and killed with its process group when its block ends, however it ends.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import trio

__all__ = [
    "CHECKOUT",
    "EMIT_TOKEN",
    "SECRET",
    "HubNode",
    "SoakError",
    "Swarm",
    "node_binary",
    "open_nodes",
    "open_swarm",
    "read_cpu_seconds",
    "read_rss_kb",
]

CHECKOUT = Path(__file__).resolve().parents[2]
SWARM = Path(__file__).resolve().parent / "swarm.mjs"
SECRET = "soak-run-jwt-secret-not-for-production"
EMIT_TOKEN = "soak-run-emit-token"
START = 30.0
"""The longest a process may take to be ready."""
STOP = 10.0
"""How long a node has to exit after SIGTERM (it shuts down gracefully) before it is killed."""

_LISTENING = re.compile(r"internal API on http://\S+/internal/$", re.MULTILINE)
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class SoakError(Exception):
    """The run could not be made (a process did not start, a tool is missing)."""


def node_binary() -> str:
    """The path of ``node``.

    Raises:
        SoakError: Node.js or the npm package socket.io-client is missing.
    """
    found = shutil.which("node")
    if found is None:
        raise SoakError("node is not installed (apt-get install nodejs npm)")
    if not (CHECKOUT / "node_modules" / "socket.io-client").is_dir():
        raise SoakError("the npm package socket.io-client is missing (run npm install)")
    return found


def read_rss_kb(pid: int) -> int:
    """A process's resident memory (VmRSS) in KiB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The fields after the command name, which is in parentheses and may hold spaces.
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


@attrs.define
class HubNode:
    """One ``hub serve`` process with its own id, public port and internal port."""

    id: str
    port: int
    internal_port: int
    log: Path
    process: trio.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def error_lines(self) -> list[str]:
        """The lines of its log at level ERROR or CRITICAL, and those of tracebacks."""
        text = self.log.read_text(errors="replace")
        return [
            line
            for line in text.splitlines()
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
        ]


def hub_environment(database: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without the hub's variables, the run's settings and
    ``extra``."""
    platform = {"JWT_ACCESS_SECRET", "WS_ALLOWED_ORIGINS", "NODE_ENV"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") and k not in platform}
    return {
        **clean,
        "HUB_DATABASE": str(database),
        "JWT_ACCESS_SECRET": SECRET,
        "HUB_EMIT_TOKEN": EMIT_TOKEN,
        **extra,
    }


async def _kill_group(process: trio.Process, grace: float) -> None:
    """SIGTERM to the process group, SIGKILL after ``grace`` seconds."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with trio.move_on_after(grace):
                await process.wait()
        if process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


@asynccontextmanager
async def open_nodes(
    node_ids: tuple[str, ...],
    redis_url: str,
    database: Path,
    folder: Path,
    free_port: Callable[[], int],
    environment: Mapping[str, str],
) -> AsyncIterator[dict[str, HubNode]]:
    """Run ``hub serve --node-id ID --redis URL`` for each id, each with ``/internal/`` on a
    port of its own, ``environment`` added to theirs; all started at once, stopped (SIGTERM:
    a graceful shutdown) at the end.

    Raises:
        SoakError: one exited, or did not say it listens within :data:`START` seconds.
    """
    nodes: dict[str, HubNode] = {}
    try:
        for node_id in node_ids:
            port, internal_port = free_port(), free_port()
            log = folder / f"{node_id}.log"
            command = [
                sys.executable, "-m", "hub.cli", "serve", "--node-id", node_id,
                "--redis", redis_url, "--port", str(port), "--internal-port", str(internal_port),
            ]  # fmt: skip
            with log.open("wb") as sink:
                process = await trio.lowlevel.open_process(
                    command,
                    cwd=CHECKOUT,
                    env=hub_environment(database, environment),
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            nodes[node_id] = HubNode(node_id, port, internal_port, log, process)
        for node in nodes.values():
            await _listening(node)
        yield nodes
    finally:
        async with trio.open_nursery() as nursery:
            for node in nodes.values():
                nursery.start_soon(_kill_group, node.process, STOP)


async def _listening(node: HubNode) -> None:
    def says_so() -> bool:
        return _LISTENING.search(node.log.read_text(errors="replace")) is not None

    with trio.move_on_after(START):
        while not says_so() and node.process.returncode is None:
            await trio.sleep(0.05)
    if not says_so():
        tail = node.log.read_text(errors="replace")[-2000:]
        raise SoakError(f"node {node.id} did not start:\n{tail}")


class Swarm:
    """The Node process of the tabs (``swarm.mjs``): commands in, a status line a second out."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.stats: dict[str, Any] = {}
        self._buffer = bytearray()

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, command: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")

    def keep(self, data: bytes) -> None:
        """Output read before :meth:`read_stats` started."""
        self._buffer += data

    async def read_stats(self) -> None:
        """Keep :attr:`stats` up to date with the swarm's status lines, until it exits."""
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.receive_some(1 << 16):
            self._buffer += chunk
            while (end := self._buffer.find(b"\n")) >= 0:
                line = json.loads(bytes(self._buffer[:end]))
                del self._buffer[: end + 1]
                if line.get("ev") == "stats":
                    self.stats = line

    async def finish(self, timeout: float) -> None:
        """Close its standard input: every tab is closed, the log flushed, the process gone.

        Raises:
            SoakError: it did not exit within ``timeout`` seconds, or failed.
        """
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        with trio.move_on_after(timeout):
            await self.process.wait()
        if self.process.returncode != 0:
            raise SoakError(f"the swarm did not exit cleanly ({self.process.returncode})")


@asynccontextmanager
async def open_swarm(folder: Path) -> AsyncIterator[Swarm]:
    """Start ``node swarm.mjs``; its tabs' log is ``folder/swarm.log`` (its errors
    ``folder/swarm.err``).

    Raises:
        SoakError: Node.js or socket.io-client is missing, or the swarm did not start.
    """
    log = folder / "swarm.log"
    with (folder / "swarm.err").open("wb") as errors:
        process = await trio.lowlevel.open_process(
            [node_binary(), str(SWARM), str(log)],
            cwd=CHECKOUT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        )
    try:
        swarm = Swarm(process, log)
        assert process.stdout is not None
        first = b""
        with trio.move_on_after(START):
            first = bytes(await process.stdout.receive_some(1 << 16))
        line, _, rest = first.partition(b"\n")
        if b'"started"' not in line:
            raise SoakError(f"the swarm did not start: {first!r}")
        swarm.keep(rest)
        yield swarm
    finally:
        await _kill_group(process, 1.0)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                await stream.aclose()
