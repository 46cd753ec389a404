"""Connection state recovery across the cluster, with a real redis-server and the official client.

A client of one node whose connection drops comes back to another node (or after its node was
shut down) with the same socket id, its rooms and every event it missed, in order, each once:
the session and the replayable packets are kept in Redis too (``hub.cluster.sessions``). A
logout made while it was away holds on every node, and a session is restored once only.

Clients reach the nodes through :class:`Switch`, a TCP forwarder standing for the load
balancer: the test says which node the next connection goes to, or refuses connections for a
while (the client keeps trying, as it would while its node is gone).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from interop.harness import CONNECT_TIMEOUT, ClientProcess, node_client, node_command
from support.redis_server import RedisServer, free_port, redis_server
from support.sio import RawSio

import hub
from hub.app.auth import AuthSettings, mint_token
from hub.app.config import DEV_EMIT_TOKEN, DEV_JWT_SECRET
from hub.cluster import RedisCluster
from hub.cluster.sessions import RedisSessions
from hub.engineio.outgoing import Outgoing
from hub.server.recovery import Stored

ROOT = Path(__file__).resolve().parents[1]
HUB = [sys.executable, "-m", "hub.cli"]
START = 20.0
"""The longest a ``hub serve`` may take to listen, or to exit after SIGTERM."""

FAST_RECONNECT: dict[str, Any] = {"reconnectionDelay": 100, "reconnectionDelayMax": 200}
WEBSOCKET: dict[str, Any] = {"transports": ["websocket"], **FAST_RECONNECT}


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture(autouse=True)
def _require_client() -> None:
    node_command()


# -- the load balancer -----------------------------------------------------------------------


class Switch:
    """A TCP forwarder on a free loopback port: each new connection goes to the node on port
    ``target``, or is closed at once while ``target`` is None."""

    def __init__(self) -> None:
        self.target: int | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._forward, listeners)

    async def _forward(self, client: trio.SocketStream) -> None:
        target = self.target
        try:
            if target is None:
                return
            upstream = await trio.open_tcp_stream("127.0.0.1", target)
        except OSError:
            return
        finally:
            if target is None:
                await client.aclose()
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, upstream, nursery.cancel_scope)
            nursery.start_soon(self._pipe, upstream, client, nursery.cancel_scope)

    @staticmethod
    async def _pipe(
        source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            scope.cancel()


async def start_switch(nursery: trio.Nursery, target: int | None) -> Switch:
    switch = Switch()
    await nursery.start(switch.serve)
    switch.target = target
    return switch


# -- in-process nodes ------------------------------------------------------------------------


class Node:
    """A :class:`hub.Server` of the cluster with recovery shared through Redis."""

    def __init__(self, server: hub.Server, sessions: RedisSessions, port: int) -> None:
        self.server = server
        self.sessions = sessions
        self.port = port

    @property
    def recovery(self) -> hub.server.recovery.Recovery:
        recovery = self.server.main.adapter.recovery
        assert recovery is not None
        return recovery

    async def gone(self, sid: str) -> None:
        """Wait until the socket left, and its session is written to Redis."""
        with trio.fail_after(CONNECT_TIMEOUT):
            while sid in self.server.main.sockets:
                await trio.sleep(0.01)
        assert await self.sessions.flush(CONNECT_TIMEOUT)


async def start_node(nursery: trio.Nursery, redis_url: str) -> Node:
    sessions = RedisSessions(redis_url)
    server = hub.Server(
        recovery=hub.RecoveryOptions(max_disconnection_duration=60, shared=sessions),
        cluster=RedisCluster(redis_url),
    )

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        if not socket.recovered:
            socket.join("news")

    @server.on("join")
    def join(socket: hub.Socket, room: str) -> str:
        socket.join(room)
        return "joined"

    await nursery.start(sessions.run)
    _, port = await nursery.start(server.serve, "127.0.0.1", 0)
    assert server.cluster is not None
    assert await server.cluster.wait_connected(CONNECT_TIMEOUT)
    return Node(server, sessions, port)


def notes(client: ClientProcess) -> list[Any]:
    return [record["args"][0] for record in client.events("note")]


async def wait_notes(client: ClientProcess, count: int) -> None:
    with trio.fail_after(CONNECT_TIMEOUT):
        while len(notes(client)) < count:
            await client._changed.wait()


async def stored(node: Node, count: int) -> None:
    """Wait until the node has stored ``count`` replayable packets (some come through Redis),
    and they are written to Redis."""
    with trio.fail_after(CONNECT_TIMEOUT):
        while node.recovery.sequence < count:
            await trio.sleep(0.01)
    assert await node.sessions.flush(CONNECT_TIMEOUT)


async def test_a_client_dropped_from_one_node_is_recovered_by_another(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a = await start_node(nursery, redis.url)
    b = await start_node(nursery, redis.url)
    switch = await start_switch(nursery, a.port)
    async with node_client(nursery, switch.url, **WEBSOCKET) as client:
        first = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        await client.send(op="emitWithAck", event="join", args=["sports"], tag=1)
        assert (await client.expect("ack", tag=1))["args"] == ["joined"]
        a.server.to("news").emit("note", 1)
        await wait_notes(client, 1)

        switch.target = None  # its next connection waits until we say where it goes
        await client.send(op="drop")
        await a.gone(first["id"])
        # In the order its node had them (what comes through Redis is awaited, so that the
        # order is known).
        before = a.recovery.sequence
        a.server.to("news").emit("note", 2)  # from its node
        b.server.to(["news", "sports"]).emit("note", 3)  # from the other node, through Redis
        await stored(a, before + 2)
        a.server.to("weather").emit("note", "not its room")
        b.server.emit("note", 4)  # to everyone
        await stored(a, before + 4)
        a.server.to("sports").emit("note", 5)
        await stored(a, before + 5)

        switch.target = b.port
        second = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        await wait_notes(client, 5)
        b.server.to("sports").emit("note", 6)  # live, on its new node
        await wait_notes(client, 6)
        await trio.sleep(0.3)  # nothing else comes (no event twice)
        socket = b.server.main.sockets[first["id"]]
        assert {"news", "sports"} <= socket.rooms
        # Taken from Redis: it cannot be restored a second time.
        assert await b.sessions.take("/", socket.pid or "", 60) == (None, True)
    assert second["recovered"] is True, client.report()
    assert second["id"] == first["id"]
    assert notes(client) == [1, 2, 3, 4, 5, 6]


async def test_a_broadcast_to_its_one_room_from_another_node_is_replayed(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a = await start_node(nursery, redis.url)
    b = await start_node(nursery, redis.url)
    switch = await start_switch(nursery, a.port)
    async with node_client(nursery, switch.url, **WEBSOCKET) as client:
        first = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        a.server.to("news").emit("note", 1)
        await wait_notes(client, 1)
        switch.target = None
        await client.send(op="drop")
        await a.gone(first["id"])
        b.server.to("news").emit("note", 2)  # its only room, from the other node
        await trio.sleep(0.5)  # through Redis to its node
        await a.sessions.flush(CONNECT_TIMEOUT)
        switch.target = b.port
        second = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        b.server.to("news").emit("note", 3)
        with trio.fail_after(CONNECT_TIMEOUT):
            while 3 not in notes(client):
                await client._changed.wait()
    assert second["recovered"] is True
    assert notes(client) == [1, 2, 3]


async def test_a_session_is_restored_once_when_two_nodes_are_asked(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a = await start_node(nursery, redis.url)
    b = await start_node(nursery, redis.url)
    client = await RawSio.open(nursery, f"127.0.0.1:{a.port}")
    await client.send("40")
    session = json.loads((await client.receive_text())[2:])
    a.server.to("news").emit("note", 1)
    event = json.loads((await client.receive_text())[2:])
    assert event[:2] == ["note", 1]
    await client.aclose()
    await a.gone(session["sid"])
    a.server.to("news").emit("note", 2)
    await stored(a, 2)

    auth = "40" + json.dumps({"pid": session["pid"], "offset": event[-1]})
    answers: dict[str, dict[str, Any]] = {}
    missed: dict[str, list[Any]] = {}

    async def ask(name: str, node: Node) -> None:
        again = await RawSio.open(nursery, f"127.0.0.1:{node.port}")
        await again.send(auth)
        answers[name] = json.loads((await again.receive_text())[2:])
        if answers[name]["sid"] == session["sid"]:
            missed[name] = json.loads((await again.receive_text())[2:])
        await again.nothing_for(0.3)
        await again.aclose()

    async with trio.open_nursery() as both:  # at once, on its own node and on the other
        both.start_soon(ask, "a", a)
        both.start_soon(ask, "b", b)
    recovered = [name for name, answer in answers.items() if answer["sid"] == session["sid"]]
    assert len(recovered) == 1, answers
    assert missed[recovered[0]][:2] == ["note", 2]


async def test_data_that_json_cannot_hold_recovers_on_its_own_node_only(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a = await start_node(nursery, redis.url)
    b = await start_node(nursery, redis.url)

    @a.server.on("keep")
    def keep(socket: hub.Socket) -> str:
        socket.data["tags"] = {"a set"}  # not JSON
        return "kept"

    switch = await start_switch(nursery, a.port)
    async with node_client(nursery, switch.url, **WEBSOCKET) as client:
        first = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        await client.send(op="emitWithAck", event="keep", tag=1)
        assert (await client.expect("ack", tag=1))["args"] == ["kept"]
        switch.target = None
        await client.send(op="drop")
        await a.gone(first["id"])
        a.server.to("news").emit("note", 1)
        switch.target = a.port  # its own node has it in memory
        second = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        await wait_notes(client, 1)
        assert second["recovered"] is True
        assert second["id"] == first["id"]
        assert a.server.main.sockets[first["id"]].data["tags"] == {"a set"}

        switch.target = None
        await client.send(op="drop")
        await a.gone(first["id"])
        switch.target = b.port  # the other node never heard of it
        third = await client.expect("connect", timeout=CONNECT_TIMEOUT)
    assert third["recovered"] is False
    assert third["id"] != first["id"]


async def test_without_redis_a_client_is_recovered_by_its_own_node(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a = await start_node(nursery, redis.url)
    switch = await start_switch(nursery, a.port)
    async with node_client(nursery, switch.url, **WEBSOCKET) as client:
        first = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        a.server.to("news").emit("note", 1)
        await wait_notes(client, 1)
        await a.sessions.flush(CONNECT_TIMEOUT)
        redis.pause()  # Redis holds its connections and answers nothing
        try:
            await client.send(op="drop")
            with trio.fail_after(CONNECT_TIMEOUT):
                while first["id"] in a.server.main.sockets:
                    await trio.sleep(0.01)
            a.server.to("news").emit("note", 2)
            started = trio.current_time()
            second = await client.expect("connect", timeout=CONNECT_TIMEOUT)
            took = trio.current_time() - started
            await wait_notes(client, 2)
        finally:
            redis.resume()
    assert second["recovered"] is True
    assert second["id"] == first["id"]
    assert notes(client) == [1, 2]
    assert took < a.sessions.request_timeout + 2  # a bounded wait, then memory decides


# -- hub serve nodes -------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The parent's environment without the hub's variables; a store with users ann and bob,
    and project demo of ann's shared with bob."""
    platform = {"JWT_ACCESS_SECRET", "WS_ALLOWED_ORIGINS", "NODE_ENV"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUB_") and k not in platform}
    env = {**clean, "HUB_DATABASE": str(tmp_path / "hub.sqlite3"), "HUB_RECOVERY_SECONDS": "60"}
    for command in (
        ["users", "add", "ann", "--email", "ann@example.com"],
        ["users", "add", "bob", "--email", "bob@example.com"],
        ["projects", "add", "demo", "--owner", "ann"],
        ["projects", "share", "demo", "--user", "bob"],
    ):
        subprocess.run(
            [*HUB, *command], env=env, cwd=ROOT, check=True, capture_output=True, timeout=30
        )
    return env


class Serve:
    """A running ``hub serve`` process."""

    def __init__(self, process: trio.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    async def post(self, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(timeout=START) as http:
            response = await http.post(
                f"http://127.0.0.1:{self.port}/internal/{path}",
                headers={"Authorization": f"Bearer {DEV_EMIT_TOKEN}"},
                json=body,
            )
        assert response.status_code == 200, response.text
        return response.json()

    async def emit(self, data: Any, room: str = "user:ann") -> int:
        answer = await self.post("emit", {"event": "note", "to": [room], "data": data})
        delivered: int = answer["delivered"]
        return delivered

    async def logout(self, user: str) -> None:
        await self.post(f"users/{user}/disconnect")

    async def terminate(self) -> None:
        """SIGTERM, and wait until it exited."""
        self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(START):
            code = await self.process.wait()
        assert code == 0, self.log.read_text()[-3000:]


@asynccontextmanager
async def hub_serve(
    env: dict[str, str], redis: RedisServer, node_id: str, tmp_path: Path, run: int = 1
) -> AsyncIterator[Serve]:
    port = free_port()
    log = tmp_path / f"{node_id}-{run}.log"
    with log.open("wb") as output:
        process = await trio.lowlevel.open_process(
            [*HUB, "serve", "--port", str(port), "--node-id", node_id, "--redis", redis.url],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        with trio.fail_after(START):
            while "internal API on http://" not in log.read_text():
                assert process.poll() is None, log.read_text()[-3000:]
                await trio.sleep(0.05)
        yield Serve(process, port, log)
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(START):
                await process.wait()


def token(user: str = "ann") -> str:
    return mint_token(user, AuthSettings(secret=DEV_JWT_SECRET), expires_in=3600)


@pytest.mark.parametrize("back_to", ["the other node", "its node started again"])
async def test_a_client_of_a_node_shut_down_is_recovered_with_what_was_emitted_meanwhile(
    nursery: trio.Nursery, redis: RedisServer, env: dict[str, str], tmp_path: Path, back_to: str
) -> None:
    async with (
        hub_serve(env, redis, "a", tmp_path) as a,
        hub_serve(env, redis, "b", tmp_path) as b,
    ):
        switch = await start_switch(nursery, a.port)
        options = {**WEBSOCKET, "auth": {"token": token()}}
        async with node_client(nursery, switch.url, **options) as client:
            first = await client.expect("connect", timeout=CONNECT_TIMEOUT)
            assert await a.emit({"n": 1}) == 1
            await wait_notes(client, 1)
            switch.target = None
            await a.terminate()  # SIGTERM: its clients are let go, their sessions kept
            await client.expect("disconnect")
            assert await b.emit({"n": 2}) == 0  # while it is away
            assert await b.emit({"n": 3}) == 0
            async with AsyncExitStack() as stack:
                if back_to == "the other node":
                    switch.target = b.port
                else:  # after the emits: only the other node has them
                    again = await stack.enter_async_context(
                        hub_serve(env, redis, "a", tmp_path, run=2)
                    )
                    switch.target = again.port
                second = await client.expect("connect", timeout=CONNECT_TIMEOUT)
                await wait_notes(client, 3)
                assert await b.emit({"n": 4}) == 1
                await wait_notes(client, 4)
                await trio.sleep(0.3)
    assert second["recovered"] is True, client.report()
    assert second["id"] == first["id"]
    assert notes(client) == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]


async def test_a_logout_while_away_holds_on_every_node(
    nursery: trio.Nursery, redis: RedisServer, env: dict[str, str], tmp_path: Path
) -> None:
    async with (
        hub_serve(env, redis, "a", tmp_path) as a,
        hub_serve(env, redis, "b", tmp_path) as b,
    ):
        options = {**WEBSOCKET, "auth": {"token": token()}}
        # Two tabs on node A: one comes back to A (which has it in memory), one to B.
        switches = [await start_switch(nursery, a.port) for _ in range(2)]
        async with (
            node_client(nursery, switches[0].url, **options) as home,
            node_client(nursery, switches[1].url, **options) as away,
        ):
            firsts = [await tab.expect("connect", timeout=CONNECT_TIMEOUT) for tab in (home, away)]
            assert await a.emit({"n": 1}) == 2
            for tab, switch in zip((home, away), switches, strict=True):
                await wait_notes(tab, 1)
                switch.target = None
                await tab.send(op="drop")
                await tab.expect("disconnect")
            await trio.sleep(0.5)  # their sessions are written to Redis
            await a.emit({"n": "while away"})
            await b.logout("ann")  # through the other node
            switches[0].target = a.port
            switches[1].target = b.port
            back = [await tab.expect("connect", timeout=CONNECT_TIMEOUT) for tab in (home, away)]
            await trio.sleep(0.3)
    for first, second in zip(firsts, back, strict=True):
        assert second["recovered"] is False
        assert second["id"] != first["id"]
    for tab in (home, away):
        assert notes(tab) == [{"n": 1}]


async def test_a_revocation_while_away_holds_when_its_node_recovers_it(
    nursery: trio.Nursery, redis: RedisServer, env: dict[str, str], tmp_path: Path
) -> None:
    async with (
        hub_serve(env, redis, "a", tmp_path) as a,
        hub_serve(env, redis, "b", tmp_path) as b,
    ):
        switch = await start_switch(nursery, a.port)
        options = {**WEBSOCKET, "auth": {"token": token("bob")}}
        async with node_client(nursery, switch.url, **options) as tab:
            first = await tab.expect("connect", timeout=CONNECT_TIMEOUT)
            await tab.send(
                op="emitWithAck", event="join-project", args=[{"projectId": "demo"}], tag=1
            )
            assert (await tab.expect("ack", tag=1))["args"] == [{"ok": True}]
            assert await a.emit({"n": 1}, "project:demo") == 1
            await wait_notes(tab, 1)
            switch.target = None
            await tab.send(op="drop")
            await tab.expect("disconnect")
            await trio.sleep(0.5)  # its session is written to Redis
            await b.post("access/revoke", {"userId": "bob", "projectId": "demo"})  # elsewhere
            await a.emit({"n": "revoked"}, "project:demo")
            await b.emit({"n": 2}, "user:bob")
            switch.target = a.port  # its own node, which has the session (and the room) in memory
            second = await tab.expect("connect", timeout=CONNECT_TIMEOUT)
            await wait_notes(tab, 2)
            await a.emit({"n": "revoked too"}, "project:demo")
            assert await a.emit({"n": 3}, "user:bob") == 1
            await wait_notes(tab, 3)
    assert second["recovered"] is True, tab.report()
    assert second["id"] == first["id"]
    assert notes(tab) == [{"n": 1}, {"n": 2}, {"n": 3}]


async def test_after_redis_lost_its_data_a_client_is_recovered_by_its_own_node(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    a = await start_node(nursery, redis.url)
    switch = await start_switch(nursery, a.port)
    async with node_client(nursery, switch.url, **WEBSOCKET) as client:
        first = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        a.server.to("news").emit("note", 1)
        await wait_notes(client, 1)
        switch.target = None
        await client.send(op="drop")
        await a.gone(first["id"])  # written to Redis
        redis.kill()
        redis.start()  # empty
        a.server.to("news").emit("note", 2)
        switch.target = a.port
        second = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        await wait_notes(client, 2)
    assert second["recovered"] is True
    assert second["id"] == first["id"]
    assert notes(client) == [1, 2]


def _packet(n: int) -> Stored:
    return Stored(frozenset({"news"}), frozenset(), [Outgoing.message_of(f'2["note",{n}]')], 0, n)


async def test_a_stream_with_a_hole_is_not_replayed_around_it(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    sessions = RedisSessions(redis.url, request_timeout=0.5, max_reconnect_delay=0.2)
    await nursery.start(sessions.run)
    for sequence in (0, 1):
        sessions.append("run1", sequence, 0, _packet(sequence), 60)
    assert await sessions.flush(CONNECT_TIMEOUT)
    redis.pause()
    try:
        sessions.append("run1", 2, 0, _packet(2), 60)  # Redis does not answer: not written
        await sessions.flush(CONNECT_TIMEOUT)
        assert not sessions.available
    finally:
        redis.resume()
    with trio.fail_after(CONNECT_TIMEOUT):
        while not sessions.available:
            await trio.sleep(0.05)
    sessions.append("run1", 3, 0, _packet(3), 60)
    assert await sessions.flush(CONNECT_TIMEOUT)
    assert await sessions.read("run1", 1, 4, 100) is None  # 2 is missing: no replay past it
    read = await sessions.read("run1", 3, 4, 100)
    assert read is not None
    assert [stored.messages[0].packet.data for stored in read.packets] == ['2["note",3]']
    assert read.ended is None


async def test_packets_written_together_are_read_from_any_offset(
    nursery: trio.Nursery, redis: RedisServer
) -> None:
    sessions = RedisSessions(redis.url)
    await nursery.start(sessions.run)
    for sequence in range(5):  # one write: one entry
        sessions.append("run2", sequence, 0, _packet(sequence), 60)
    assert await sessions.flush(CONNECT_TIMEOUT)
    sessions.append("run2", 5, 3, _packet(5), 60)  # the node keeps 3 and later now
    assert await sessions.flush(CONNECT_TIMEOUT)
    assert redis.command("XLEN", "hub:recovery:stream:run2").strip() == b"2"
    for after in (3, 4, 6):
        read = await sessions.read("run2", after, 6, 100)
        assert read is not None
        texts = [stored.messages[0].packet.data for stored in read.packets]
        assert texts == [f'2["note",{n}]' for n in range(after, 6)]
    assert await sessions.read("run2", 2, 6, 100) is not None  # in the kept entry still
    assert await sessions.read("run2", 3, 6, 2) is None  # more than the reader keeps
    assert await sessions.read("run2", 7, 6, 100) is None  # past what the session could see
