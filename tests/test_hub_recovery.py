"""The hub with connection state recovery (on by default), with the official client.

A tab whose connection blinks gets back its socket, its rooms and every event it missed,
including events pushed through the emit endpoint while it was away; what was revoked or logged
out meanwhile stays revoked; a recovered socket shows its token again like a new one.
"""

from __future__ import annotations

import json
from typing import Any

import trio
import trio_websocket
from interop.harness import CONNECT_TIMEOUT, ClientProcess
from test_hub_clients import (  # the hub, its store and clients, shared with the client tests
    FAST_RECONNECT,
    Running,
    hub_client,
    start_hub,
    store,
)

from hub.app.store import SQLiteStore

__all__ = ["store"]  # the fixture, used by name

RECOVERING: dict[str, Any] = {"recovery_seconds": 60}


async def _away(running: Running, client: ClientProcess, user: str) -> None:
    """Drop the client's connection and wait until the hub has let its socket go."""
    await client.send(op="drop")
    with trio.fail_after(CONNECT_TIMEOUT):
        while running.hub.connections.get(user):
            await trio.sleep(0.01)


async def _back(client: ClientProcess) -> dict[str, Any]:
    """The next connect of a client whose first one was taken already."""
    return await client.expect("connect", timeout=CONNECT_TIMEOUT)


def _firsts(client: ClientProcess, name: str) -> list[Any]:
    return [record["args"][0] for record in client.events(name)]


async def _joined(client: ClientProcess) -> None:
    await client.send(op="emitWithAck", event="join-project", args=[{"projectId": "demo"}], tag=1)
    ack = await client.expect("ack", tag=1)
    assert ack["args"] == [{"ok": True}], client.report()


async def test_events_pushed_while_away_arrive_after_the_blink(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await start_hub(nursery, store, **RECOVERING)
    async with hub_client(
        nursery,
        running.url,
        name="alice",
        transports=["websocket"],
        auth={"token": running.token("alice")},
        **FAST_RECONNECT,
    ) as client:
        first = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        await _joined(client)
        async with running.emitter() as emitter:
            await emitter.emit("note", {"n": 1}, to=["user:alice"])
            await client.expect("event", name="note")
            await _away(running, client, "alice")
            assert await emitter.emit("note", {"n": 2}, to=["user:alice"]) == 0
            await emitter.emit("note", {"n": 3}, to=["project:demo"])
            await emitter.emit("note", {"n": "not hers"}, to=["project:garden"])
            second = await _back(client)
            await emitter.emit("note", {"n": 4}, to=["user:alice"])
            while len(client.events("note")) < 4:
                await client.expect("event", name="note")
        assert second["id"] == first["id"]
        assert second["recovered"] is True
        assert _firsts(client, "note") == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
        assert set(running.hub.connections["alice"]) == {first["id"]}


async def test_what_was_revoked_or_logged_out_meanwhile_stays_so(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await start_hub(nursery, store, **RECOVERING)
    common = {"transports": ["websocket"], **FAST_RECONNECT}
    async with (
        hub_client(
            nursery, running.url, name="bob", auth={"token": running.token("bob")}, **common
        ) as bob,
        hub_client(
            nursery, running.url, name="alice", auth={"token": running.token("alice")}, **common
        ) as alice,
    ):
        for client in (bob, alice):
            await client.expect("connect", timeout=CONNECT_TIMEOUT)
            await _joined(client)
        async with running.emitter() as emitter:
            await emitter.emit("note", {"n": 0}, to=["project:demo"])
            await bob.expect("event", name="note")
            await alice.expect("event", name="note")
            await _away(running, bob, "bob")
            await _away(running, alice, "alice")
            await emitter.emit("note", {"n": 1}, to=["project:demo"])
            await emitter.revoke_project("bob", "demo")
            await emitter.emit("note", {"n": 2}, to=["project:demo"])
            await emitter.disconnect_user("alice")
            back = await _back(bob)
            alice_back = await _back(alice)
            await emitter.emit("note", {"n": 3}, to=["project:demo"])
            await emitter.emit("note", {"n": "bob"}, to=["user:bob"])
            await emitter.emit("note", {"n": "alice"}, to=["user:alice"])
            while not any(e["args"][0] == {"n": "bob"} for e in bob.events("note")):
                await bob.expect("event", name="note")
            while not any(e["args"][0] == {"n": "alice"} for e in alice.events("note")):
                await alice.expect("event", name="note")
    # bob: back, without the project's events: access revoked while he was away means none of
    # them is replayed (not even those sent before the revocation).
    assert back["recovered"] is True
    assert _firsts(bob, "note") == [{"n": 0}, {"n": "bob"}]
    # alice was logged out while away: a new socket (in her user room only), nothing replayed.
    assert alice_back["recovered"] is False
    assert _firsts(alice, "note") == [{"n": 0}, {"n": "alice"}]


async def test_a_session_shown_with_another_users_token_starts_afresh(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await start_hub(nursery, store, **RECOVERING)
    path = "/socket.io/?EIO=4&transport=websocket"
    host, port = running.url.removeprefix("http://").split(":")
    async with trio.open_nursery() as clients:
        ws = await trio_websocket.connect_websocket(clients, host, int(port), path, use_ssl=False)
        await ws.get_message()
        await ws.send_message("40" + json.dumps({"token": running.token("alice")}))
        alices = json.loads(str(await ws.get_message())[2:])
        running.hub.emit_to_user("alice", "note", {"n": 1})
        event = json.loads(str(await ws.get_message())[2:])
        await ws.aclose()
        with trio.fail_after(CONNECT_TIMEOUT):
            while running.hub.connections.get("alice"):
                await trio.sleep(0.01)
        running.hub.emit_to_user("alice", "note", {"n": "private"})

        ws = await trio_websocket.connect_websocket(clients, host, int(port), path, use_ssl=False)
        await ws.get_message()
        stolen = {"token": running.token("bob"), "pid": alices["pid"], "offset": event[-1]}
        await ws.send_message("40" + json.dumps(stolen))
        bobs = json.loads(str(await ws.get_message())[2:])
        running.hub.emit_to_user("bob", "note", {"n": "for bob"})
        after = json.loads(str(await ws.get_message())[2:])
        assert set(running.hub.connections) == {"bob"}
        await ws.aclose()
        clients.cancel_scope.cancel()
    assert bobs["sid"] != alices["sid"]
    assert after[:2] == ["note", {"n": "for bob"}]  # not alice's missed event
