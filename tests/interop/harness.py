"""Run real Socket.IO clients as subprocesses of a trio test and read what they observed.

A client process prints one JSON object per line (``{"ev": "connect", ...}``) and takes
commands on stdin, one JSON object per line (``{"op": "emit", ...}``); see
``node_client.mjs`` and ``py_client.py``. :func:`open_client` starts one and
:meth:`ClientProcess.expect` waits for what it reports. Bytes travel as
``{"$bytes": "<hex>", "$type": "..."}``: :func:`wire_bytes` builds them, :func:`plain` turns
them back into ``bytes``.

Every wait is bounded (a few seconds, generous for a loaded 2-core machine) and every process
is killed when its ``async with`` block ends. When node or a client package is missing, the
test is skipped, or fails under ``HUB_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn, cast

import hypercorn.config
import hypercorn.trio
import pytest
import trio

import hub

__all__ = [
    "CONNECT_TIMEOUT",
    "STEP_TIMEOUT",
    "ClientProcess",
    "Seen",
    "each_server_mode",
    "node_client",
    "node_command",
    "open_client",
    "plain",
    "python_client",
    "python_command",
    "serve",
    "wire_bytes",
]

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parents[1]
NODE_CLIENT = HERE / "node_client.mjs"
PY_CLIENT = HERE / "py_client.py"

CONNECT_TIMEOUT = 15.0
"""Starting a client process and connecting (node takes a while to start on a busy machine)."""

STEP_TIMEOUT = 8.0
"""Any later step: an event, an ack, a disconnect."""

CLIENT_LIFETIME = 60.0
"""The longest a client process may run (a bound for the whole test)."""

Record = dict[str, Any]


def _missing(reason: str) -> NoReturn:
    if os.environ.get("HUB_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (required: HUB_REQUIRE_ALL=1)", pytrace=False)
    pytest.skip(reason)


def node_command() -> list[str]:
    """The command that runs the socket.io-client driver; skips or fails when it cannot run."""
    node = shutil.which("node") or ("/usr/bin/node" if Path("/usr/bin/node").exists() else None)
    if node is None:
        _missing("node is not installed")
    # Node resolves the package from the script's folder upwards, as we do here.
    for folder in (HERE, *HERE.parents):
        if (folder / "node_modules" / "socket.io-client" / "package.json").exists():
            break
    else:
        _missing("the npm package socket.io-client is not installed (run `make install`)")
    return [node, str(NODE_CLIENT)]


def python_command() -> list[str]:
    """The command that runs the python-socketio driver; skips or fails when it cannot run."""
    for module, package in (("socketio", "python-socketio"), ("aiohttp", "aiohttp")):
        if importlib.util.find_spec(module) is None:
            _missing(f"the Python package {package} is not installed (pip install -e '.[dev]')")
    return [sys.executable, str(PY_CLIENT)]


SERVER_MODES = ["native", "asgi"]


class _Mode:
    """How :func:`serve` runs the server: the native listener, or ASGI under hypercorn."""

    current = "native"


def set_server_mode(mode: str) -> None:
    _Mode.current = mode


def each_server_mode(command: Callable[[], list[str]]) -> object:
    """An autouse fixture for a module of interop tests, bound to a name of the module there.

    Each test is skipped up front when ``command`` (:func:`node_command`,
    :func:`python_command`) cannot run (it fails under ``HUB_REQUIRE_ALL=1``), then runs against
    the native listener and against ASGI under hypercorn (see :func:`serve`).
    """

    @pytest.fixture(autouse=True, params=SERVER_MODES)
    def server_mode(request: pytest.FixtureRequest) -> None:
        command()
        set_server_mode(request.param)

    return server_mode


async def serve(nursery: trio.Nursery, server: hub.Server) -> str:
    """Start ``server`` on a free loopback port in ``nursery``; returns its base URL.

    Under the "asgi" mode (see :func:`set_server_mode`) the server runs as ``server.asgi()``
    in hypercorn's trio worker instead of on hub's own listener.
    """
    if _Mode.current == "asgi":
        config = hypercorn.config.Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        binds: list[str] = await nursery.start(
            functools.partial(hypercorn.trio.serve, cast(Any, server.asgi()), config)
        )
        return binds[0]
    host, port = await nursery.start(server.serve, "127.0.0.1", 0)
    return f"http://{host}:{port}"


# -- bytes in the line protocol ---------------------------------------------------------------


def wire_bytes(data: bytes, js_type: str = "Buffer") -> Record:
    """``data`` as a command argument (the Node driver makes a ``js_type``: Buffer, Uint8Array)."""
    return {"$bytes": data.hex(), "$type": js_type}


def plain(value: Any) -> Any:
    """An observed value with every ``{"$bytes": ...}`` turned into ``bytes``."""
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        if isinstance(value.get("$bytes"), str):
            return bytes.fromhex(value["$bytes"])
        return {key: plain(item) for key, item in value.items()}
    return value


# -- server side -----------------------------------------------------------------------------


class Seen:
    """What the server's handlers saw, by key, with a way to wait for it."""

    def __init__(self) -> None:
        self.records: dict[str, list[Any]] = {}
        self._changed = trio.Event()

    def add(self, key: str, value: Any = None) -> None:
        self.records.setdefault(key, []).append(value)
        self._changed.set()
        self._changed = trio.Event()

    def get(self, key: str) -> list[Any]:
        return self.records.get(key, [])

    async def wait(self, key: str, count: int = 1, timeout: float = STEP_TIMEOUT) -> list[Any]:
        """Wait until ``key`` was seen ``count`` times; returns all its values."""
        with trio.move_on_after(timeout):
            while len(self.get(key)) < count:
                await self._changed.wait()
            return self.get(key)
        raise AssertionError(
            f"server: {key!r} seen {len(self.get(key))} times, not {count}, within {timeout} s;"
            f" seen so far: {sorted(self.records)}"
        )


