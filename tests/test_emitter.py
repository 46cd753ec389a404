"""hub.emitter: the client of the internal API, against a real hub on loopback, with raw
Socket.IO tabs (trio-websocket frames) reading what each call makes the hub send."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from support.hubs import RunningHub, hub_settings
from support.sio import Tab
from support.wire import WAIT

from hub.app.auth import AuthSettings, mint_token
from hub.app.hub import HubAddresses
from hub.app.store import SQLiteStore
from hub.emitter import Emit, EmitError, Emitter

SECRET = "emitter-test-secret-0123456789abcdef0123"
EMIT_TOKEN = "emitter-test-emit-token"
SETTINGS = AuthSettings(secret=SECRET)
# A user id that needs percent-encoding in a path: a slash, and a '%' that looks like an escape.
ODD_USER = "team/a%41"

NOTIFICATION: dict[str, Any] = {
    "id": "n1",
    "type": "success",
    "title": "Done",
    "message": "segmentation finished",
    "createdAt": "2026-01-01T00:00:00Z",
}


@attrs.frozen
class Running:
    addresses: HubAddresses
    emitter: Emitter
    nursery: trio.Nursery

    async def tab(self, user: str) -> Tab:
        host, port = self.addresses.public
        return await Tab.open(self.nursery, f"{host}:{port}", mint_token(user, SETTINGS))

    async def quiet(self, *tabs: Tab) -> None:
        """Assert that nothing reached ``tabs`` since their last read (by order: a sentinel
        sent to the tab's own room must be the next frame)."""
        for tab in tabs:
            with trio.fail_after(WAIT):
                assert await self.emitter.emit("sentinel", tab.sid, to=[tab.sid]) == 1
            assert await tab.event() == ("sentinel", tab.sid)


async def start_hub(nursery: trio.Nursery, tmp_path: Path) -> HubAddresses:
    store = SQLiteStore(tmp_path / "db")
    for user in ("alice", "bob", ODD_USER):
        store.add_user(user)
    store.add_project("p1", owner="alice")
    running = await RunningHub.start(nursery, store, hub_settings(SECRET, EMIT_TOKEN))
    return running.addresses


def plain_client() -> httpx.AsyncClient:
    """Plain HTTP on loopback: no CA bundle to load."""
    return httpx.AsyncClient(verify=False, timeout=WAIT)


@pytest.fixture
async def hub(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    addresses = await start_hub(nursery, tmp_path)
    async with plain_client() as http:
        emitter = Emitter(addresses.internal_url, token=EMIT_TOKEN, client=http)
        yield Running(addresses, emitter, nursery)


async def test_emit_answers_how_many_sockets_it_reached(hub: Running) -> None:
    alice1, alice2, bob = await hub.tab("alice"), await hub.tab("alice"), await hub.tab("bob")
    with trio.fail_after(WAIT):
        assert await hub.emitter.emit("notification", NOTIFICATION, to=["user:alice"]) == 2
        assert await hub.emitter.emit("x", 1, to=iter(["user:alice", "user:bob"])) == 3
        assert await hub.emitter.emit("x", 2, to=["user:alice"], except_=[alice1.sid]) == 1
        assert await hub.emitter.emit("x", 3, to=["nobody-here"]) == 0
    assert [await alice1.event(), await alice1.event()] == [
        ("notification", NOTIFICATION),
        ("x", 1),
    ]
    assert [await alice2.event(), await alice2.event(), await alice2.event()] == [
        ("notification", NOTIFICATION),
        ("x", 1),
        ("x", 2),
    ]
    assert await bob.event() == ("x", 1)
    await hub.quiet(alice1, alice2, bob)


async def test_emit_many_answers_per_emit(hub: Running) -> None:
    alice, bob = await hub.tab("alice"), await hub.tab("bob")
    emits = [
        Emit("notification", NOTIFICATION, ["user:alice"]),
        Emit("x", "b", ["user:alice", "user:bob"], except_=["user:alice"]),
        Emit("x", "c", ["nobody-here"]),
    ]
    with trio.fail_after(WAIT):
        assert await hub.emitter.emit_many(emits) == [1, 1, 0]
    assert await alice.event() == ("notification", NOTIFICATION)
    assert await bob.event() == ("x", "b")
    await hub.quiet(alice, bob)


async def test_emit_many_with_an_invalid_emit_sends_none(hub: Running) -> None:
    alice = await hub.tab("alice")
    emits = [
        Emit("x", 1, ["user:alice"]),
        Emit("notification", {**NOTIFICATION, "title": ""}, ["user:alice"]),
    ]
    with trio.fail_after(WAIT), pytest.raises(EmitError) as caught:
        await hub.emitter.emit_many(emits)
    assert (caught.value.status, caught.value.code, caught.value.field) == (
        422,
        "VALIDATION_ERROR",
        "[1].data.title",
    )
    await hub.quiet(alice)


async def test_broadcast_and_emit_to_user(hub: Running) -> None:
    alice, bob = await hub.tab("alice"), await hub.tab("bob")
    message = {"message": "maintenance", "level": "info"}
    with trio.fail_after(WAIT):
        assert await hub.emitter.broadcast("system-message", message) == 2
        assert await hub.emitter.emit_to_user("bob", "x", {"to": "bob"}) == 1
        assert await hub.emitter.emit_to_user("nobody", "x", 1) == 0
    assert await alice.event() == ("system-message", message)
    assert await bob.event() == ("system-message", message)
    assert await bob.event() == ("x", {"to": "bob"})
    await hub.quiet(alice, bob)


async def test_join_leave_and_revoke(hub: Running) -> None:
    alice1, alice2 = await hub.tab("alice"), await hub.tab("alice")
    emitter = hub.emitter
    with trio.fail_after(WAIT):
        assert await emitter.join("alice", iter(["project:p1", "team"])) == 2
        assert await emitter.emit("x", 1, to=["team"]) == 2
        assert await emitter.leave("alice", ["team"]) == 2
        assert await emitter.emit("x", 2, to=["team"]) == 0
        assert await emitter.emit("x", 3, to=["project:p1"]) == 2
        assert await emitter.revoke_project("alice", "p1") == 2
        assert await emitter.emit("x", 4, to=["project:p1"]) == 0
        assert await emitter.join("nobody", ["team"]) == 0
        assert await emitter.revoke_project("nobody", "p1") == 0
    for tab in (alice1, alice2):
        assert [await tab.event(), await tab.event()] == [("x", 1), ("x", 3)]
    await hub.quiet(alice1, alice2)


async def test_sockets_of_and_disconnect_user(hub: Running) -> None:
    alice1, alice2, bob = await hub.tab("alice"), await hub.tab("alice"), await hub.tab("bob")
    with trio.fail_after(WAIT):
        sockets = await hub.emitter.sockets_of("alice")
    assert sorted(socket["id"] for socket in sockets) == sorted([alice1.sid, alice2.sid])
    for socket in sockets:
        assert socket["transport"] == "websocket"
        assert "user:alice" in socket["rooms"]
    with trio.fail_after(WAIT):
        assert await hub.emitter.sockets_of("nobody") == []
        assert await hub.emitter.disconnect_user("alice") == 2
    assert await alice1.client.receive_text() == "41"
    assert await alice2.client.receive_text() == "41"
    with trio.fail_after(WAIT):
        assert await hub.emitter.sockets_of("alice") == []
        assert await hub.emitter.disconnect_user("alice") == 0
    await hub.quiet(bob)


async def test_a_user_id_that_needs_escaping_reaches_that_user(hub: Running) -> None:
    tab = await hub.tab(ODD_USER)
    with trio.fail_after(WAIT):
        assert await hub.emitter.emit_to_user(ODD_USER, "x", 1) == 1
        assert [socket["id"] for socket in await hub.emitter.sockets_of(ODD_USER)] == [tab.sid]
        assert await hub.emitter.disconnect_user(ODD_USER) == 1
    assert await tab.event() == ("x", 1)
    assert await tab.client.receive_text() == "41"


async def test_a_wrong_token_raises_401(hub: Running) -> None:
    alice = await hub.tab("alice")
    async with plain_client() as http:
        emitter = Emitter(hub.addresses.internal_url, token="wrong", client=http)
        with trio.fail_after(WAIT), pytest.raises(EmitError) as caught:
            await emitter.emit("x", 1, to=["user:alice"])
    error = caught.value
    assert (error.status, error.code, error.field) == (401, "UNAUTHORIZED", None)
    assert error.message
    assert str(error) == f"401 UNAUTHORIZED: {error.message}"
    await hub.quiet(alice)


async def test_an_invalid_payload_raises_422_naming_the_field(hub: Running) -> None:
    alice = await hub.tab("alice")
    with trio.fail_after(WAIT), pytest.raises(EmitError) as caught:
        await hub.emitter.emit("notification", {**NOTIFICATION, "type": "x"}, to=["user:alice"])
    error = caught.value
    assert (error.status, error.code, error.field) == (422, "VALIDATION_ERROR", "data.type")
    assert "notification.type" in error.message
    assert str(error) == f"422 VALIDATION_ERROR: {error.message} (data.type)"
    with trio.fail_after(WAIT), pytest.raises(EmitError) as caught:
        await hub.emitter.broadcast("system-message", {"message": "m", "level": "loud"})
    assert (caught.value.status, caught.value.field) == (422, "data.level")
    await hub.quiet(alice)


async def test_a_bad_request_raises_400_naming_the_field(hub: Running) -> None:
    with trio.fail_after(WAIT), pytest.raises(EmitError) as caught:
        await hub.emitter.emit("x", 1, to=[])
    assert (caught.value.status, caught.value.code, caught.value.field) == (
        400,
        "BAD_REQUEST",
        "to",
    )
    with trio.fail_after(WAIT), pytest.raises(EmitError) as caught:
        await hub.emitter.join("alice", [])
    assert (caught.value.status, caught.value.field) == (400, "rooms")


async def test_an_answer_that_is_not_the_hubs_json_still_raises(hub: Running) -> None:
    # Not the hub's API: the Socket.IO endpoint answers in its own words.
    async with plain_client() as http:
        emitter = Emitter(hub.addresses.url + "/socket.io/?x=", token=EMIT_TOKEN, client=http)
        with trio.fail_after(WAIT), pytest.raises(EmitError) as caught:
            await emitter.broadcast("x", 1)
    assert (caught.value.status, caught.value.code, caught.value.field) == (400, "ERROR", None)
    assert caught.value.message


async def test_the_emitter_owns_its_client_unless_given_one(hub: Running) -> None:
    async with Emitter(hub.addresses.internal_url + "/", token=EMIT_TOKEN) as emitter:
        with trio.fail_after(WAIT):
            assert await emitter.broadcast("x", 1) == 0
    with pytest.raises(RuntimeError):  # httpx: the client has been closed
        await emitter.broadcast("x", 1)

    async with plain_client() as http:
        async with Emitter(hub.addresses.internal_url, token=EMIT_TOKEN, client=http) as emitter:
            with trio.fail_after(WAIT):
                assert await emitter.broadcast("x", 1) == 0
        assert not http.is_closed
