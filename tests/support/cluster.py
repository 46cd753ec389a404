"""Several real ``hub serve`` processes behind a real nginx, on loopback ports, for tests.

:func:`start_cluster` seeds a SQLite access store, starts one ``python -m hub.cli serve`` per node
(each with its own ``--node-id`` and port, all trusting 127.0.0.1 as their proxy), renders the
nginx configuration with ``hub nginx-config`` exactly as a person would, and runs Debian's
``/usr/sbin/nginx`` in the foreground with that file and a prefix in the test's temporary
directory. Everything is stopped (SIGTERM, then SIGKILL) when the ``with`` block ends.

A missing nginx skips the test, or fails it under ``HUB_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import attrs
import pytest
import trio

from hub.app.auth import AuthSettings, mint_token
from hub.app.store import SQLiteStore

__all__ = [
    "EMIT_TOKEN",
    "SECRET",
    "USERS",
    "Cluster",
    "LogLine",
    "Nginx",
    "Node",
    "free_port",
    "nginx_binary",
    "start_cluster",
]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-of-the-nginx-cluster-tests"
EMIT_TOKEN = "cluster-emit-token"
START = 20.0
"""The longest a process may take to be ready (a hub node starts in about a second)."""

_LISTENING = re.compile(r"internal API on http://\S+/internal/$", re.MULTILINE)
_LOG_LINE = re.compile(
    r'^(?P<client>\S+) \[[^]]*\] "(?P<method>\S+) (?P<uri>\S+)" (?P<status>\d+) \d+ '
    r"transport=(?P<transport>\S+) sid=(?P<sid>\S+) node=(?P<node>.*) time=\S+$"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def nginx_binary() -> str:
    """nginx's path; skips the test (fails under ``HUB_REQUIRE_ALL=1``) when it is missing."""
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).exists()),
        None,
    )
    if found is None:
        reason = "nginx is not installed (apt-get install nginx)"
        if os.environ.get("HUB_REQUIRE_ALL") == "1":
            pytest.fail(f"{reason} (required: HUB_REQUIRE_ALL=1)", pytrace=False)
        pytest.skip(reason)
    return found


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {START} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


@attrs.define
class Node:
    """One ``hub serve`` process."""

    id: str
    port: int
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def kill(self) -> None:
        """Kill it at once (SIGKILL): its sessions vanish without a close."""
        self.process.kill()
        self.process.wait()


@attrs.frozen
class LogLine:
    """One request in nginx's access log (the ``hub`` log format of the rendered file)."""

    client: str
    method: str
    uri: str
    status: int
    transport: str
    sid: str  # "-" without one
    node: str  # the upstream address(es) that answered, "-" when nginx answered itself


@attrs.define
class Nginx:
    """The nginx process and its prefix directory."""

    port: int
    prefix: Path
    config: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> list[LogLine]:
        lines = []
        for text in (self.prefix / "access.log").read_text().splitlines():
            match = _LOG_LINE.fullmatch(text)
            assert match is not None, f"not in the hub log format: {text!r}"
            lines.append(
                LogLine(
                    client=match["client"],
                    method=match["method"],
                    uri=match["uri"],
                    status=int(match["status"]),
                    transport=match["transport"],
                    sid=match["sid"],
                    node=match["node"],
                )
            )
        return lines

    async def logged(self, wanted: Callable[[LogLine], bool], timeout: float = 10) -> list[LogLine]:
        """The access log once a line is ``wanted``: nginx writes a request's line after the
        response is sent (a WebSocket's, once it is closed), so it can come after the client
        has its answer."""
        with trio.move_on_after(timeout):
            while not any(wanted(line) for line in self.access_log()):
                await trio.sleep(0.05)
        return self.access_log()

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""


