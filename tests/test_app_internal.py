"""hub.app.internal: the internal HTTP API, driven with httpx against a real hub on loopback,
with raw Socket.IO tabs (trio-websocket frames) reading what each endpoint sends them.

"Nothing arrived" is shown by order, not by waiting: after the request under test, a sentinel
is emitted to the tab's own room, and the next frame the tab reads must be that sentinel.
"""

from __future__ import annotations

import json
import time
import urllib.parse
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
from hub.app.internal import MAX_BATCH
from hub.app.store import SQLiteStore

SECRET = "internal-api-test-secret-0123456789abcdef"
EMIT_TOKEN = "internal-api-test-emit-token"
AUTH = {"Authorization": f"Bearer {EMIT_TOKEN}"}
SETTINGS = AuthSettings(secret=SECRET)

NOTIFICATION: dict[str, Any] = {
    "id": "n1",
    "type": "info",
    "title": "Hello",
    "message": "from the tests",
    "createdAt": "2026-01-01T00:00:00Z",
    "link": None,
}
# What a tab receives: validated and normalised (the null ``link`` left out).
NOTIFICATION_WIRE = {k: v for k, v in NOTIFICATION.items() if v is not None}
BAD_NOTIFICATION = {**NOTIFICATION, "type": "shout"}


async def start_hub(nursery: trio.Nursery, tmp_path: Path, **settings: Any) -> HubAddresses:
    """A hub on 127.0.0.1 (free ports) whose store knows alice, bob, carol and alice's ``p1``."""
    store = SQLiteStore(tmp_path / "db")
    for user in ("alice", "bob", "carol"):
        store.add_user(user, email=f"{user}@example.com")
    store.add_project("p1", owner="alice")
    running = await RunningHub.start(nursery, store, hub_settings(SECRET, EMIT_TOKEN, settings))
    return running.addresses


@attrs.frozen
class Running:
    addresses: HubAddresses
    http: httpx.AsyncClient
    nursery: trio.Nursery

    async def tab(self, user: str) -> Tab:
        host, port = self.addresses.public
        return await Tab.open(self.nursery, f"{host}:{port}", mint_token(user, SETTINGS))

    async def post(self, path: str, body: Any) -> httpx.Response:
        with trio.fail_after(WAIT):
            return await self.http.post("/internal/" + path, json=body)

    async def get(self, path: str) -> httpx.Response:
        with trio.fail_after(WAIT):
            return await self.http.get("/internal/" + path)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        with trio.fail_after(WAIT):
            response = await self.http.request(method, "/internal/" + path, json=body)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        return response.json()

    async def quiet(self, *tabs: Tab) -> None:
        """Assert that nothing reached ``tabs`` since their last read."""
        for tab in tabs:
            answer = await self.ok(
                "POST", "emit", {"event": "sentinel", "data": tab.sid, "to": [tab.sid]}
            )
            assert answer == {"delivered": 1}
            assert await tab.event() == ("sentinel", tab.sid)

    async def connections(self) -> dict[str, int]:
        answer: dict[str, int] = await self.ok("GET", "connections")
        return answer


@pytest.fixture
async def hub(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Running]:
    addresses = await start_hub(nursery, tmp_path)
    async with http_client(addresses.internal_url, headers=AUTH) as http:
        yield Running(addresses, http, nursery)


