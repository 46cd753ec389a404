"""The suite's child processes: started pinned to cores, read through /proc, always stopped.

Each child runs in a session of its own, so a Ctrl-C on the terminal reaches only the suite,
which then stops its children itself (``open_child`` kills the child's process group when its
block ends, however it ends). Should the suite itself be killed, every child still exits: each
one exits when its standard input, whose other end only the suite holds, closes.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import attrs
import trio

__all__ = [
    "CHECKOUT",
    "BenchError",
    "Child",
    "Cores",
    "open_child",
    "plan_cores",
    "raise_file_limit",
]

CHECKOUT = Path(__file__).resolve().parents[1]
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_STOP_TIMEOUT = 10.0


class BenchError(Exception):
    """One measurement could not be made (a server did not start, clients did not connect...)."""


@attrs.frozen
class Cores:
    """Where the server under test runs, and where the load and the suite run."""

    server: frozenset[int]
    load: frozenset[int]

    @property
    def split(self) -> bool:
        return not self.server & self.load


def plan_cores() -> Cores:
    """The first allowed core for the server, the others for the load (all for both on one)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return Cores(frozenset(cores), frozenset(cores))
    return Cores(frozenset(cores[:1]), frozenset(cores[1:]))


def raise_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Child:
    """A running child process. When it was started with ``events=True``, its standard output
    carries one JSON object per line, each with an ``ev`` name (see ``load/worker.mjs``)."""

    def __init__(self, name: str, process: trio.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log
        self._buffer = bytearray()
        self._events: dict[str, dict[str, Any]] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the whole process (all its threads) so far."""
        with open(f"/proc/{self.pid}/stat") as stat:
            # Fields after the command name, which is in parentheses and may hold spaces.
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime

    def rss_kb(self) -> int:
        """Resident memory now (VmRSS), in KiB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise BenchError(f"{self.name} has no VmRSS (did it exit?)")

    def failure(self, what: str) -> BenchError:
        """An error that says what failed, with the end of the child's log."""
        tail = self.log.read_text(errors="replace")[-1500:].strip()
        code = self.process.returncode
        state = "running" if code is None else f"exited with {code}"
        return BenchError(f"{self.name}: {what} ({state}){': ' + tail if tail else ''}")

    async def send(self, command: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")

    async def event(self, name: str) -> dict[str, Any]:
        """The next event called ``name``; events of other names that come first are kept."""
        while name not in self._events:
            event = json.loads(await self._line())
            self._events[event["ev"]] = event
        return self._events.pop(name)

    async def _line(self) -> bytes:
        assert self.process.stdout is not None
        while (end := self._buffer.find(b"\n")) < 0:
            chunk = await self.process.stdout.receive_some(1 << 16)
            if not chunk:
                raise self.failure("closed its output")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line


@asynccontextmanager
async def open_child(
    name: str, command: list[str], *, cores: frozenset[int], logs: Path, events: bool = False
) -> AsyncIterator[Child]:
    """Start ``command`` (in the checkout) pinned to ``cores``; kill it when the block ends.

    Its standard error (and standard output, unless ``events``) goes to ``logs/<name>.log``.
    """
    log = logs / f"{name}.log"
    with log.open("wb") as sink:
        process = await trio.lowlevel.open_process(
            command,
            cwd=CHECKOUT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if events else sink,
            stderr=sink,
            start_new_session=True,
            # Before exec, so every thread the program starts (Node's, uvloop's) is pinned too.
            preexec_fn=functools.partial(os.sched_setaffinity, 0, cores),
        )
    try:
        yield Child(name, process, log)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # a subject under test: no state
            with trio.move_on_after(_STOP_TIMEOUT):
                await process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    await stream.aclose()