@attrs.define
class Cluster:
    """Hub nodes behind nginx, and what the tests need to talk to them."""

    nodes: list[Node]
    nginx: Nginx
    database: Path
    auth: AuthSettings = attrs.field(factory=lambda: AuthSettings(secret=SECRET))

    @property
    def url(self) -> str:
        """Where clients connect: nginx."""
        return self.nginx.url

    def node(self, node_id: str) -> Node:
        return next(node for node in self.nodes if node.id == node_id)

    def node_at(self, address: str) -> Node:
        return next(node for node in self.nodes if node.address == address)

    def token(self, user: str) -> str:
        return mint_token(user, self.auth, email=f"{user}@example.test", expires_in=3600)

    async def check_affinity(self, wanted: Callable[[LogLine], bool]) -> list[LogLine]:
        """Assert that nginx sent every request of a session to the node named by its sid,
        once a line of the log is ``wanted`` (see :meth:`Nginx.logged`).

        Returns:
            The access log's lines that carry a sid of a known node.
        """
        by_id = {node.id: node.address for node in self.nodes}

        def routed(line: LogLine) -> bool:
            prefix, dot, _ = line.sid.partition(".")
            return line.sid != "-" and bool(dot) and prefix in by_id

        lines = await self.nginx.logged(lambda line: routed(line) and wanted(line))
        for line in filter(routed, lines):
            assert line.node == by_id[line.sid.partition(".")[0]], f"{line} went to {line.node}"
        return [line for line in lines if routed(line)]

    def logs(self) -> str:
        """Every process's log, for failure messages."""
        parts = [f"--- node {node.id}:\n{node.log.read_text()[-2000:]}" for node in self.nodes]
        parts.append(f"--- nginx error.log:\n{self.nginx.error_log()[-2000:]}")
        return "\n".join(parts)


USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")


def seed_store(path: Path) -> None:
    """Every user of :data:`USERS`; alice owns project demo, shared with all the others."""
    store = SQLiteStore(path)
    for user in USERS:
        store.add_user(user, email=f"{user}@example.test")
    store.add_project("demo", owner="alice")
    for user in USERS[1:]:
        store.share_project("demo", user=user)
    store.close()


def hub_env(database: Path) -> dict[str, str]:
    """The parent's environment without the hub's variables, and the cluster's settings."""
    platform = {"JWT_ACCESS_SECRET", "WS_ALLOWED_ORIGINS", "NODE_ENV"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") and k not in platform}
    return {
        **clean,
        "HUB_DATABASE": str(database),
        "JWT_ACCESS_SECRET": SECRET,
        "HUB_EMIT_TOKEN": EMIT_TOKEN,
        "HUB_TRUSTED_PROXIES": "127.0.0.1",
    }


def _start_node(
    stack: ExitStack, directory: Path, node_id: str, env: dict[str, str], args: tuple[str, ...]
) -> Node:
    port = free_port()
    log = directory / f"{node_id}.log"
    output = stack.enter_context(log.open("wb"))
    command = ["serve", "--port", str(port), "--node-id", node_id, *args]
    process = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", *command],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    stack.callback(_stop, process)
    return Node(node_id, port, log, process)


def _wait_node(node: Node) -> None:
    deadline = time.monotonic() + START
    while _LISTENING.search(node.log.read_text()) is None:
        if node.process.poll() is not None or time.monotonic() > deadline:
            _stop(node.process)
            raise AssertionError(f"node {node.id} did not start:\n{node.log.read_text()[-3000:]}")
        time.sleep(0.05)


def start_nginx(
    stack: ExitStack, directory: Path, nodes: list[Node], env: dict[str, str], *extra: str
) -> Nginx:
    """Render the configuration with ``hub nginx-config`` and run nginx with it."""
    binary = nginx_binary()
    port = free_port()
    prefix = directory / "nginx"
    prefix.mkdir()
    config = directory / "hub.conf"
    nodes_arg = ",".join(f"{node.id}={node.address}" for node in nodes)
    subprocess.run(
        [sys.executable, "-m", "hub.cli", "nginx-config", "--nodes", nodes_arg,
         "--listen", f"127.0.0.1:{port}", "-o", str(config), *extra],
        env=env, cwd=ROOT, check=True, timeout=30,
    )  # fmt: skip
    log = prefix / "startup.log"
    output = stack.enter_context(log.open("wb"))
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(config), "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    stack.callback(_stop, process)
    _wait_port(port, process, log)
    return Nginx(port, prefix, config, process)


@contextmanager
def start_cluster(
    directory: Path, node_ids: tuple[str, ...] = ("n1", "n2"), node_args: tuple[str, ...] = ()
) -> Iterator[Cluster]:
    """Hub nodes ``node_ids`` and nginx in front of them, all stopped when the block ends.

    ``node_args`` go to every ``hub serve`` (e.g. ``("--redis", url)`` for a shared cluster).
    """
    nginx_binary()  # before anything starts
    database = directory / "hub.sqlite3"
    seed_store(database)
    env = hub_env(database)
    with ExitStack() as stack:
        nodes = [_start_node(stack, directory, node_id, env, node_args) for node_id in node_ids]
        for node in nodes:
            _wait_node(node)
        nginx = start_nginx(stack, directory, nodes, env)
        yield Cluster(nodes, nginx, database)