# -- client processes ------------------------------------------------------------------------


class ClientProcess:
    """A running client: the lines it printed so far, and its stdin for commands."""

    def __init__(self, process: trio.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.lines: list[Record] = []
        self.stderr = bytearray()
        self.eof = False
        self._taken: set[int] = set()
        self._changed = trio.Event()

    def _note(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        try:
            while chunk := await self.process.stdout.receive_some():
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except ValueError:
                            record = {"ev": "raw", "text": line.decode(errors="replace")}
                        self.lines.append(record)
                self._note()
        finally:
            self.eof = True
            self._note()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.receive_some():
            self.stderr += chunk

    def report(self) -> str:
        """All it printed, for failure messages."""
        lines = "\n".join(f"  {json.dumps(line)[:400]}" for line in self.lines)
        stderr = self.stderr.decode(errors="replace")[-3000:]
        return f"{self.name} printed:\n{lines}\nstderr:\n{stderr}"

    def _find(self, ev: str, fields: dict[str, Any]) -> Record | None:
        for index, line in enumerate(self.lines):
            if index in self._taken or line.get("ev") != ev:
                continue
            if all(line.get(key) == value for key, value in fields.items()):
                self._taken.add(index)
                return line
        return None

    async def expect(self, ev: str, timeout: float = STEP_TIMEOUT, **fields: Any) -> Record:
        """The first line not yet taken with ``"ev": ev`` and these ``fields``; waits for it.

        Raises:
            AssertionError: it did not come within ``timeout`` seconds, or the process ended.
        """
        with trio.move_on_after(timeout):
            while True:
                found = self._find(ev, fields)
                if found is not None:
                    return found
                if self.eof:
                    break
                await self._changed.wait()
        what = f"{ev} {fields}" if fields else ev
        ended = "the process ended" if self.eof else f"not within {timeout} s"
        raise AssertionError(f"{self.name}: expected {what!r}, {ended}\n{self.report()}")

    def seen(self, ev: str, **fields: Any) -> list[Record]:
        """Every line so far with ``"ev": ev`` and these fields, taken or not."""
        return [
            line
            for line in self.lines
            if line.get("ev") == ev and all(line.get(k) == v for k, v in fields.items())
        ]

    def events(self, name: str | None = None) -> list[Record]:
        """The server events it received so far (``"ev": "event"``), of ``name`` or all."""
        return [
            line
            for line in self.lines
            if line.get("ev") == "event" and (name is None or line.get("name") == name)
        ]

    async def send(self, **command: Any) -> None:
        """Send one command (``op=...``) to the client."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")

    async def wait_exit(self, timeout: float = STEP_TIMEOUT) -> int:
        with trio.move_on_after(timeout):
            return await self.process.wait()
        raise AssertionError(f"{self.name}: did not exit within {timeout} s\n{self.report()}")


@asynccontextmanager
async def open_client(
    nursery: trio.Nursery,
    command: list[str],
    options: dict[str, Any],
    *,
    name: str = "client",
    lifetime: float = CLIENT_LIFETIME,
) -> AsyncIterator[ClientProcess]:
    """Start a client process with ``options`` (JSON, its only argument).

    Its output is read by tasks in ``nursery`` (they end at the process's end-of-file). The
    ``async with`` block fails with ``trio.TooSlowError`` after ``lifetime`` seconds. On exit
    the client's stdin is closed, which makes it disconnect and exit; it is killed if it has not
    within a few seconds.
    """
    process = await trio.lowlevel.open_process(
        [*command, json.dumps(options)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(CHECKOUT),
    )
    client = ClientProcess(process, name)
    try:
        nursery.start_soon(client._read_stdout)
        nursery.start_soon(client._read_stderr)
        with trio.fail_after(lifetime):
            yield client
    finally:
        with trio.CancelScope(shield=True):
            assert process.stdin is not None
            with trio.move_on_after(1):
                await process.stdin.aclose()
            with trio.move_on_after(3):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def node_client(
    nursery: trio.Nursery, url: str, *, name: str = "node", **options: Any
) -> AbstractAsyncContextManager[ClientProcess]:
    """:func:`open_client` with ``socket.io-client`` in Node, on ``url`` with ``options``."""
    return open_client(nursery, node_command(), {"url": url, **options}, name=name)


def python_client(
    nursery: trio.Nursery, url: str, **options: Any
) -> AbstractAsyncContextManager[ClientProcess]:
    """:func:`open_client` with python-socketio's ``AsyncClient``, on ``url`` with ``options``."""
    return open_client(nursery, python_command(), {"url": url, **options}, name="python-socketio")
