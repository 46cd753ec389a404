"""The access store: SQLite (files in ``tmp_path``), its commands (parsed and run in-process, and
once in a child process), and the HTTP access hook against a real backend served on a loopback
socket by hub's native server, counting the requests it receives.
"""

from __future__ import annotations

import argparse
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from hub.app.access_hook import HTTPAccessHook
from hub.app.store import (
    Batch,
    Project,
    Share,
    SQLiteStore,
    StoreError,
    User,
    open_store,
)
from hub.app.store_cli import STORE_COMMANDS, add_store_commands, run_store_command
from hub.transport.http import Request, Response, WebSocket
from hub.transport.native import serve
from hub.transport.router import Router

# --- SQLite ---------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    """alice owns p1 (batch b1); bob holds an accepted share of p1, carol a pending one."""
    store = SQLiteStore(tmp_path / "hub.sqlite3")
    store.add_user("alice", email="alice@example.com")
    store.add_user("bob")
    store.add_user("carol")
    store.add_project("p1", owner="alice")
    store.add_project("p2", owner="bob")
    store.share_project("p1", user="bob")
    store.share_project("p1", user="carol", accepted=False)
    store.add_batch("b1", project="p1")
    yield store
    store.close()


def test_schema_is_created(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
    conn.close()
    assert {"users", "projects", "shares", "batches"} <= tables
    assert version == 1
    assert journal == "wal"
    SQLiteStore(path).close()  # opening again leaves it be


def test_memory_database() -> None:
    store = SQLiteStore(":memory:")
    assert store.add_user("alice") == User("alice", None, True)
    assert store.users() == [User("alice", None, True)]
    store.close()


async def test_owner_and_accepted_share_grant_access(store: SQLiteStore) -> None:
    assert await store.can_access_project("alice", "p1")
    assert await store.can_access_project("bob", "p1")
    assert await store.can_access_project("bob", "p2")
    assert not await store.can_access_project("alice", "p2")


async def test_pending_share_does_not_grant_until_accepted(store: SQLiteStore) -> None:
    assert not await store.can_access_project("carol", "p1")
    store.share_project("p1", user="carol")
    assert await store.can_access_project("carol", "p1")
    store.share_project("p1", user="carol", accepted=False)
    assert not await store.can_access_project("carol", "p1")


async def test_unshare_revokes(store: SQLiteStore) -> None:
    store.unshare_project("p1", user="bob")
    assert not await store.can_access_project("bob", "p1")
    assert not await store.can_access_batch("bob", "b1")
    assert await store.can_access_project("bob", "p2")


async def test_batch_access_follows_its_project(store: SQLiteStore) -> None:
    assert await store.project_of_batch("b1") == "p1"
    assert await store.can_access_batch("alice", "b1")
    assert await store.can_access_batch("bob", "b1")
    assert not await store.can_access_batch("carol", "b1")
    store.add_user("dave")
    assert not await store.can_access_batch("dave", "b1")


async def test_unknown_ids(store: SQLiteStore) -> None:
    assert await store.get_user("nobody") is None
    assert await store.project_of_batch("nothing") is None
    assert not await store.can_access_project("nobody", "p1")
    assert not await store.can_access_project("alice", "nothing")
    assert not await store.can_access_batch("alice", "nothing")
    assert not await store.can_access_batch("nobody", "b1")


async def test_disabled_user_exists_but_has_no_access(store: SQLiteStore) -> None:
    assert await store.get_user("alice") == User("alice", "alice@example.com", True)
    store.set_user_enabled("alice", False)
    assert await store.get_user("alice") == User("alice", "alice@example.com", False)
    assert not await store.can_access_project("alice", "p1")
    assert not await store.can_access_batch("alice", "b1")
    store.set_user_enabled("alice", True)
    assert await store.can_access_project("alice", "p1")
    store.add_user("eve", enabled=False)
    assert await store.get_user("eve") == User("eve", None, False)


REFUSALS: list[tuple[str, Callable[[SQLiteStore], object], str]] = [
    ("duplicate user", lambda s: s.add_user("alice"), "user alice already exists"),
    ("empty user id", lambda s: s.add_user(""), "invalid user id ''"),
    ("padded user id", lambda s: s.add_user(" x"), "invalid user id ' x'"),
    ("enable unknown", lambda s: s.set_user_enabled("zed", True), "unknown user zed"),
    ("duplicate project", lambda s: s.add_project("p1", owner="bob"), "project p1 already exists"),
    ("unknown owner", lambda s: s.add_project("p9", owner="zed"), "unknown user zed"),
    ("share unknown user", lambda s: s.share_project("p1", user="zed"), "unknown user zed"),
    ("share unknown project", lambda s: s.share_project("p9", user="bob"), "unknown project p9"),
    ("share with owner", lambda s: s.share_project("p1", user="alice"), "alice owns project p1"),
    (
        "unshare missing",
        lambda s: s.unshare_project("p2", user="carol"),
        "project p2 is not shared with user carol",
    ),
    ("duplicate batch", lambda s: s.add_batch("b1", project="p2"), "batch b1 already exists"),
    ("unknown project", lambda s: s.add_batch("b9", project="p9"), "unknown project p9"),
]


@pytest.mark.parametrize(
    ("action", "message"),
    [(action, message) for _, action, message in REFUSALS],
    ids=[name for name, _, _ in REFUSALS],
)
def test_refusals(
    store: SQLiteStore, action: Callable[[SQLiteStore], object], message: str
) -> None:
    before = (store.users(), store.projects(), store.batches())
    with pytest.raises(StoreError, match=message):
        action(store)
    assert (store.users(), store.projects(), store.batches()) == before


def test_persists_across_reopen(store: SQLiteStore, tmp_path: Path) -> None:
    store.set_user_enabled("carol", False)
    store.close()
    again = SQLiteStore(tmp_path / "hub.sqlite3")
    assert again.users() == [
        User("alice", "alice@example.com", True),
        User("bob", None, True),
        User("carol", None, False),
    ]
    assert again.projects() == [
        Project("p1", "alice", (Share("bob", True), Share("carol", False))),
        Project("p2", "bob", ()),
    ]
    assert again.batches() == [Batch("b1", "p1")]
    again.close()


def test_unusable_databases(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open database"):
        SQLiteStore(tmp_path / "missing" / "hub.sqlite3")
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database, not at all" * 100)
    with pytest.raises(StoreError, match="not a database"):
        SQLiteStore(garbage)
    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(StoreError, match="schema version 7, newer than this hub's 1"):
        SQLiteStore(newer)


async def test_concurrent_lookups_and_aclose(store: SQLiteStore) -> None:
    results: list[bool] = []

    async def check(user: str) -> None:
        results.append(await store.can_access_batch(user, "b1"))

    async with trio.open_nursery() as nursery:
        for user in ["alice", "bob", "carol"] * 20:
            nursery.start_soon(check, user)
    assert sorted(results) == [False] * 20 + [True] * 40
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.get_user("alice")


async def test_lookups_answer_during_an_admin_write_and_see_it_once_committed(
    store: SQLiteStore, tmp_path: Path
) -> None:
    # A ``hub`` command of another process, in the middle of its write transaction.
    other = sqlite3.connect(tmp_path / "hub.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        other.execute("UPDATE users SET enabled = 0 WHERE id = 'bob'")
        with trio.fail_after(1):
            assert await store.can_access_project("bob", "p1")
        other.execute("COMMIT")
        # The very next lookup sees it: bob is disabled, his access gone.
        assert not await store.can_access_project("bob", "p1")
        assert await store.get_user("bob") == User("bob", None, False)
    finally:
        other.close()


async def test_a_lookup_that_must_wait_does_not_stop_the_event_loop() -> None:
    store = SQLiteStore(":memory:")  # one connection, shared with the admin methods
    store.add_user("alice")
    held, release = threading.Event(), threading.Event()

    def admin() -> None:  # an admin call in another thread, holding the connection
        with store._transaction("hold the store"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=admin)
    thread.start()
    assert held.wait(10)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0.01)

    async def let_go() -> None:
        await trio.sleep(0.3)
        release.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            nursery.start_soon(let_go)
            with trio.fail_after(10):
                user = await store.get_user("alice")
            nursery.cancel_scope.cancel()
    finally:
        release.set()
        thread.join()
    assert user == User("alice", None, True)
    assert ticks >= 5  # the loop went on while the lookup waited (about 30 in 0.3 s)
    store.close()


def test_open_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    default = open_store()
    assert isinstance(default, SQLiteStore)
    assert default.path == "hub.sqlite3"
    assert (tmp_path / "hub.sqlite3").exists()
    default.close()
    named = open_store(str(tmp_path / "other.sqlite3"))
    assert isinstance(named, SQLiteStore)
    named.close()
    hook = open_store("ignored.sqlite3", "http://backend.invalid/hub/", "secret")
    assert isinstance(hook, HTTPAccessHook)
    assert hook.base_url == "http://backend.invalid/hub"
    assert not (tmp_path / "ignored.sqlite3").exists()


# --- the commands ---------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub")
    add_store_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = parser().parse_args(argv)
    assert args.command in STORE_COMMANDS
    status = run_store_command(args)
    out, err = capsys.readouterr()
    return status, out, err


def test_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUB_DATABASE", str(tmp_path / "env.sqlite3"))
    steps: list[tuple[list[str], str]] = [
        (["users", "add", "alice", "--email", "a@x.org"], "added user alice (a@x.org)\n"),
        (["users", "add", "bob", "--disabled"], "added user bob (no email, disabled)\n"),
        (["users", "enable", "bob"], "enabled user bob\n"),
        (["users", "disable", "alice"], "disabled user alice\n"),
        (["users", "list"], "alice\ta@x.org\tdisabled\nbob\t-\tenabled\n"),
        (["projects", "add", "p1", "--owner", "alice"], "added project p1 owned by alice\n"),
        (["projects", "share", "p1", "--user", "bob"], "shared project p1 with bob\n"),
        (["projects", "list"], "p1\towner=alice\tshared=bob\n"),
        (["projects", "unshare", "p1", "--user", "bob"], "unshared project p1 from bob\n"),
        (["projects", "list"], "p1\towner=alice\tshared=-\n"),
        (["batches", "add", "b1", "--project", "p1"], "added batch b1 to project p1\n"),
        (["batches", "list"], "b1\tproject=p1\n"),
    ]
    for argv, expected in steps:
        assert run(argv, capsys) == (0, expected, ""), argv
    store = SQLiteStore(tmp_path / "env.sqlite3")
    assert store.users() == [User("alice", "a@x.org", False), User("bob", None, True)]
    store.close()

    # --database wins over HUB_DATABASE
    other = str(tmp_path / "other.sqlite3")
    assert run(["users", "list", "--database", other], capsys) == (0, "", "")
    assert run(["users", "add", "carol", "--database", other], capsys)[0] == 0
    assert run(["users", "list"], capsys)[1].count("\n") == 2


def test_command_refusals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HUB_DATABASE", raising=False)
    assert run(["users", "add", "alice"], capsys) == (0, "added user alice (no email)\n", "")
    assert (tmp_path / "hub.sqlite3").exists()
    refusals: list[tuple[list[str], str]] = [
        (["users", "add", "alice"], "hub: user alice already exists\n"),
        (["users", "disable", "zed"], "hub: unknown user zed\n"),
        (["projects", "add", "p1", "--owner", "zed"], "hub: unknown user zed\n"),
        (["projects", "share", "p1", "--user", "alice"], "hub: unknown project p1\n"),
        (["batches", "add", "b1", "--project", "p1"], "hub: unknown project p1\n"),
    ]
    for argv, expected in refusals:
        assert run(argv, capsys) == (2, "", expected), argv
    missing = str(tmp_path / "no" / "such" / "dir.sqlite3")
    status, out, err = run(["users", "list", "--database", missing], capsys)
    assert (status, out) == (2, "")
    assert err.startswith(f"hub: cannot open database {missing}")
    with pytest.raises(SystemExit):
        parser().parse_args(["projects", "add", "p1"])  # --owner is required
    capsys.readouterr()


def test_commands_in_a_child_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import argparse, sys
        from hub.app.store_cli import add_store_commands, run_store_command
        parser = argparse.ArgumentParser(prog="hub")
        add_store_commands(parser.add_subparsers(dest="command", required=True))
        sys.exit(run_store_command(parser.parse_args()))
        """
    )
    env = {"HUB_DATABASE": str(tmp_path / "child.sqlite3"), "PATH": "/usr/bin:/bin"}

    def hub(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", script, *argv],
            env=env,
            cwd=Path(__file__).parent.parent,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = hub("users", "add", "alice", "--email", "alice@example.com")
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "added user alice (alice@example.com)\n",
        "",
    )
    refused = hub("projects", "add", "p1", "--owner", "bob")
    assert (refused.returncode, refused.stdout, refused.stderr) == (
        2,
        "",
        "hub: unknown user bob\n",
    )
    store = SQLiteStore(tmp_path / "child.sqlite3")
    assert store.users() == [User("alice", "alice@example.com", True)]
    store.close()


# --- the HTTP access hook -------------------------------------------------------------------------


@attrs.define
class Backend:
    """The platform's side of the hook: alice owns p1, which holds batch b1; bob is disabled.

    Records every request's path and Authorization header; answers ``override`` instead when
    set; waits for ``gate`` (when set) before answering.
    """

    seen: list[tuple[str, str | None]] = attrs.field(factory=list)
    override: Response | None = None
    gate: trio.Event | None = None
    arrived: trio.Event = attrs.field(factory=trio.Event)

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]

    async def handle_http(self, request: Request) -> Response:
        self.seen.append((request.path, request.headers.get("authorization")))
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.override is not None:
            return self.override
        match request.path.split("/")[2:]:
            case ["users", "alice"]:
                return Response.json(200, {"id": "alice", "email": "a@x.org", "enabled": True})
            case ["users", "bob"]:
                return Response.json(200, {"id": "bob", "email": None, "enabled": False})
            case ["users", "ann marie"]:
                return Response.json(200, {"id": "ann marie", "enabled": True})
            case ["projects", "p1", "access", user]:
                return Response.json(200, {"allowed": user == "alice"})
            case ["batches", "b1"]:
                return Response.json(200, {"projectId": "p1"})
        return Response.text(404, "not found")

    async def handle_websocket(self, request: Request, websocket: WebSocket) -> None:
        await websocket.reject(Response.text(404, "not found"))


@pytest.fixture
def backend() -> Backend:
    return Backend()


@pytest.fixture
async def base_url(nursery: trio.Nursery, backend: Backend) -> str:
    host, port = await nursery.start(serve, Router([("/hook/", backend)]), "127.0.0.1", 0)
    return f"http://{host}:{port}/hook/"


@pytest.fixture
async def hook(base_url: str) -> AsyncIterator[HTTPAccessHook]:
    hook = HTTPAccessHook(base_url, token="s3cret", cache_ttl=5.0)
    yield hook
    await hook.aclose()


async def test_hook_answers(hook: HTTPAccessHook, backend: Backend) -> None:
    assert await hook.get_user("alice") == User("alice", "a@x.org", True)
    assert await hook.get_user("bob") == User("bob", None, False)
    assert await hook.get_user("ann marie") == User("ann marie", None, True)
    assert await hook.get_user("nobody") is None
    assert await hook.can_access_project("alice", "p1")
    assert not await hook.can_access_project("carol", "p1")
    assert not await hook.can_access_project("alice", "unknown")  # 404: not allowed
    assert await hook.project_of_batch("b1") == "p1"
    assert await hook.project_of_batch("b2") is None
    assert await hook.can_access_batch("alice", "b1")
    assert not await hook.can_access_batch("carol", "b1")
    assert not await hook.can_access_batch("alice", "b2")
    assert backend.seen[0] == ("/hook/users/alice", "Bearer s3cret")
    assert {authorization for _, authorization in backend.seen} == {"Bearer s3cret"}
    assert "/hook/users/ann marie" in backend.paths  # sent as ann%20marie


async def test_hook_without_token(base_url: str, backend: Backend) -> None:
    hook = HTTPAccessHook(base_url)
    assert await hook.get_user("alice") is not None
    await hook.aclose()
    assert backend.seen == [("/hook/users/alice", None)]


async def test_hook_caches_answers_for_ttl(
    hook: HTTPAccessHook, backend: Backend, mock_clock: trio.testing.MockClock
) -> None:
    for _ in range(3):
        assert await hook.get_user("alice") == User("alice", "a@x.org", True)
        assert await hook.get_user("nobody") is None  # negative answers are cached too
        assert await hook.can_access_batch("alice", "b1")
        assert not await hook.can_access_project("carol", "p1")
    assert backend.paths == [
        "/hook/users/alice",
        "/hook/users/nobody",
        "/hook/batches/b1",
        "/hook/projects/p1/access/alice",
        "/hook/projects/p1/access/carol",
    ]
    mock_clock.jump(4.9)
    assert await hook.get_user("alice") is not None
    assert len(backend.seen) == 5
    mock_clock.jump(0.2)
    assert await hook.get_user("alice") is not None
    assert await hook.get_user("nobody") is None
    assert len(backend.seen) == 7
    assert await hook.get_user("alice") is not None
    assert len(backend.seen) == 7


async def test_hook_cache_ttl_on_the_real_clock(base_url: str, backend: Backend) -> None:
    hook = HTTPAccessHook(base_url, cache_ttl=0.2)
    assert await hook.can_access_project("alice", "p1")
    assert await hook.can_access_project("alice", "p1")
    assert len(backend.seen) == 1
    await trio.sleep(0.3)
    assert await hook.can_access_project("alice", "p1")
    assert len(backend.seen) == 2
    await hook.aclose()


async def test_hook_without_cache(base_url: str, backend: Backend) -> None:
    hook = HTTPAccessHook(base_url, cache_ttl=0)
    for _ in range(3):
        assert await hook.get_user("nobody") is None
    assert len(backend.seen) == 3
    await hook.aclose()


async def test_hook_cache_is_bounded(base_url: str, backend: Backend) -> None:
    hook = HTTPAccessHook(base_url, max_cache=2)
    for user in ["alice", "bob", "carol", "carol", "bob"]:
        await hook.get_user(user)
    assert len(backend.seen) == 3
    await hook.get_user("alice")  # the oldest went to make room for carol
    assert len(backend.seen) == 4
    await hook.get_user("carol")  # ... and bob went for alice; carol is still there
    assert len(backend.seen) == 4
    await hook.aclose()


BROKEN: list[tuple[str, Response, str]] = [
    ("500", Response.text(500, "oops"), "access hook answered 500 to GET http://.*/users/alice"),
    ("403", Response.text(403, "who are you"), "access hook answered 403"),
    ("not json", Response(200, (), b"{nope"), "invalid JSON"),
    ("not an object", Response.json(200, ["alice"]), r'with \["alice"\]'),
    ("no enabled", Response.json(200, {"id": "alice"}), "malformed user alice"),
    ("email number", Response.json(200, {"email": 7, "enabled": True}), "malformed user"),
    ("huge", Response(200, (), b" " * 100_000), "too large"),
]


@pytest.mark.parametrize(
    ("answer", "message"),
    [(answer, message) for _, answer, message in BROKEN],
    ids=[name for name, _, _ in BROKEN],
)
async def test_hook_errors_are_store_errors_and_not_cached(
    hook: HTTPAccessHook, backend: Backend, answer: Response, message: str
) -> None:
    backend.override = answer
    for _ in range(2):
        with pytest.raises(StoreError, match=message):
            await hook.get_user("alice")
    backend.override = None
    assert await hook.get_user("alice") is not None
    assert len(backend.seen) == 3


async def test_hook_malformed_access_and_batch(hook: HTTPAccessHook, backend: Backend) -> None:
    backend.override = Response.json(200, {"allowed": "yes"})
    with pytest.raises(StoreError, match="malformed access answer"):
        await hook.can_access_project("alice", "p1")
    backend.override = Response.json(200, {"projectId": ""})
    with pytest.raises(StoreError, match="malformed batch b1"):
        await hook.project_of_batch("b1")


async def test_hook_timeout(base_url: str, backend: Backend) -> None:
    hook = HTTPAccessHook(base_url, timeout=0.2)
    backend.gate = trio.Event()
    with trio.fail_after(2):
        with pytest.raises(StoreError, match=r"access hook timed out on GET .*/users/alice"):
            await hook.get_user("alice")
    backend.gate.set()
    backend.gate = None
    assert await hook.get_user("alice") is not None  # the timeout was not cached
    assert len(backend.seen) == 2
    await hook.aclose()


async def test_hook_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hook = HTTPAccessHook(f"http://127.0.0.1:{port}")
    with pytest.raises(StoreError, match=r"access hook unreachable on GET .*/users/alice"):
        await hook.get_user("alice")
    await hook.aclose()


async def all_at_once(backend: Backend, look: Callable[[], Awaitable[None]], times: int) -> None:
    """Run ``look`` ``times`` at once, the backend holding its answers until every one of them
    waits: the first lookup has reached it and the others are blocked."""
    backend.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(times):
            nursery.start_soon(look)
        await backend.arrived.wait()
        await trio.testing.wait_all_tasks_blocked()
        backend.gate.set()


async def test_hook_shares_concurrent_identical_lookups(
    hook: HTTPAccessHook, backend: Backend
) -> None:
    results: list[User | None] = []

    async def look() -> None:
        results.append(await hook.get_user("alice"))

    await all_at_once(backend, look, 5)
    assert results == [User("alice", "a@x.org", True)] * 5
    assert len(backend.seen) == 1


async def test_hook_shared_errors_reach_every_waiter(
    hook: HTTPAccessHook, backend: Backend
) -> None:
    backend.override = Response.text(502, "bad gateway")
    errors: list[str] = []

    async def look() -> None:
        try:
            await hook.get_user("alice")
        except StoreError as exc:
            errors.append(str(exc))

    await all_at_once(backend, look, 3)
    assert len(errors) == 3
    assert all("answered 502" in error for error in errors)
    assert len(backend.seen) == 1


async def test_hook_waiter_asks_itself_when_the_first_lookup_is_cancelled(
    hook: HTTPAccessHook, backend: Backend
) -> None:
    backend.gate = trio.Event()
    results: list[User | None] = []

    async def look() -> None:
        results.append(await hook.get_user("alice"))

    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as first:
            first.start_soon(hook.get_user, "alice")
            await backend.arrived.wait()
            nursery.start_soon(look)  # waits for the first lookup's answer
            await trio.testing.wait_all_tasks_blocked()
            first.cancel_scope.cancel()
        backend.gate.set()
    assert results == [User("alice", "a@x.org", True)]
    assert len(backend.seen) == 2


async def test_hook_invalidate(hook: HTTPAccessHook, backend: Backend) -> None:
    async def look_up_all() -> None:
        await hook.get_user("alice")
        await hook.get_user("carol")
        await hook.can_access_project("alice", "p1")
        await hook.can_access_project("carol", "p1")
        await hook.can_access_project("alice", "p2")
        await hook.project_of_batch("b1")

    await look_up_all()
    assert len(backend.seen) == 6

    backend.seen.clear()
    hook.invalidate(user_id="alice")
    await look_up_all()
    assert set(backend.paths) == {
        "/hook/users/alice",
        "/hook/projects/p1/access/alice",
        "/hook/projects/p2/access/alice",
    }
    backend.seen.clear()
    hook.invalidate(project_id="p1")
    await look_up_all()
    assert set(backend.paths) == {
        "/hook/projects/p1/access/alice",
        "/hook/projects/p1/access/carol",
    }
    backend.seen.clear()
    hook.invalidate(user_id="carol", project_id="p1")
    await look_up_all()
    assert backend.paths == ["/hook/projects/p1/access/carol"]
    backend.seen.clear()
    hook.invalidate()
    await look_up_all()
    assert len(backend.seen) == 6


async def test_hook_invalidate_during_a_lookup(hook: HTTPAccessHook, backend: Backend) -> None:
    backend.gate = trio.Event()
    results: list[bool] = []

    async def look() -> None:
        results.append(await hook.can_access_project("alice", "p1"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(look)
        await backend.arrived.wait()
        hook.invalidate(project_id="p1")  # the answer on its way may be stale
        backend.gate.set()
    assert results == [True]
    assert await hook.can_access_project("alice", "p1")
    assert len(backend.seen) == 2
