"""The hub application end to end, with the official client: socket.io-client@4 in Node.

Each test starts a :class:`~hub.app.hub.Hub` on a loopback port (a SQLite access store, the
internal API on the public port unless said otherwise) and drives
``tests/interop/node_client.mjs``: what the stock client observed (connects, refusals and their
``data``, events, acks, disconnect reasons, reconnections) is what is asserted. Backends reach
the sockets through the internal HTTP API (:class:`hub.emitter.Emitter` or raw httpx) or the
Hub's in-process functions.

Absence ("this tab got nothing else") is checked with a fence rather than a sleep: after the
emits under test every socket is sent a numbered ``fence`` event, and since events to one
connection arrive in order, a client that has its fence has everything sent to it before.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
from interop.harness import CONNECT_TIMEOUT, STEP_TIMEOUT, ClientProcess, node_client
from support.hubs import HEARTBEAT_1S, RunningHub, hub_settings, websocket_handshake

from hub.app.auth import AuthSettings, mint_token
from hub.app.config import Config, ConfigError, Environment
from hub.app.store import SQLiteStore
from hub.emitter import Emit, EmitError, Emitter

SECRET = "test-secret-of-the-hub-client-tests"  # 32 bytes or more: no pyjwt warning
EMIT_TOKEN = "emit-token"
FAST_RECONNECT: dict[str, Any] = {"reconnectionDelay": 100, "reconnectionDelayMax": 200}
SETTLE = 1.5
"""Time for a reconnection that must not happen (it would start within ~200 ms)."""

Record = dict[str, Any]
_tags = itertools.count(1)

SEGMENTATION = {"imageId": "img-1", "projectId": "demo", "status": "processing", "progress": 40}
QUEUE_STATS = {"projectId": "demo", "queued": 2, "processing": 1, "completed": 5, "failed": 0,
               "total": 8}  # fmt: skip
THUMBNAIL = {"projectId": "demo", "imageId": "img-1", "thumbnailUrl": "/thumbnails/img-1.png"}


# -- the hub ---------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    """alice owns demo (batch b1), shared with bob (accepted) and carol (not accepted); carol
    owns garden (batch b2); dave has no project; erin is disabled."""
    store = SQLiteStore(tmp_path / "hub.sqlite3")
    for user in ("alice", "bob", "carol", "dave", "erin"):
        store.add_user(user, email=f"{user}@example.test")
    store.set_user_enabled("erin", False)
    store.add_project("demo", owner="alice")
    store.share_project("demo", user="bob")
    store.share_project("demo", user="carol", accepted=False)
    store.add_project("garden", owner="carol")
    store.add_batch("b1", project="demo")
    store.add_batch("b2", project="garden")
    return store


class Running(RunningHub):
    @property
    def emit_url(self) -> str:
        return self.addresses.internal_url + "/internal/emit"

    def emitter(self, token: str = EMIT_TOKEN) -> Emitter:
        return Emitter(self.addresses.internal_url, token=token, timeout=STEP_TIMEOUT)


async def start_hub(nursery: trio.Nursery, store: SQLiteStore, **settings: Any) -> Running:
    # Recovery is off (see hub_settings); tests/test_hub_recovery.py turns it on.
    return await Running.start(
        nursery, store, hub_settings(SECRET, EMIT_TOKEN, HEARTBEAT_1S, settings)
    )


AUTH_HEADERS = {"Authorization": f"Bearer {EMIT_TOKEN}"}


# -- clients ---------------------------------------------------------------------------------


hub_client = node_client
"""The stock client in Node, on ``url`` with ``options`` (``name`` is its name in reports)."""


@asynccontextmanager
async def tabs(
    nursery: trio.Nursery,
    running: Running,
    spec: Mapping[str, tuple[str, list[str]]],
    **options: Any,
) -> AsyncIterator[dict[str, ClientProcess]]:
    """``{name: (user, transports)}``: one client each, started together, all connected."""
    async with AsyncExitStack() as stack:
        clients: dict[str, ClientProcess] = {}
        for name, (user, transports) in spec.items():
            clients[name] = await stack.enter_async_context(
                hub_client(
                    nursery,
                    running.url,
                    name=name,
                    transports=transports,
                    auth={"token": running.token(user)},
                    **options,
                )
            )
        for client in clients.values():
            await client.expect("connect", timeout=CONNECT_TIMEOUT)
        yield clients


async def call(client: ClientProcess, event: str, *args: Any) -> Any:
    """Emit with an ack from the client; returns the server's (single) answer."""
    tag = next(_tags)
    await client.send(op="emit", event=event, args=list(args), ack=True, tag=tag)
    ack = await client.expect("ack", tag=tag)
    (answer,) = ack["args"]
    return answer


