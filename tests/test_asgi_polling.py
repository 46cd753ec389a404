"""Long-polling when the hub runs as an ASGI app under hypercorn, read on the wire.

A polling client keeps two requests in flight on two connections: a GET that waits for what
the server has to say, and a POST with what it says. The client's close arrives on the POST
while the GET waits, and the client's next step often depends on the POST's answer: these tests
hold the hub under hypercorn to what engine.io (and the hub's own listener) does there.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, cast

import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio
import trio.testing
from interop.harness import SERVER_MODES, serve, set_server_mode
from support.wire import WAIT, Poller, error_body

import hub
from hub.transport.asgi import Message, Receive, Scope, Send

QUIET = hub.ServerOptions(ping_interval=10, ping_timeout=5, connect_timeout=5)
"""No heartbeat during a test: a ping would end a waiting GET."""

ASGIApp = Any  # what hypercorn.trio.serve takes: any ASGI 3 callable


async def serve_asgi(nursery: trio.Nursery, app: ASGIApp) -> str:
    """Run ``app`` in hypercorn's trio worker on a free loopback port; returns its base URL."""
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds: list[str] = await nursery.start(functools.partial(hypercorn.trio.serve, app, config))
    return binds[0]


def answers_noted(app: ASGIApp, notes: list[str]) -> ASGIApp:
    """``app`` as it is, noting ``"<METHOD> answered"`` when it hands a response to the server."""

    async def noted(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                notes.append(f"{scope['method']} answered")
            await send(message)

        await app(scope, receive, send_noted if scope["type"] == "http" else send)

    return noted


async def open_socket(poller: Poller, connected: list[hub.Socket]) -> hub.Socket:
    """Open an Engine.IO session and CONNECT to ``/``; the server's socket for it."""
    await poller.handshake()
    assert (await poller.post("40")).text == "ok"
    assert (await poller.get()).text.startswith('40{"sid":')
    (socket,) = connected
    return socket


def recording_server() -> tuple[hub.Server, list[hub.Socket], list[str]]:
    """A server that keeps its sockets and their disconnect reasons."""
    server = hub.Server(QUIET)
    connected: list[hub.Socket] = []
    reasons: list[str] = []

    @server.on("connect")
    def connect(socket: hub.Socket, auth: dict[str, Any]) -> None:
        connected.append(socket)

    @server.on("disconnect")
    def disconnect(socket: hub.Socket, reason: str) -> None:
        reasons.append(reason)

    return server, connected, reasons


@pytest.fixture(params=SERVER_MODES)
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """The native listener, then ASGI under hypercorn (for :func:`serve`)."""
    set_server_mode(request.param)
    yield request.param
    set_server_mode("native")


async def test_waiting_get_is_answered_when_the_client_closes(
    nursery: trio.Nursery, mode: str
) -> None:
    # python-socketio's disconnect() over polling: DISCONNECT and close in one POST, while its
    # GET waits; it returns when that GET is answered.
    server, connected, reasons = recording_server()
    url = await serve(nursery, server)
    async with httpx.AsyncClient(base_url=url) as http:
        poller = Poller(http, "/socket.io/")
        await open_socket(poller, connected)
        answers: list[str] = []

        async def long_poll() -> None:
            answers.append((await poller.get()).text)

        nursery.start_soon(long_poll)
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []  # the GET waits in the server

        assert (await poller.post("41\x1e1")).text == "ok"
        with trio.fail_after(1):
            while not answers:
                await trio.sleep(0.01)
        # The client's own close ends the waiting GET with a noop, as engine.io does.
        assert answers == ["6"]
        assert reasons == ["client namespace disconnect"]
        assert error_body(await poller.get())["code"] == 1  # the session is gone


async def test_post_is_answered_before_the_application_acts_on_it(
    nursery: trio.Nursery,
) -> None:
    # The server asks, the client's acknowledgement comes in a POST, and the application,
    # woken by it, goes on. Over a real network its next step can reach the client before a
    # POST answer that waits behind it, and python-engineio then loses what it sends next (its
    # write loop ends if disconnect() is called while a POST is in flight). The POST's answer
    # is handed to the ASGI server before any task woken by its packets runs.
    server, connected, _ = recording_server()
    notes: list[str] = []
    url = await serve_asgi(nursery, answers_noted(server.asgi(), notes))
    async with httpx.AsyncClient(base_url=url) as http:
        poller = Poller(http, "/socket.io/")
        socket = await open_socket(poller, connected)
        answered = trio.Event()

        async def ask() -> None:
            result = await socket.call("question", 7, timeout=WAIT)
            notes.append(f"call returned {result!r}")
            answered.set()

        nursery.start_soon(ask)
        assert (await poller.get()).text == '420["question",7]'
        notes.clear()
        assert (await poller.post('430["answer"]')).text == "ok"
        with trio.fail_after(WAIT):
            await answered.wait()
        assert notes == ["POST answered", "call returned ('answer',)"]


async def test_posts_are_answered_in_order_on_one_connection(nursery: trio.Nursery) -> None:
    # Answered without a task of their own, POSTs on a kept-alive connection still get their
    # answers in order, and a refusal does not end the connection.
    server, connected, reasons = recording_server()
    url = await serve_asgi(nursery, cast(Any, server.asgi()))
    async with httpx.AsyncClient(
        base_url=url, limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)
    ) as http:
        poller = Poller(http, "/socket.io/")
        await open_socket(poller, connected)
        seen: list[int] = []

        @server.on("n")
        def n(socket: hub.Socket, value: int) -> None:
            seen.append(value)

        for value in range(20):
            assert (await poller.post(f'42["n",{value}]')).text == "ok"
        assert seen == list(range(20))
        response = await http.post(poller.url(sid="unknown"), content="40")
        assert error_body(response)["code"] == 1
        assert (await poller.post('42["n",20]')).text == "ok"
        assert seen[-1] == 20
        assert reasons == []  # the session goes on
