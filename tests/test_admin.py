"""The Admin UI's namespace ``/admin`` and the status page's ``/status``, with the stock client.

Each test starts a :class:`~hub.app.hub.Hub` with :func:`hub.app.status.install_tools` on a
loopback port and drives ``socket.io-client`` in Node (``tests/interop/node_client.mjs``) as
the Admin UI does: ``io(url + "/admin", {auth: {username, password}})``. What that client
receives (``session``, ``config``, ``server_stats``, ``socket_connected``...) is what the
UI's bundle reads; the browser tests (``test_browser.py``) drive the bundle itself.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import trio
from interop.harness import CONNECT_TIMEOUT, ClientProcess, node_client
from support.hubs import HEARTBEAT_1S, RunningHub, hub_settings

from hub.app.admin import (
    DEV_ADMIN_PASSWORD,
    DEV_ADMIN_PASSWORD_HASH,
    DEV_ADMIN_USERNAME,
    REDACTED,
    AdminCredentials,
    AdminSettings,
    admin_ui_index,
)
from hub.app.config import ConfigError, Environment
from hub.app.status import install_tools
from hub.app.store import SQLiteStore
from hub.server import Socket
from hub.server.observer import Observer

SECRET = "test-secret-of-the-admin-ui-tests-0123456789"
EMIT_TOKEN = "emit-token"
PASSWORD = "correct horse"
PASSWORD_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
ADMIN = {"username": DEV_ADMIN_USERNAME, "password": DEV_ADMIN_PASSWORD}
ALL = ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]
STATS_FIELDS = {
    "serverId",
    "hostname",
    "pid",
    "uptime",
    "clientsCount",
    "pollingClientsCount",
    "aggregatedEvents",
    "namespaces",
}
_tags = itertools.count(1)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "hub.sqlite3")
    store.add_user("alice", email="alice@example.test")
    store.add_project("demo", owner="alice")
    return store


async def start(
    nursery: trio.Nursery,
    store: SQLiteStore,
    environ: Mapping[str, str] | None = None,
    *,
    demo: bool = True,
    **settings: Any,
) -> RunningHub:
    options = hub_settings(SECRET, EMIT_TOKEN, HEARTBEAT_1S, settings)
    return await RunningHub.start(
        nursery, store, options, prepare=lambda hub: install_tools(hub, environ or {}, demo=demo)
    )


@asynccontextmanager
async def client(
    nursery: trio.Nursery, url: str, *, name: str, connect: bool = True, **options: Any
) -> AsyncIterator[ClientProcess]:
    async with node_client(nursery, url, name=name, **options) as c:
        if connect:
            await c.expect("connect", timeout=CONNECT_TIMEOUT)
        yield c


def event_args(line: dict[str, Any]) -> list[Any]:
    args: list[Any] = line["args"]
    return args


async def expect_event(
    observer: ClientProcess, name: str, match: Callable[[list[Any]], bool], timeout: float = 8
) -> list[Any]:
    """The arguments of the next ``name`` event whose arguments ``match``."""
    with trio.fail_after(timeout):
        while True:
            args = event_args(await observer.expect("event", name=name, timeout=timeout))
            if match(args):
                return args


# -- settings -----------------------------------------------------------------------------


def test_settings_read_from_the_environment() -> None:
    dev = AdminSettings.from_env({}, production=False)
    assert (dev.credentials, dev.status_page, dev.development) == (None, True, True)
    demo = AdminSettings.from_env({}, production=False, demo=True)
    assert demo.credentials is not None
    assert demo.default_credentials
    assert demo.credentials.check(DEV_ADMIN_USERNAME, DEV_ADMIN_PASSWORD)
    assert not demo.credentials.check(DEV_ADMIN_USERNAME, "wrong")
    assert not demo.credentials.check("root", DEV_ADMIN_PASSWORD)
    assert DEV_ADMIN_PASSWORD_HASH not in repr(demo)  # the hash is never printed

    # --demo gives no default in production; there the status page is off unless asked for.
    prod = AdminSettings.from_env({}, production=True, demo=True)
    assert (prod.credentials, prod.status_page, prod.development) == (None, False, False)
    configured = AdminSettings.from_env(
        {
            "HUB_ADMIN_USERNAME": "ops",
            "HUB_ADMIN_PASSWORD_HASH": PASSWORD_HASH,
            "HUB_ADMIN_READONLY": "1",
            "HUB_STATUS_PAGE": "1",
        },
        production=True,
    )
    assert (configured.readonly, configured.status_page) == (True, True)
    assert not configured.default_credentials
    assert configured.credentials == AdminCredentials("ops", PASSWORD_HASH)
    # A hash made by bcryptjs ($2a$) or PHP ($2y$) is accepted too.
    assert AdminCredentials("ops", "$2a$" + PASSWORD_HASH[4:]).check("ops", PASSWORD)
    assert not AdminSettings.from_env({"HUB_STATUS_PAGE": "0"}, production=False).status_page


@pytest.mark.parametrize(
    ("environ", "production", "complaint"),
    [
        ({"HUB_ADMIN_USERNAME": "ops"}, False, "set both"),
        ({"HUB_ADMIN_PASSWORD_HASH": PASSWORD_HASH}, True, "set both"),
        ({"HUB_ADMIN_USERNAME": "ops", "HUB_ADMIN_PASSWORD_HASH": "plain"}, False, "bcrypt"),
        ({"HUB_ADMIN_READONLY": "maybe"}, False, "HUB_ADMIN_READONLY"),
        ({"HUB_STATUS_PAGE": "1"}, True, "HUB_STATUS_PAGE=1 in production needs"),
    ],
)
def test_settings_refused(environ: dict[str, str], production: bool, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        AdminSettings.from_env(environ, production=production)


def test_the_bundle_page_is_preset_for_this_hub() -> None:
    original = (
        '<head><link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto:100">'
        '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@mdi/font@latest/css/x.css">'
        "</head>"
    )
    page = admin_ui_index(original, path="/hub/socket.io/", local_icons=True)
    assert "fonts.googleapis.com" not in page
    assert "cdn.jsdelivr.net" not in page
    assert 'href="mdi/css/materialdesignicons.min.css"' in page
    assert 's.setItem("path","/hub/socket.io")' in page
    assert 's.setItem("server_url",window.location.origin)' in page
    assert "cdn.jsdelivr.net" in admin_ui_index(original, path="/socket.io/", local_icons=False)


# -- /admin ---------------------------------------------------------------------------------


async def test_login_session_and_config(nursery: trio.Nursery, store: SQLiteStore) -> None:
    running = await start(nursery, store)
    admin_url = running.url + "/admin"
    async with client(nursery, admin_url, name="nothing", connect=False) as anonymous:
        refusal = await anonymous.expect("connect_error", timeout=CONNECT_TIMEOUT)
        # Nothing offered: an empty message, so the UI opens its form without an error.
        assert (refusal["message"], refusal["data"]) == ("", {"code": "CREDENTIALS_REQUIRED"})
    wrong = {"username": DEV_ADMIN_USERNAME, "password": "nope"}
    async with client(nursery, admin_url, name="wrong", connect=False, auth=wrong) as intruder:
        refusal = await intruder.expect("connect_error", timeout=CONNECT_TIMEOUT)
        assert refusal["message"] == "invalid credentials"  # what the UI recognises
    async with client(nursery, admin_url, name="admin", auth=ADMIN) as admin:
        (session,) = event_args(await admin.expect("event", name="session"))
        (config,) = event_args(await admin.expect("event", name="config"))
        assert config == {"supportedFeatures": [*ALL, "AGGREGATED_EVENTS", "ALL_EVENTS"]}
        (sockets,) = event_args(await admin.expect("event", name="all_sockets"))
        (me,) = [s for s in sockets if s["nsp"] == "/admin"]
        assert me["transport"] in ("polling", "websocket")
        assert me["rooms"] == [me["id"]]
        (stats,) = event_args(await admin.expect("event", name="server_stats"))
        assert set(stats) == STATS_FIELDS
        assert stats["clientsCount"] >= 1
        names = {ns["name"]: ns["socketsCount"] for ns in stats["namespaces"]}
        assert {"/", "/admin", "/status"} <= set(names)
        # The UI reconnects with its session id alone.
        again = {"sessionId": session}
        async with client(nursery, admin_url, name="again", auth=again) as returning:
            await returning.expect("event", name="config")
            assert not returning.events("session")
    expired = {"sessionId": "0123456789abcdef"}
    async with client(nursery, admin_url, name="stale", connect=False, auth=expired) as stale:
        refusal = await stale.expect("connect_error", timeout=CONNECT_TIMEOUT)
        assert refusal["message"] == "session expired"


async def test_server_stats_every_two_seconds(nursery: trio.Nursery, store: SQLiteStore) -> None:
    running = await start(nursery, store)
    async with client(nursery, running.url + "/admin", name="admin", auth=ADMIN) as admin:
        first = await admin.expect("event", name="server_stats")
        second = await admin.expect("event", name="server_stats", timeout=5)
        third = await admin.expect("event", name="server_stats", timeout=5)
        assert 1.5 <= (third["at"] - second["at"]) / 1000 <= 3.0
        assert first["args"][0]["serverId"] == third["args"][0]["serverId"]
        # A connection, then its end, each counted in the second it happened.
        token = running.token("alice")
        async with client(nursery, running.url, name="alice", auth={"token": token}):
            pass
        seen: dict[str, int] = {}
        with trio.fail_after(8):
            while not {"rawConnection", "rawDisconnection", "bytesIn", "bytesOut"} <= set(seen):
                (stats,) = event_args(await admin.expect("event", name="server_stats"))
                for event in stats["aggregatedEvents"]:
                    assert event["timestamp"] % 1000 == 0
                    seen[event["type"]] = seen.get(event["type"], 0) + event["count"]


async def test_development_events_follow_a_socket(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    running = await start(nursery, store)
    async with client(nursery, running.url + "/admin", name="admin", auth=ADMIN) as admin:
        await admin.expect("event", name="all_sockets")
        token = running.token("alice")
        # The token in the query, where the hub also takes it from: it must not be shown.
        async with client(nursery, running.url, name="alice", query={"token": token}) as alice:
            alice_id = alice.seen("connect")[0]["id"]
            (described, _when) = await expect_event(
                admin, "socket_connected", lambda args: args[0]["nsp"] == "/"
            )
            assert (described["id"], described["nsp"]) == (alice_id, "/")
            assert sorted(described["rooms"]) == sorted([alice_id, "user:alice"])
            assert described["data"]["user_id"] == "alice"
            assert described["handshake"]["query"]["token"] == REDACTED
            assert token not in str(described)
            if described["transport"] == "polling":  # else it upgraded before it connected
                update = await admin.expect("event", name="socket_updated", timeout=5)
                assert update["args"] == [{"id": alice_id, "nsp": "/", "transport": "websocket"}]
            else:
                assert described["transport"] == "websocket"

            tag = next(_tags)
            payload = {"projectId": "demo"}
            await alice.send(op="emit", event="join-project", args=[payload], ack=True, tag=tag)
            await alice.expect("ack", tag=tag)
            received = await admin.expect("event", name="event_received")
            assert received["args"][:3] == ["/", alice_id, ["join-project", payload]]
            # A token sent in an event is not shown to the operators either.
            fresh = running.token("alice")
            tag = next(_tags)
            await alice.send(
                op="emit", event="refresh-token", args=[{"token": fresh}], ack=True, tag=tag
            )
            await alice.expect("ack", tag=tag)
            refresh = await expect_event(
                admin, "event_received", lambda args: args[2][0] == "refresh-token"
            )
            assert refresh[2] == ["refresh-token", {"token": REDACTED}]
            assert fresh not in str(admin.events("event_received"))
            joined = [
                line
                for line in admin.events("room_joined")
                if line["args"][1] == "project:demo" and line["args"][2] == alice_id
            ]
            assert joined
            running.hub.emit_to_user("alice", "note", {"n": 1})  # a broadcast: no event_sent
            running.hub.sockets_of("alice")[0].emit("note", {"n": 2})
            sent = await admin.expect("event", name="event_sent")
            assert sent["args"][:3] == ["/", alice_id, ["note", {"n": 2}]]
        gone = await admin.expect("event", name="socket_disconnected")
        assert gone["args"][:3] == ["/", alice_id, "client namespace disconnect"]
        left: set[str] = set()
        with trio.fail_after(5):
            while left != {alice_id, "user:alice", "project:demo"}:
                await trio.sleep(0.05)
                left = {
                    line["args"][1]
                    for line in admin.events("room_left")
                    if line["args"][2] == alice_id
                }


async def test_commands(nursery: trio.Nursery, store: SQLiteStore) -> None:
    running = await start(nursery, store)
    async with (
        client(nursery, running.url + "/admin", name="admin", auth=ADMIN) as admin,
        client(nursery, running.url, name="alice", auth={"token": running.token("alice")}) as alice,
    ):
        alice_id = alice.seen("connect")[0]["id"]
        socket = running.hub.sockets_of("alice")[0]
        await admin.send(op="emit", event="join", args=["/", "ops-room", alice_id])
        await expect_event(admin, "room_joined", lambda args: args[1:3] == ["ops-room", alice_id])
        assert "ops-room" in socket.rooms
        await admin.send(op="emit", event="emit", args=["/", "ops-room", "notice", {"a": 1}, 2])
        assert (await alice.expect("event", name="notice"))["args"] == [{"a": 1}, 2]
        await admin.send(op="emit", event="leave", args=["/", "ops-room", alice_id])
        await expect_event(admin, "room_left", lambda args: args[1:3] == ["ops-room", alice_id])
        assert "ops-room" not in socket.rooms
        # Commands on a namespace that does not exist do nothing (and create nothing).
        await admin.send(op="emit", event="emit", args=["/nowhere", None, "x"])
        await admin.send(op="emit", event="_disconnect", args=["/", False, alice_id])
        disconnect = await alice.expect("disconnect")
        assert disconnect["reason"] == "io server disconnect"
        assert "/nowhere" not in running.hub.server.namespaces


async def test_read_only(nursery: trio.Nursery, store: SQLiteStore) -> None:
    running = await start(nursery, store, {"HUB_ADMIN_READONLY": "1"})
    async with (
        client(nursery, running.url + "/admin", name="admin", auth=ADMIN) as admin,
        client(nursery, running.url, name="alice", auth={"token": running.token("alice")}) as alice,
    ):
        alice_id = alice.seen("connect")[0]["id"]
        (config,) = event_args(await admin.expect("event", name="config"))
        assert config == {"supportedFeatures": ["AGGREGATED_EVENTS", "ALL_EVENTS"]}
        await admin.send(op="emit", event="_disconnect", args=["/", True, alice_id])
        await admin.send(op="emit", event="join", args=["/", "ops-room", alice_id])
        # The next stats leave after the commands were read: they were ignored.
        await admin.expect("event", name="server_stats")
        await admin.expect("event", name="server_stats", timeout=5)
        assert running.hub.sockets_of("alice")[0].rooms == {alice_id, "user:alice"}
        assert not alice.seen("disconnect")


async def test_off_without_credentials(nursery: trio.Nursery, store: SQLiteStore) -> None:
    running = await start(nursery, store, demo=False)
    async with client(nursery, running.url + "/admin", name="a", connect=False, auth=ADMIN) as a:
        refusal = await a.expect("connect_error", timeout=CONNECT_TIMEOUT)
        assert refusal["message"] == "Invalid namespace"
    async with httpx.AsyncClient(base_url=running.url) as http:
        assert (await http.get("/admin-ui/")).status_code == 404
        assert (await http.get("/")).status_code == 200  # the status page stays


async def test_an_observer_that_fails_harms_nobody(
    nursery: trio.Nursery, store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Observer):
        def on_join(self, socket: Socket, room: str) -> None:
            raise RuntimeError("observer bug")

    running = await start(nursery, store)
    running.hub.server.observers.insert(0, Broken())
    async with (
        client(nursery, running.url + "/admin", name="admin", auth=ADMIN) as admin,
        client(nursery, running.url, name="alice", auth={"token": running.token("alice")}),
    ):
        # The join happened, and the observers after the broken one were told of it.
        await expect_event(admin, "room_joined", lambda args: args[1] == "user:alice")
        assert "user:alice" in running.hub.sockets_of("alice")[0].rooms
    assert "observer bug" in caplog.text


# -- /status and the pages --------------------------------------------------------------------


async def test_status_pushes_stats(nursery: trio.Nursery, store: SQLiteStore) -> None:
    running = await start(nursery, store)
    async with client(nursery, running.url + "/status", name="viewer") as viewer:
        await viewer.expect("event", name="history")
        await viewer.expect("event", name="stats")
        async with client(
            nursery, running.url, name="intruder", connect=False, auth={"token": "not-a-jwt"}
        ) as intruder:
            await intruder.expect("connect_error", timeout=CONNECT_TIMEOUT)
        async with client(
            nursery, running.url, name="alice", auth={"token": running.token("alice")}
        ):
            assert running.hub.emit_to_user("alice", "note", {"n": 1}) == 1
            with trio.fail_after(5):
                while True:
                    (stats,) = event_args(await viewer.expect("event", name="stats"))
                    if stats["rate"]["out"] >= 1 and stats["users"] == 1:
                        break
        assert stats["broadcasts"][0] == {
            "time": stats["broadcasts"][0]["time"],
            "namespace": "/",
            "event": "note",
            "to": ["user:alice"],
            "except": [],
            "delivered": 1,
            "data": '{"n":1}',
        }
        refusal = stats["refusals"][0]
        assert (refusal["code"], refusal["namespace"]) == ("TOKEN_INVALID", "/")
        assert {"name": "user:alice", "sockets": 1} in stats["rooms"]["top"]
        assert stats["clients"] == stats["polling"] + stats["websocket"] >= 2


async def test_status_in_production_asks_for_the_credentials(
    nursery: trio.Nursery, store: SQLiteStore
) -> None:
    environ = {
        "HUB_STATUS_PAGE": "1",
        "HUB_ADMIN_USERNAME": "ops",
        "HUB_ADMIN_PASSWORD_HASH": PASSWORD_HASH,
    }
    running = await start(
        nursery,
        store,
        environ,
        env=Environment.PRODUCTION,
        allowed_origins=("https://app.example",),
    )
    url = running.url + "/status"
    async with client(nursery, url, name="anonymous", connect=False) as anonymous:
        refusal = await anonymous.expect("connect_error", timeout=CONNECT_TIMEOUT)
        assert refusal["data"] == {"code": "CREDENTIALS_REQUIRED"}
    auth = {"username": "ops", "password": PASSWORD}
    async with client(nursery, url, name="ops", auth=auth) as ops:
        await ops.expect("event", name="session")
        (stats,) = event_args(await ops.expect("event", name="stats"))
        assert stats["env"] == "production"
        assert "data" not in str(stats["broadcasts"])  # no payloads in production


async def test_pages_are_served(nursery: trio.Nursery, store: SQLiteStore) -> None:
    running = await start(nursery, store)
    async with httpx.AsyncClient(base_url=running.url) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert 'content="/socket.io/"' in page.text
        bundle = await http.get("/static/socket.io.min.js")
        assert bundle.status_code == 200
        assert bundle.headers["content-type"].startswith("text/javascript")
        assert (await http.get("/static/status.js")).status_code == 200
        assert (await http.get("/admin-ui")).headers["location"] == "/admin-ui/"
        ui = await http.get("/admin-ui/")
        assert ui.status_code == 200
        assert 'setItem("server_url"' in ui.text
        assert (await http.get("/admin-ui/favicon.png")).headers["content-type"] == "image/png"
        icons = await http.get("/admin-ui/mdi/css/materialdesignicons.min.css")
        assert icons.status_code == 200
        for outside in ("/admin-ui/%2e%2e/%2e%2e/package.json", "/static/..%2fadmin.py", "/x"):
            assert (await http.get(outside)).status_code == 404, outside
        assert (await http.post("/", content=b"x")).status_code == 405