async def fence(running: Running, clients: Iterable[ClientProcess]) -> None:
    """Wait until every client has received all that was sent to it so far."""
    number = next(_tags)
    running.hub.broadcast("fence", number)
    for client in clients:
        await client.expect("event", name="fence", args=[number])


def received(client: ClientProcess) -> list[str]:
    """The events a client received (fences aside), as a sorted multiset."""
    return sorted(
        json.dumps([line["name"], *line["args"]], sort_keys=True)
        for line in client.events()
        if line["name"] != "fence"
    )


def multiset(*events: tuple[str, Any]) -> list[str]:
    return sorted(json.dumps([name, data], sort_keys=True) for name, data in events)


def note(n: int) -> tuple[str, Any]:
    return ("note", {"n": n})


def refused(code: str, message: str) -> Record:
    return {"ok": False, "error": {"code": code, "message": message}}


def unsigned_token(claims: Mapping[str, Any]) -> str:
    """A JWT with ``alg: none`` and no signature, made by hand."""

    def part(value: Mapping[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


# -- 1. connecting -----------------------------------------------------------------------------


async def test_connect_with_token_in_auth_header_or_query(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await start_hub(nursery, store)
    token = running.token("alice")
    ways: dict[str, dict[str, Any]] = {
        "auth": {"auth": {"token": token}, "transports": ["websocket"]},
        "header": {"extraHeaders": {"Authorization": f"Bearer {token}"}, "transports": ["polling"]},
        "query": {"query": {"token": token}, "transports": ["polling", "websocket"]},
    }
    async with AsyncExitStack() as stack:
        clients = {
            way: await stack.enter_async_context(hub_client(nursery, running.url, name=way, **opts))
            for way, opts in ways.items()
        }
        ids = {
            way: (await client.expect("connect", timeout=CONNECT_TIMEOUT))["id"]
            for way, client in clients.items()
        }
        async with running.emitter() as emitter:
            sockets = await emitter.sockets_of("alice")
            delivered = await emitter.emit_to_user("alice", "hello", {"to": "alice"})
        await fence(running, clients.values())
        for client in clients.values():
            assert received(client) == multiset(("hello", {"to": "alice"})), client.report()
            assert not client.seen("connect_error")
    assert delivered == 3
    assert sorted(s["id"] for s in sockets) == sorted(ids.values())
    for socket in sockets:
        assert "user:alice" in socket["rooms"]
    assert {s["id"]: s["transport"] for s in sockets}[ids["header"]] == "polling"


async def test_connect_refusals_reach_the_client_with_their_code(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await start_hub(nursery, store)
    forged = mint_token("alice", AuthSettings(secret="not-the-secret-of-this-hub-at-all"))
    cases: dict[str, tuple[dict[str, Any], str]] = {
        "expired": ({"auth": {"token": running.token("alice", expires_in=-30)}}, "TOKEN_EXPIRED"),
        "wrong-secret": ({"auth": {"token": forged}}, "TOKEN_INVALID"),
        "alg-none": (
            {"auth": {"token": unsigned_token({"sub": "alice", "exp": int(time.time()) + 600})}},
            "TOKEN_INVALID",
        ),
        "missing": ({"transports": ["polling"]}, "TOKEN_MISSING"),
        "unknown-user": ({"auth": {"token": running.token("mallory")}}, "USER_NOT_FOUND"),
        "disabled-user": (
            {"query": {"token": running.token("erin")}, "transports": ["polling"]},
            "USER_NOT_FOUND",
        ),
    }
    async with AsyncExitStack() as stack:
        clients = {
            case: await stack.enter_async_context(
                hub_client(
                    nursery, running.url, name=case, **{"transports": ["websocket"], **options}
                )
            )
            for case, (options, _) in cases.items()
        }
        errors = {
            case: await client.expect("connect_error", timeout=CONNECT_TIMEOUT)
            for case, client in clients.items()
        }
    assert {case: error["data"]["code"] for case, error in errors.items()} == {
        case: code for case, (_, code) in cases.items()
    }
    for case, error in errors.items():
        assert error["message"] == error["data"]["message"], (case, error)
        assert error["message"], (case, error)
        assert SECRET not in error["message"]
        # A refusal by the server is final: the stock client does not try again.
        assert error["active"] is False, (case, error)
        assert not clients[case].seen("connect"), clients[case].report()
    assert errors["expired"]["data"]["message"] == "Authentication token expired"
    assert running.hub.connections == {}


# -- 2. emitting to users, projects and batches ------------------------------------------------


async def test_emits_reach_exactly_the_sockets_of_their_rooms(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await start_hub(nursery, store)
    spec = {
        "alice1": ("alice", ["websocket"]),
        "alice2": ("alice", ["polling", "websocket"]),
        "bob1": ("bob", ["polling"]),
        "bob2": ("bob", ["websocket"]),
        "carol": ("carol", ["polling", "websocket"]),
    }
    async with tabs(nursery, running, spec) as clients:
        for name in ("alice1", "alice2", "bob1"):
            assert await call(clients[name], "join-project", {"projectId": "demo"}) == {"ok": True}
        for name in ("alice2", "bob1"):
            assert await call(clients[name], "join-batch", {"batchId": "b1"}) == {"ok": True}

        async with running.emitter() as emitter:
            delivered = {
                "user": await emitter.emit("note", {"n": 1}, to=["user:alice"]),
                "project": await emitter.emit("note", {"n": 2}, to=["project:demo"]),
                "batch": await emitter.emit("note", {"n": 3}, to=["batch:b1"]),
                "except": await emitter.emit(
                    "note", {"n": 4}, to=["project:demo"], except_=["user:bob"]
                ),
                "two users": await emitter.emit("note", {"n": 5}, to=["user:bob", "user:carol"]),
                "mixed": await emitter.emit(
                    "note", {"n": 6}, to=["project:demo", "user:carol"], except_=["batch:b1"]
                ),
                "known": await emitter.emit(
                    "segmentation-update", {**SEGMENTATION, "queueId": None}, to=["user:bob"]
                ),
            }
            batch = await emitter.emit_many(
                [
                    Emit("note", {"n": 7}, ["user:carol"]),
                    Emit("note", {"n": 8}, ["project:demo"], ["user:alice"]),
                    Emit("note", {"n": 9}, ["batch:b1", "user:alice"]),
                ]
            )
        hub_ = running.hub
        in_process = {
            "segmentation": hub_.emit_segmentation_update(
                "alice", {**SEGMENTATION, "progress": 90}
            ),
            "queue": hub_.emit_queue_stats_update("demo", QUEUE_STATS),
            "thumbnail": hub_.broadcast_thumbnail_update("demo", THUMBNAIL),
            "to user": hub_.emit_to_user("carol", "note", {"n": 10}),
        }
        await fence(running, clients.values())
        got = {name: received(client) for name, client in clients.items()}

    seg_bob = ("segmentation-update", SEGMENTATION)  # the null queueId is left out on the wire
    seg_alice = ("segmentation-update", {**SEGMENTATION, "progress": 90})
    project = [("queue-stats-update", QUEUE_STATS), ("thumbnail-update", THUMBNAIL)]
    assert got == {
        "alice1": multiset(*map(note, [1, 2, 4, 6, 9]), seg_alice, *project),
        "alice2": multiset(*map(note, [1, 2, 3, 4, 9]), seg_alice, *project),
        "bob1": multiset(*map(note, [2, 3, 5, 8, 9]), seg_bob, *project),
        "bob2": multiset(note(5), seg_bob),
        "carol": multiset(*map(note, [5, 6, 7, 10])),
    }
    assert delivered == {
        "user": 2,
        "project": 3,
        "batch": 2,
        "except": 2,
        "two users": 3,
        "mixed": 2,
        "known": 2,
    }
    assert batch == [1, 1, 3]
    assert in_process == {"segmentation": 2, "queue": 3, "thumbnail": 3, "to user": 1}


# -- 3. joining and leaving rooms ------------------------------------------------------------


async def test_join_and_leave_rooms(nursery: trio.Nursery, store: SQLiteStore) -> None:
    running = await start_hub(nursery, store)
    spec = {
        "alice": ("alice", ["websocket"]),
        "bob": ("bob", ["polling"]),
        "carol": ("carol", ["websocket"]),
        "dave": ("dave", ["polling", "websocket"]),
    }
    async with tabs(nursery, running, spec) as c:
        demo = {"projectId": "demo"}
        answers = {
            "owner": await call(c["alice"], "join-project", demo),
            "accepted share": await call(c["bob"], "join-project", demo),
            "pending share": await call(c["carol"], "join-project", demo),
            "no access": await call(c["dave"], "join-project", demo),
            "unknown project": await call(c["dave"], "join-project", {"projectId": "nope"}),
            "payload a string": await call(c["alice"], "join-project", "demo"),
            "payload empty id": await call(c["alice"], "join-project", {"projectId": ""}),
            "no payload": await call(c["alice"], "join-project"),
            "batch allowed": await call(c["bob"], "join-batch", {"batchId": "b1"}),
            "batch refused": await call(c["carol"], "join-batch", {"batchId": "b1"}),
            "batch unknown": await call(c["alice"], "join-batch", {"batchId": "b404"}),
            "batch bad payload": await call(c["alice"], "join-batch", {"batch": "b1"}),
        }
        delivered = [running.hub.emit("news", {"n": 1}, to=["project:demo"])]
        delivered.append(running.hub.emit("news", {"n": 2}, to=["batch:b1"]))
        left = await call(c["alice"], "leave-project", demo)
        delivered.append(running.hub.emit("news", {"n": 3}, to=["project:demo"]))
        await fence(running, c.values())
        got = {name: received(client) for name, client in c.items()}

    bad_project = refused("INVALID_PAYLOAD", "expected {projectId: string}")
    assert answers == {
        "owner": {"ok": True},
        "accepted share": {"ok": True},
        "pending share": refused("FORBIDDEN", "no access to project demo"),
        "no access": refused("FORBIDDEN", "no access to project demo"),
        "unknown project": refused("FORBIDDEN", "no access to project nope"),
        "payload a string": bad_project,
        "payload empty id": bad_project,
        "no payload": bad_project,
        "batch allowed": {"ok": True},
        "batch refused": refused("FORBIDDEN", "no access to batch b1"),
        "batch unknown": refused("NOT_FOUND", "no batch b404"),
        "batch bad payload": refused("INVALID_PAYLOAD", "expected {batchId: string}"),
    }
    assert left == {"ok": True}
    assert delivered == [2, 1, 1]
    news = [("news", {"n": n}) for n in (1, 2, 3)]
    assert got == {
        "alice": multiset(news[0]),
        "bob": multiset(*news),
        "carol": [],
        "dave": [],
    }


# -- 4. revocation ---------------------------------------------------------------------------


async def test_revoked_access_stops_project_events_at_once(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await start_hub(nursery, store)
    spec = {
        "alice": ("alice", ["websocket"]),
        "bob1": ("bob", ["websocket"]),
        "bob2": ("bob", ["polling"]),
    }
    async with tabs(nursery, running, spec) as c:
        for client in c.values():
            assert await call(client, "join-project", {"projectId": "demo"}) == {"ok": True}
        async with running.emitter() as emitter:
            before = await emitter.emit("update", {"n": 1}, to=["project:demo"])
            store.unshare_project("demo", user="bob")
            async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
                revoke = await http.post(
                    running.addresses.internal_url + "/internal/access/revoke",
                    json={"userId": "bob", "projectId": "demo"},
                    headers=AUTH_HEADERS,
                )
            after = await emitter.emit("update", {"n": 2}, to=["project:demo"])
            to_bob = await emitter.emit_to_user("bob", "still-here", {})
        rejoin = await call(c["bob1"], "join-project", {"projectId": "demo"})
        await fence(running, c.values())
        got = {name: received(client) for name, client in c.items()}

    assert (revoke.status_code, revoke.json()) == (200, {"sockets": 2})
    assert (before, after, to_bob) == (3, 1, 2)
    assert rejoin == refused("FORBIDDEN", "no access to project demo")
    bob = multiset(("update", {"n": 1}), ("still-here", {}))
    assert got == {
        "alice": multiset(("update", {"n": 1}), ("update", {"n": 2})),
        "bob1": bob,
        "bob2": bob,
    }


# -- 5. token lifetime -------------------------------------------------------------------------

EXPIRES_IN = 4.0  # whole seconds in `exp`: the token lives 3 to 4 s
WARNING = 2.5  # so the warning comes 0.5 to 1.5 s after the token is minted


def expiry_of(token: str) -> int:
    exp: int = jwt.decode(token, options={"verify_signature": False})["exp"]
    return exp


async def give_token(client: ClientProcess, n: int, token: str) -> None:
    """Answer the client's n-th call of its ``auth`` callback."""
    await client.expect("auth_request", timeout=CONNECT_TIMEOUT, n=n)
    await client.send(op="auth", token=token)


async def test_token_refresh_keeps_the_socket_past_the_old_expiry(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await start_hub(nursery, store, token_warning=WARNING)
    options = {"askAuth": True, "transports": ["websocket"], **FAST_RECONNECT}
    async with hub_client(nursery, running.url, name="alice", **options) as client:
        # The token is minted when the client asks for it, so node's start-up does not eat it.
        short = running.token("alice", expires_in=EXPIRES_IN)
        await give_token(client, 1, short)
        first = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        old_exp = expiry_of(short)

        stranger = await call(client, "refresh-token", {"token": running.token("bob")})
        expired = await call(client, "refresh-token", {"token": running.token("alice", -30)})
        bare = await call(client, "refresh-token", {"token": ""})
        warning = await client.expect("event", name="auth:expiring", timeout=EXPIRES_IN + 2)
        fresh = running.token("alice", expires_in=60)
        refreshed = await call(client, "refresh-token", {"token": fresh})

        await trio.sleep(max(0.0, old_exp + 1.5 - time.time()))
        await client.send(op="state", tag="after")
        state = await client.expect("state", tag="after")
        delivered = running.hub.emit_to_user("alice", "hello", {})
        await client.expect("event", name="hello")
        assert not client.seen("disconnect"), client.report()

    (payload,) = warning["args"]
    assert payload["expiresAt"] == old_exp * 1000
    assert 0 < payload["expiresIn"] <= WARNING * 1000
    assert warning["at"] < old_exp * 1000, "the warning came after the expiry"
    assert stranger == refused("TOKEN_INVALID", "token is for another user")
    assert expired == refused("TOKEN_EXPIRED", "Authentication token expired")
    assert bare == refused("TOKEN_MISSING", "expected {token: string}")
    assert refreshed == {"ok": True, "expiresAt": expiry_of(fresh) * 1000}
    assert (state["connected"], state["id"]) == (True, first["id"])
    assert len(client.seen("connect")) == 1
    assert len(client.seen("auth_request")) == 1
    assert delivered == 1


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_expired_token_closes_the_connection_and_the_client_reconnects(
    nursery: trio.Nursery, store: SQLiteStore, transport: str
) -> None:
    running = await start_hub(nursery, store, token_warning=WARNING)
    options = {"askAuth": True, "transports": [transport], **FAST_RECONNECT}
    async with hub_client(nursery, running.url, name="alice", **options) as client:
        short = running.token("alice", expires_in=EXPIRES_IN)
        await give_token(client, 1, short)
        first = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        warning = await client.expect("event", name="auth:expiring", timeout=EXPIRES_IN + 2)
        disconnect = await client.expect("disconnect", timeout=EXPIRES_IN + STEP_TIMEOUT)
        closed_at = time.time()

        # The stock client reconnects by itself and asks its auth callback again.
        await give_token(client, 2, running.token("alice"))
        second = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        await client.expect("reconnect")
        async with running.emitter() as emitter:
            sockets = await emitter.sockets_of("alice")
            delivered = await emitter.emit_to_user("alice", "hello", {"again": True})
        await client.expect("event", name="hello")

    assert warning["args"][0]["expiresAt"] == expiry_of(short) * 1000
    assert client.lines.index(warning) < client.lines.index(disconnect)
    assert closed_at >= expiry_of(short) - 0.1
    # An Engine.IO-level close, not a Socket.IO DISCONNECT: the client stays active.
    assert (disconnect["reason"], disconnect["active"]) == ("transport close", True)
    assert client.seen("reconnect_attempt")
    assert second["id"] != first["id"]
    assert [(s["id"], s["transport"]) for s in sockets] == [(second["id"], transport)]
    assert delivered == 1


# -- 6. CORS -----------------------------------------------------------------------------------

CORS_CASES = [
    pytest.param(
        {"env": Environment.DEVELOPMENT},
        {
            "http://localhost:5173": True,
            "http://127.0.0.1:8080": True,
            "http://evil.example": False,
        },
        id="development",
    ),
    pytest.param(
        {"env": Environment.PRODUCTION, "allowed_origins": ("https://app.example",)},
        {
            "https://app.example": True,
            "http://localhost:5173": False,
            "http://127.0.0.1:8080": False,
            "https://evil.example": False,
        },
        id="production",
    ),
]


async def polling_handshake(url: str, origin: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
        return await http.get(
            url + "/socket.io/",
            params={"EIO": "4", "transport": "polling"},
            headers={"Origin": origin},
        )


async def polling_preflight(url: str, origin: str) -> int:
    """The status of the CORS preflight a browser sends before a polling request with headers."""
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
        response = await http.options(
            url + "/socket.io/",
            params={"EIO": "4", "transport": "polling"},
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
    return response.status_code


@pytest.mark.parametrize(("settings", "origins"), CORS_CASES)
async def test_cors_by_environment(
    nursery: trio.Nursery, store: SQLiteStore, settings: dict[str, Any], origins: dict[str, bool]
) -> None:
    running = await start_hub(nursery, store, **settings)
    url = running.url
    polling = {origin: await polling_handshake(url, origin) for origin in origins}
    websocket = {origin: await websocket_handshake(url, origin) for origin in origins}
    preflight = {origin: await polling_preflight(url, origin) for origin in origins}
    allowed = next(origin for origin, ok in origins.items() if ok)
    refused_origin = next(origin for origin, ok in origins.items() if not ok)
    sid = json.loads(polling[allowed].text[1:])["sid"]
    upgrade = await websocket_handshake(url, refused_origin, sid=sid)

    token = running.token("alice")
    node_cases: dict[str, tuple[str, list[str]]] = {
        "allowed": (allowed, ["polling", "websocket"]),
        "refused-polling": (refused_origin, ["polling"]),
        "refused-websocket": (refused_origin, ["websocket"]),
    }
    async with AsyncExitStack() as stack:
        clients = {
            case: await stack.enter_async_context(
                hub_client(
                    nursery,
                    url,
                    name=case,
                    transports=transports,
                    auth={"token": token},
                    extraHeaders={"Origin": origin},
                    reconnection=False,
                )
            )
            for case, (origin, transports) in node_cases.items()
        }
        await clients["allowed"].expect("connect", timeout=CONNECT_TIMEOUT)
        errors = {
            case: await clients[case].expect("connect_error", timeout=CONNECT_TIMEOUT)
            for case in ("refused-polling", "refused-websocket")
        }

    assert {o: r.status_code for o, r in polling.items()} == {
        o: 200 if ok else 403 for o, ok in origins.items()
    }
    assert websocket == {o: 101 if ok else 403 for o, ok in origins.items()}
    assert preflight == {o: 204 if ok else 403 for o, ok in origins.items()}
    assert upgrade == 403
    for origin, ok in origins.items():
        response = polling[origin]
        if ok:
            assert response.text.startswith("0{")
            assert response.headers["access-control-allow-origin"] == origin
            assert response.headers["access-control-allow-credentials"] == "true"
        else:
            assert "access-control-allow-origin" not in response.headers
    assert errors["refused-polling"]["message"] == "xhr poll error"
    assert errors["refused-polling"]["description"] == 403
    assert errors["refused-websocket"]["message"] == "websocket error"
    assert "403" in str(errors["refused-websocket"]["description"])
    for case in errors:
        assert not clients[case].seen("connect")


# -- 7. the internal API -----------------------------------------------------------------------


async def test_emit_endpoint_refuses_without_delivering(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await start_hub(nursery, store)
    bad = {**SEGMENTATION, "progress": 150}
    to_alice = ["user:alice"]
    async with tabs(nursery, running, {"alice": ("alice", ["websocket"])}) as c:
        async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
            item = {"event": "note", "data": {"n": 1}, "to": to_alice}

            async def post(body: Any, headers: Mapping[str, str] = AUTH_HEADERS) -> httpx.Response:
                return await http.post(running.emit_url, json=body, headers=dict(headers))

            answers = {
                "no token": await post(item, {}),
                "wrong token": await post(item, {"Authorization": "Bearer not-it"}),
                "wrong scheme": await post(item, {"Authorization": f"Basic {EMIT_TOKEN}"}),
                "invalid payload": await post(
                    {"event": "segmentation-update", "data": bad, "to": to_alice}
                ),
                "missing to": await post({"event": "note", "data": {"n": 2}}),
                "batch, one invalid": await post(
                    [
                        {"event": "segmentation-update", "data": SEGMENTATION, "to": to_alice},
                        {"event": "note", "data": {"n": 3}, "to": to_alice},
                        {"event": "segmentation-update", "data": bad, "to": to_alice},
                    ]
                ),
                "batch, one without to": await post([item, {"event": "note", "data": {}}]),
            }
            unknown_data = {"progress": 150, "anything": [1, None, {"deep": True}]}
            passthrough = await post(
                {"event": "custom-thing", "data": unknown_data, "to": to_alice}
            )
        async with running.emitter(token="not-it") as wrong:
            with pytest.raises(EmitError) as unauthorized:
                await wrong.emit("note", {"n": 4}, to=to_alice)
        async with running.emitter() as emitter:
            with pytest.raises(EmitError) as invalid:
                await emitter.emit("segmentation-update", bad, to=to_alice)
        await fence(running, c.values())
        got = received(c["alice"])

    def error(response: httpx.Response) -> tuple[int, str, str | None]:
        answer = response.json()["error"]
        return response.status_code, answer["code"], answer.get("field")

    assert {name: error(response) for name, response in answers.items()} == {
        "no token": (401, "UNAUTHORIZED", None),
        "wrong token": (401, "UNAUTHORIZED", None),
        "wrong scheme": (401, "UNAUTHORIZED", None),
        "invalid payload": (422, "VALIDATION_ERROR", "data.progress"),
        "missing to": (400, "BAD_REQUEST", "to"),
        "batch, one invalid": (422, "VALIDATION_ERROR", "[2].data.progress"),
        "batch, one without to": (400, "BAD_REQUEST", "[1].to"),
    }
    assert (passthrough.status_code, passthrough.json()) == (200, {"delivered": 1})
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "UNAUTHORIZED")
    assert (invalid.value.status, invalid.value.field) == (422, "data.progress")
    # Nothing refused reached the client, not even the valid items of the refused batch.
    assert got == multiset(("custom-thing", unknown_data))


@pytest.mark.parametrize(
    ("settings", "size", "status"),
    [
        pytest.param({"max_internal_body": 4096}, 16_000, 413, id="over-limit"),
        pytest.param(
            {"max_internal_body": 4096, "internal_port": 0}, 16_000, 413, id="over-limit-own-port"
        ),
        pytest.param(
            {"max_internal_body": 64_000, "max_payload": 8192}, 16_000, 200, id="under-limit"
        ),
    ],
)
async def test_emit_body_limit_is_max_internal_body(
    nursery: trio.Nursery, store: SQLiteStore, settings: dict[str, Any], size: int, status: int
) -> None:
    running = await start_hub(nursery, store, **settings)
    body = {"event": "big", "data": "x" * size, "to": ["user:alice"]}
    async with tabs(nursery, running, {"alice": ("alice", ["websocket"])}) as c:
        async with httpx.AsyncClient(timeout=STEP_TIMEOUT) as http:
            response = await http.post(running.emit_url, json=body, headers=AUTH_HEADERS)
        await fence(running, c.values())
        got = [len(line["args"][0]) for line in c["alice"].events("big")]
    answer = response.json()
    if status == 413:
        assert (response.status_code, answer["error"]["code"]) == (413, "TOO_LARGE"), answer
        assert got == [], "the oversize emit reached the client"
    else:
        assert (response.status_code, answer) == (200, {"delivered": 1}), answer
        assert got == [size]


async def test_internal_api_on_its_own_port_only(nursery: trio.Nursery, store: SQLiteStore) -> None:
    running = await start_hub(nursery, store, internal_port=0)
    assert running.addresses.internal != running.addresses.public
    body = {"event": "note", "data": {}, "to": ["user:alice"]}
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT, headers=AUTH_HEADERS) as http:
        public = await http.post(running.url + "/internal/emit", json=body)
        internal = await http.post(running.emit_url, json=body)
    assert public.status_code == 404
    assert (internal.status_code, internal.json()) == (200, {"delivered": 0})


async def test_user_sockets_are_listed_and_disconnected_for_good(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await start_hub(nursery, store)
    spec = {
        "alice1": ("alice", ["websocket"]),
        "alice2": ("alice", ["polling"]),
        "bob": ("bob", ["websocket"]),
    }
    internal = running.addresses.internal_url + "/internal/users/"
    async with tabs(nursery, running, spec, **FAST_RECONNECT) as c:
        ids = {name: client.seen("connect")[0]["id"] for name, client in c.items()}
        assert await call(c["alice1"], "join-project", {"projectId": "demo"}) == {"ok": True}
        async with httpx.AsyncClient(timeout=STEP_TIMEOUT, headers=AUTH_HEADERS) as http:
            listed = (await http.get(internal + "alice/sockets")).json()
            disconnected = await http.post(internal + "alice/disconnect")
            reasons = {name: await c[name].expect("disconnect") for name in ("alice1", "alice2")}
            await trio.sleep(SETTLE)  # absence: no reconnection
            after = (await http.get(internal + "alice/sockets")).json()
        delivered = running.hub.emit_to_user("bob", "still-here", {})
        await fence(running, [c["bob"]])
        assert not c["bob"].seen("disconnect"), c["bob"].report()

    assert listed["userId"] == "alice"
    by_id = {socket["id"]: socket for socket in listed["sockets"]}
    assert {i: s["transport"] for i, s in by_id.items()} == {
        ids["alice1"]: "websocket",
        ids["alice2"]: "polling",
    }
    assert {"user:alice", "project:demo"} <= set(by_id[ids["alice1"]]["rooms"])
    assert "user:alice" in by_id[ids["alice2"]]["rooms"]
    assert "project:demo" not in by_id[ids["alice2"]]["rooms"]
    assert (disconnected.status_code, disconnected.json()) == (200, {"disconnected": 2})
    for name, disconnect in reasons.items():
        assert (disconnect["reason"], disconnect["active"]) == ("io server disconnect", False)
        assert not c[name].seen("reconnect_attempt"), c[name].report()
        assert len(c[name].seen("connect")) == 1
    assert after == {"userId": "alice", "sockets": []}
    assert delivered == 1
    assert received(c["bob"]) == multiset(("still-here", {}))


# -- 8. production configuration -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        pytest.param({}, ["JWT_ACCESS_SECRET", "HUB_EMIT_TOKEN"], id="neither"),
        pytest.param({"jwt_secret": "s"}, ["HUB_EMIT_TOKEN"], id="no-emit-token"),
        pytest.param({"emit_token": "t"}, ["JWT_ACCESS_SECRET"], id="no-secret"),
    ],
)
def test_production_config_names_what_is_missing(given: dict[str, Any], missing: list[str]) -> None:
    config = Config(env=Environment.PRODUCTION, allowed_origins=("https://app.example",), **given)
    with pytest.raises(ConfigError) as info:
        config.check()
    message = str(info.value)
    for name in ("JWT_ACCESS_SECRET", "HUB_EMIT_TOKEN"):
        assert (name in message) == (name in missing), message


async def test_hub_serve_refuses_to_start_in_production_without_secrets(tmp_path: Path) -> None:
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HUB_", "JWT_", "WS_")) and name != "NODE_ENV"
    }
    environ |= {"HUB_ENV": "production", "HUB_PORT": "0", "HUB_DATABASE": str(tmp_path / "db")}
    command = [sys.executable, "-c", "import sys, hub.cli; sys.exit(hub.cli.main())", "serve"]
    with trio.fail_after(30):
        result = await trio.run_process(
            command,
            env=environ,
            cwd=tmp_path,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    stderr = result.stderr.decode()
    assert result.returncode != 0, stderr
    assert "JWT_ACCESS_SECRET" in stderr, stderr
    assert "HUB_EMIT_TOKEN" in stderr, stderr
    assert "Traceback" not in stderr, stderr