def http_client(base_url: str, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """An httpx client of the hub; plain HTTP on loopback, so no CA bundle is loaded."""
    return httpx.AsyncClient(base_url=base_url, headers=headers, verify=False)


def refusal(response: httpx.Response, status: int, code: str, field: str | None = None) -> str:
    """Check an error answer's status and JSON shape; returns its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) == ({"code", "message", "field"} if field else {"code", "message"}), error
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    if field is not None:
        assert error["field"] == field
    message: str = error["message"]
    return message


# -- authorization -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "allowed"),
    [
        (None, False),
        ("", False),
        ("Bearer", False),
        (EMIT_TOKEN, False),
        (f"Basic {EMIT_TOKEN}", False),
        (f"Token {EMIT_TOKEN}", False),
        ("Bearer wrong-token", False),
        (f"Bearer {EMIT_TOKEN[:-1]}", False),
        (f"Bearer {EMIT_TOKEN}x", False),
        (f"Bearer {EMIT_TOKEN.upper()}", False),
        (f"Bearer {EMIT_TOKEN}", True),
        (f"bearer {EMIT_TOKEN}", True),
        (f"BEARER {EMIT_TOKEN}", True),
    ],
)
async def test_the_emit_token_is_required(
    hub: Running, authorization: str | None, allowed: bool
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with http_client(hub.addresses.internal_url, headers=headers) as http:
        response = await http.get("/internal/connections")
    if allowed:
        assert response.status_code == 200
        assert response.json() == {"users": 0, "sockets": 0}
    else:
        refusal(response, 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("GET", "/internal/nope", b""),
        ("GET", "/internal/emit", b""),
        ("POST", "/internal/emit", b"{not json"),
        ("POST", "/internal/emit", json.dumps({"event": "x", "to": ["user:alice"]}).encode()),
        ("POST", "/internal/users/alice/disconnect", b""),
    ],
)
async def test_without_the_token_nothing_else_is_said_or_done(
    hub: Running, method: str, path: str, content: bytes
) -> None:
    alice = await hub.tab("alice")
    async with http_client(hub.addresses.internal_url) as http:
        response = await http.request(
            method, path, content=content, headers={"Authorization": "Bearer nope"}
        )
    refusal(response, 401, "UNAUTHORIZED")
    await hub.quiet(alice)
    assert await hub.connections() == {"users": 1, "sockets": 1}


# -- connections -------------------------------------------------------------------------------


async def test_connections_count_users_and_their_tabs(hub: Running) -> None:
    assert await hub.connections() == {"users": 0, "sockets": 0}
    await hub.tab("alice")
    await hub.tab("alice")
    bob = await hub.tab("bob")
    assert await hub.connections() == {"users": 2, "sockets": 3}
    await bob.client.aclose()
    with trio.fail_after(WAIT):
        while await hub.connections() != {"users": 1, "sockets": 2}:
            await trio.sleep(0.01)


# -- emit --------------------------------------------------------------------------------------


async def test_emit_reaches_every_tab_of_a_user_and_no_one_else(hub: Running) -> None:
    alice1, alice2, bob = await hub.tab("alice"), await hub.tab("alice"), await hub.tab("bob")
    answer = await hub.ok(
        "POST", "emit", {"event": "notification", "data": NOTIFICATION, "to": ["user:alice"]}
    )
    assert answer == {"delivered": 2}
    assert await alice1.event() == ("notification", NOTIFICATION_WIRE)
    assert await alice2.event() == ("notification", NOTIFICATION_WIRE)
    await hub.quiet(alice1, alice2, bob)


async def test_emit_to_several_rooms_reaches_each_socket_once(hub: Running) -> None:
    alice1, alice2, bob = await hub.tab("alice"), await hub.tab("alice"), await hub.tab("bob")
    body = {"event": "custom", "data": [1], "to": ["user:alice", "user:bob", alice1.sid]}
    assert await hub.ok("POST", "emit", body) == {"delivered": 3}
    for tab in (alice1, alice2, bob):
        assert await tab.event() == ("custom", [1])
    await hub.quiet(alice1, alice2, bob)


async def test_a_room_given_as_a_string_is_a_list_of_one(hub: Running) -> None:
    bob = await hub.tab("bob")
    assert await hub.ok("POST", "emit", {"event": "x", "data": 1, "to": "user:bob"}) == {
        "delivered": 1
    }
    assert await bob.event() == ("x", 1)


async def test_an_event_outside_the_catalogue_is_sent_as_given(hub: Running) -> None:
    bob = await hub.tab("bob")
    data = {"anything": [1, None, {"nested": "é"}], "extra": True}
    body = {"event": "custom:thing", "data": data, "to": ["user:bob"]}
    assert await hub.ok("POST", "emit", body) == {"delivered": 1}
    assert await bob.event() == ("custom:thing", data)


async def test_emit_except_leaves_out_the_sockets_of_those_rooms(hub: Running) -> None:
    alice1, alice2, bob = await hub.tab("alice"), await hub.tab("alice"), await hub.tab("bob")
    assert await hub.ok("POST", "rooms/join", {"userId": "alice", "rooms": ["team"]}) == {
        "sockets": 2
    }
    assert await hub.ok("POST", "rooms/join", {"userId": "bob", "rooms": ["team"]}) == {
        "sockets": 1
    }
    body = {"event": "x", "data": 1, "to": ["team"], "except": ["user:bob"]}
    assert await hub.ok("POST", "emit", body) == {"delivered": 2}
    body = {"event": "x", "data": 2, "to": ["team"], "except": alice1.sid}
    assert await hub.ok("POST", "emit", body) == {"delivered": 2}
    assert [await alice1.event()] == [("x", 1)]
    assert [await alice2.event(), await alice2.event()] == [("x", 1), ("x", 2)]
    assert await bob.event() == ("x", 2)
    await hub.quiet(alice1, alice2, bob)


async def test_emit_to_an_empty_room_delivers_nothing(hub: Running) -> None:
    alice = await hub.tab("alice")
    body = {"event": "notification", "data": NOTIFICATION, "to": ["project:none"]}
    assert await hub.ok("POST", "emit", body) == {"delivered": 0}
    body = {"event": "x", "to": ["user:alice"], "except": ["user:alice"]}
    assert await hub.ok("POST", "emit", body) == {"delivered": 0}
    await hub.quiet(alice)


async def test_emit_of_an_invalid_payload_is_422_naming_the_field(hub: Running) -> None:
    alice = await hub.tab("alice")
    body: dict[str, Any] = {"event": "notification", "data": BAD_NOTIFICATION, "to": ["user:alice"]}
    message = refusal(await hub.post("emit", body), 422, "VALIDATION_ERROR", "data.type")
    assert "notification.type" in message
    body = {"event": "notification", "data": None, "to": ["user:alice"]}
    refusal(await hub.post("emit", body), 422, "VALIDATION_ERROR", "data")
    nested = {"event": "system-message", "data": {"message": "", "level": "info"}, "to": "x"}
    refusal(await hub.post("emit", nested), 422, "VALIDATION_ERROR", "data.message")
    await hub.quiet(alice)


EMIT_400: list[tuple[bytes, str | None]] = [
    (b"", None),
    (b"{not json", None),
    (b"\xff\xfe\x00", None),
    (b"[" * 100_000, None),
    (b'"text"', None),
    (b"42", None),
    (b"null", None),
    (json.dumps({"to": ["user:alice"]}).encode(), "event"),
    (json.dumps({"event": "", "to": ["user:alice"]}).encode(), "event"),
    (json.dumps({"event": 5, "to": ["user:alice"]}).encode(), "event"),
    (json.dumps({"event": "x"}).encode(), "to"),
    (json.dumps({"event": "x", "to": []}).encode(), "to"),
    (json.dumps({"event": "x", "to": [""]}).encode(), "to"),
    (json.dumps({"event": "x", "to": 5}).encode(), "to"),
    (json.dumps({"event": "x", "to": ["r", 3]}).encode(), "to"),
    (json.dumps({"event": "x", "to": {"r": 1}}).encode(), "to"),
    (json.dumps({"event": "x", "to": ["r"], "except": 7}).encode(), "except"),
    (json.dumps({"event": "x", "to": ["r"], "except": [""]}).encode(), "except"),
]


@pytest.mark.parametrize(("content", "field"), EMIT_400, ids=[repr(c[:40]) for c, _ in EMIT_400])
async def test_emit_of_a_malformed_body_is_400(
    hub: Running, content: bytes, field: str | None
) -> None:
    with trio.fail_after(WAIT):
        response = await hub.http.post(
            "/internal/emit", content=content, headers={"Content-Type": "application/json"}
        )
    refusal(response, 400, "BAD_REQUEST", field)


# -- batches -----------------------------------------------------------------------------------


async def test_a_batch_answers_per_item_and_in_order(hub: Running) -> None:
    alice1, alice2, bob = await hub.tab("alice"), await hub.tab("alice"), await hub.tab("bob")
    batch = [
        {"event": "notification", "data": NOTIFICATION, "to": ["user:alice"]},
        {"event": "custom", "data": "b", "to": ["user:bob"]},
        {"event": "custom", "data": "c", "to": ["nobody-here"]},
        {"event": "custom", "data": "d", "to": ["user:alice"], "except": [alice2.sid]},
    ]
    answer = await hub.ok("POST", "emit", batch)
    assert answer == {
        "delivered": 4,
        "results": [{"delivered": 2}, {"delivered": 1}, {"delivered": 0}, {"delivered": 1}],
    }
    assert [await alice1.event(), await alice1.event()] == [
        ("notification", NOTIFICATION_WIRE),
        ("custom", "d"),
    ]
    assert await alice2.event() == ("notification", NOTIFICATION_WIRE)
    assert await bob.event() == ("custom", "b")
    await hub.quiet(alice1, alice2, bob)


async def test_a_large_batch_reaches_each_tab_whole_and_in_order(hub: Running) -> None:
    alice1, alice2, bob = await hub.tab("alice"), await hub.tab("alice"), await hub.tab("bob")
    # On one node a batch is written at the end, one write per tab for all its emits.
    batch = [
        {"event": "custom", "data": n, "to": ["user:bob" if n % 3 == 0 else "user:alice"]}
        for n in range(90)
    ]
    batch[45] = {"event": "custom", "data": 45, "to": ["user:alice"], "except": [alice1.sid]}
    answer = await hub.ok("POST", "emit", batch)
    assert answer["delivered"] == 29 + 2 * 60 + 1
    for tab, want in [
        (alice1, [n for n in range(90) if n % 3 and n != 45]),
        (alice2, [n for n in range(90) if n % 3 or n == 45]),
        (bob, [n for n in range(90) if n % 3 == 0 and n != 45]),
    ]:
        assert [await tab.event() for _ in want] == [("custom", n) for n in want]
    await hub.quiet(alice1, alice2, bob)


@pytest.mark.parametrize(
    ("second", "status", "code", "field"),
    [
        (
            {"event": "notification", "data": BAD_NOTIFICATION, "to": ["user:alice"]},
            422,
            "VALIDATION_ERROR",
            "[1].data.type",
        ),
        ({"event": "custom", "data": 1}, 400, "BAD_REQUEST", "[1].to"),
        ({"event": "", "to": ["user:bob"]}, 400, "BAD_REQUEST", "[1].event"),
        ({"event": "x", "to": ["user:bob"], "except": [3]}, 400, "BAD_REQUEST", "[1].except"),
        ("not an object", 400, "BAD_REQUEST", None),
    ],
)
async def test_a_batch_with_one_bad_item_delivers_nothing(
    hub: Running, second: Any, status: int, code: str, field: str | None
) -> None:
    alice, bob = await hub.tab("alice"), await hub.tab("bob")
    batch = [
        {"event": "notification", "data": NOTIFICATION, "to": ["user:alice"]},
        second,
        {"event": "custom", "data": 3, "to": ["user:bob"]},
    ]
    message = refusal(await hub.post("emit", batch), status, code, field)
    assert "[1]" in message or field is not None
    await hub.quiet(alice, bob)


async def test_a_batch_holds_1_to_max_batch_emits(hub: Running) -> None:
    refusal(await hub.post("emit", []), 400, "BAD_REQUEST")
    item = {"event": "x", "to": ["nobody-here"]}
    refusal(await hub.post("emit", [item] * (MAX_BATCH + 1)), 400, "BAD_REQUEST")
    answer = await hub.ok("POST", "emit", [item] * MAX_BATCH)
    assert answer["delivered"] == 0
    assert answer["results"] == [{"delivered": 0}] * MAX_BATCH


# -- broadcast ---------------------------------------------------------------------------------


async def test_broadcast_reaches_every_socket(hub: Running) -> None:
    tabs = [await hub.tab("alice"), await hub.tab("alice"), await hub.tab("bob")]
    data = {"message": "maintenance at 5", "level": "warning", "expiresAt": None}
    assert await hub.ok("POST", "broadcast", {"event": "system-message", "data": data}) == {
        "delivered": 3
    }
    for tab in tabs:
        assert await tab.event() == (
            "system-message",
            {"message": "maintenance at 5", "level": "warning"},
        )
    assert await hub.ok("POST", "broadcast", {"event": "custom", "data": [1]}) == {"delivered": 3}
    for tab in tabs:
        assert await tab.event() == ("custom", [1])
    await hub.quiet(*tabs)


async def test_broadcast_refusals(hub: Running) -> None:
    alice = await hub.tab("alice")
    bad = {"event": "system-message", "data": {"message": "x", "level": "shouting"}}
    refusal(await hub.post("broadcast", bad), 422, "VALIDATION_ERROR", "data.level")
    refusal(await hub.post("broadcast", {"data": 1}), 400, "BAD_REQUEST", "event")
    refusal(await hub.post("broadcast", {"event": 1}), 400, "BAD_REQUEST", "event")
    refusal(await hub.post("broadcast", [{"event": "x"}]), 400, "BAD_REQUEST")
    await hub.quiet(alice)


# -- rooms -------------------------------------------------------------------------------------


async def test_rooms_join_and_leave_act_on_every_tab_of_the_user(hub: Running) -> None:
    alice1, alice2, bob = await hub.tab("alice"), await hub.tab("alice"), await hub.tab("bob")
    joined = await hub.ok("POST", "rooms/join", {"userId": "alice", "rooms": ["team", "ops"]})
    assert joined == {"sockets": 2}
    listing = await hub.ok("GET", "users/alice/sockets")
    for socket in listing["sockets"]:
        assert {"team", "ops"} <= set(socket["rooms"])
    assert await hub.ok("POST", "emit", {"event": "x", "data": 1, "to": ["team"]}) == {
        "delivered": 2
    }
    assert await alice1.event() == ("x", 1)
    assert await alice2.event() == ("x", 1)

    left = await hub.ok("POST", "rooms/leave", {"userId": "alice", "rooms": "team"})
    assert left == {"sockets": 2}
    assert await hub.ok("POST", "emit", {"event": "x", "data": 2, "to": ["team"]}) == {
        "delivered": 0
    }
    assert await hub.ok("POST", "emit", {"event": "x", "data": 3, "to": ["ops"]}) == {
        "delivered": 2
    }
    assert await alice1.event() == ("x", 3)
    assert await alice2.event() == ("x", 3)
    await hub.quiet(alice1, alice2, bob)


async def test_rooms_of_a_user_without_sockets(hub: Running) -> None:
    assert await hub.ok("POST", "rooms/join", {"userId": "nobody", "rooms": ["r"]}) == {
        "sockets": 0
    }
    assert await hub.ok("POST", "rooms/leave", {"userId": 7, "rooms": ["r"]}) == {"sockets": 0}


@pytest.mark.parametrize("path", ["rooms/join", "rooms/leave"])
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rooms": ["r"]}, "userId"),
        ({"userId": "", "rooms": ["r"]}, "userId"),
        ({"userId": True, "rooms": ["r"]}, "userId"),
        ({"userId": ["alice"], "rooms": ["r"]}, "userId"),
        ({"userId": "alice"}, "rooms"),
        ({"userId": "alice", "rooms": []}, "rooms"),
        ({"userId": "alice", "rooms": [""]}, "rooms"),
        ({"userId": "alice", "rooms": [1]}, "rooms"),
        (["alice"], None),
    ],
)
async def test_rooms_refusals(hub: Running, path: str, body: Any, field: str | None) -> None:
    refusal(await hub.post(path, body), 400, "BAD_REQUEST", field)


# -- revoke ------------------------------------------------------------------------------------


async def test_revoke_takes_the_user_out_of_the_project_room(hub: Running) -> None:
    alice, bob = await hub.tab("alice"), await hub.tab("bob")
    await alice.client.send('421["join-project",{"projectId":"p1"}]')
    assert await alice.frame() == '431[{"ok":true}]'
    to_project = {"event": "x", "data": 1, "to": ["project:p1"]}
    assert await hub.ok("POST", "emit", to_project) == {"delivered": 1}
    assert await alice.event() == ("x", 1)

    answer = await hub.ok("POST", "access/revoke", {"userId": "alice", "projectId": "p1"})
    assert answer == {"sockets": 1}
    assert await hub.ok("POST", "emit", to_project) == {"delivered": 0}
    (socket,) = (await hub.ok("GET", "users/alice/sockets"))["sockets"]
    assert "project:p1" not in socket["rooms"]
    assert await hub.ok("POST", "access/revoke", {"userId": "bob", "projectId": 1}) == {
        "sockets": 1
    }
    await hub.quiet(alice, bob)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"projectId": "p1"}, "userId"),
        ({"userId": "alice"}, "projectId"),
        ({"userId": "alice", "projectId": ""}, "projectId"),
        ({"userId": "alice", "projectId": None}, "projectId"),
        ("alice", None),
    ],
)
async def test_revoke_refusals(hub: Running, body: Any, field: str | None) -> None:
    refusal(await hub.post("access/revoke", body), 400, "BAD_REQUEST", field)


# -- users -------------------------------------------------------------------------------------


async def test_the_sockets_of_a_user_are_listed_with_their_fields(hub: Running) -> None:
    before = int(time.time() * 1000)
    alice1, alice2 = await hub.tab("alice"), await hub.tab("alice")
    after = int(time.time() * 1000)
    answer = await hub.ok("GET", "users/alice/sockets")
    assert list(answer) == ["userId", "sockets"]
    assert answer["userId"] == "alice"
    sockets = sorted(answer["sockets"], key=lambda socket: socket["id"])
    assert [socket["id"] for socket in sockets] == sorted([alice1.sid, alice2.sid])
    for socket in sockets:
        assert set(socket) == {"id", "transport", "rooms", "connectedAt", "address"}
        assert socket["transport"] == "websocket"
        assert socket["rooms"] == sorted([socket["id"], "user:alice"])
        assert isinstance(socket["connectedAt"], int)
        assert before - 1000 <= socket["connectedAt"] <= after + 1000
        assert socket["address"] == "127.0.0.1"


@pytest.mark.parametrize("user_id", ["nobody", "alice smith", "100%", "team/alice", "a%41"])
async def test_the_user_id_in_the_path_is_percent_decoded_once(hub: Running, user_id: str) -> None:
    quoted = urllib.parse.quote(user_id, safe="")
    answer = await hub.ok("GET", f"users/{quoted}/sockets")
    assert answer == {"userId": user_id, "sockets": []}
    assert await hub.ok("POST", f"users/{quoted}/disconnect") == {"disconnected": 0}


async def test_disconnect_ends_every_tab_of_the_user(hub: Running) -> None:
    alice1, alice2, bob = await hub.tab("alice"), await hub.tab("alice"), await hub.tab("bob")
    assert await hub.ok("POST", "users/alice/disconnect") == {"disconnected": 2}
    assert await alice1.frame() == "41"
    assert await alice2.frame() == "41"
    assert await hub.connections() == {"users": 1, "sockets": 1}
    assert await hub.ok("GET", "users/alice/sockets") == {"userId": "alice", "sockets": []}
    assert await hub.ok("POST", "users/alice/disconnect") == {"disconnected": 0}
    await hub.quiet(bob)


# -- unknown paths and wrong methods -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/internal/"),
        ("GET", "/internal"),
        ("POST", "/internal/nope"),
        ("POST", "/internal/emit/extra"),
        ("POST", "/internal/rooms"),
        ("POST", "/internal/rooms/join/x"),
        ("POST", "/internal/access"),
        ("GET", "/internal/users"),
        ("GET", "/internal/users/alice"),
        ("GET", "/internal/users/alice/sockets/x"),
        ("GET", "/internal/users/alice/other"),
        ("GET", "/internal/connections/x"),
    ],
)
async def test_an_unknown_path_is_404(hub: Running, method: str, path: str) -> None:
    with trio.fail_after(WAIT):
        response = await hub.http.request(method, path, json={"event": "x", "to": ["r"]})
    refusal(response, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "emit", "POST"),
        ("PUT", "emit", "POST"),
        ("GET", "broadcast", "POST"),
        ("GET", "rooms/join", "POST"),
        ("DELETE", "rooms/leave", "POST"),
        ("PATCH", "access/revoke", "POST"),
        ("GET", "users/alice/disconnect", "POST"),
        ("POST", "users/alice/sockets", "GET"),
        ("DELETE", "users/alice/sockets", "GET"),
        ("POST", "connections", "GET"),
    ],
)
async def test_a_wrong_method_is_405_with_allow(
    hub: Running, method: str, path: str, allowed: str
) -> None:
    with trio.fail_after(WAIT):
        response = await hub.http.request(method, "/internal/" + path, content=b"{not json")
    refusal(response, 405, "METHOD_NOT_ALLOWED")
    # RFC 9110 section 15.5.6: "The origin server MUST generate an Allow header field in a 405
    # response containing a list of the target resource's currently supported methods."
    assert response.headers.get("allow") == allowed


# -- where the API is served -------------------------------------------------------------------


async def test_a_separate_internal_port_takes_the_api_off_the_public_port(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    addresses = await start_hub(nursery, tmp_path, internal_port=0)
    assert addresses.internal[1] not in (0, addresses.public[1])
    async with http_client(addresses.internal_url, headers=AUTH) as http:
        hub = Running(addresses, http, nursery)
        assert await hub.connections() == {"users": 0, "sockets": 0}
        engine = await http.get("/socket.io/?EIO=4&transport=polling")
        assert engine.status_code == 404
        public = await http.get(addresses.url + "/internal/connections")
        assert public.status_code == 404

        alice = await hub.tab("alice")
        body = {"event": "x", "data": 1, "to": ["user:alice"]}
        public = await http.post(addresses.url + "/internal/emit", json=body)
        assert public.status_code == 404
        assert await hub.ok("POST", "emit", body) == {"delivered": 1}
        assert await alice.event() == ("x", 1)
        await hub.quiet(alice)


@pytest.mark.parametrize("internal_port", [None, 0])
async def test_max_internal_body_limits_what_the_api_reads(
    nursery: trio.Nursery, tmp_path: Path, internal_port: int | None
) -> None:
    addresses = await start_hub(
        nursery, tmp_path, internal_port=internal_port, max_internal_body=2048
    )
    async with http_client(addresses.internal_url, headers=AUTH) as http:
        hub = Running(addresses, http, nursery)
        alice = await hub.tab("alice")
        small = json.dumps({"event": "x", "data": "a" * 1900, "to": ["user:alice"]}).encode()
        assert len(small) <= 2048
        response = await http.post("/internal/emit", content=small)
        assert response.json() == {"delivered": 1}
        assert await alice.event() == ("x", "a" * 1900)

        large = json.dumps({"event": "x", "data": "a" * 3000, "to": ["user:alice"]}).encode()
        response = await http.post("/internal/emit", content=large)
        refusal(response, 413, "TOO_LARGE")
        await hub.quiet(alice)


async def test_max_internal_body_may_exceed_the_socket_payload_limit(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    addresses = await start_hub(nursery, tmp_path, max_payload=1000, max_internal_body=100_000)
    async with http_client(addresses.internal_url, headers=AUTH) as http:
        hub = Running(addresses, http, nursery)
        bob = await hub.tab("bob")
        batch = [{"event": "x", "data": i, "to": ["user:bob"]} for i in range(1500)]
        batch = batch[:MAX_BATCH]
        content = json.dumps(batch).encode()
        assert 2024 < len(content) <= 100_000
        response = await http.post("/internal/emit", content=content)
        assert response.status_code == 200, response.text
        assert response.json()["delivered"] == MAX_BATCH
        for i in range(MAX_BATCH):
            assert await bob.event() == ("x", i)
