"""A real ``redis-server`` on a free loopback port, for the cluster tests.

:func:`redis_server` starts Debian's ``redis-server`` (no persistence: ``--save '' --appendonly
no``) in the test's temporary directory and stops it when the ``with`` block ends. The
:class:`RedisServer` it yields can be killed, started again on the same port, paused
(``SIGSTOP``: a Redis that holds its connections open and answers nothing) and resumed, as an
outage would.

A missing ``redis-server`` skips the test, or fails it under ``HUB_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["RedisServer", "free_port", "redis_binary", "redis_server"]

START = 10.0
"""The longest redis-server may take to answer PING after it is started."""


def redis_binary() -> str:
    """The path of redis-server; skips (or fails under HUB_REQUIRE_ALL=1) without it."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("HUB_REQUIRE_ALL") == "1":
            pytest.fail(f"{reason} (required: HUB_REQUIRE_ALL=1)", pytrace=False)
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process (started again on the same port after :meth:`kill`)."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        assert self.process is None, "already running"
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 -- kept by the process
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START
        while not _ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")
            time.sleep(0.02)

    def kill(self) -> None:
        """Kill it at once (SIGKILL): its clients see their connections reset."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a paused process dies too
                process.kill()
            process.wait()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def command(self, *args: str) -> bytes:
        """Run one command with redis-cli; returns its raw output."""
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        result = subprocess.run(
            [cli, "-p", str(self.port), *args], capture_output=True, timeout=5, check=True
        )
        return result.stdout


@contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    """A started redis-server, stopped when the block ends."""
    server = RedisServer(redis_binary(), folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()
