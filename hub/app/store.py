"""Who may join which room: the access store.

A project room needs ownership of the project or an accepted share of it; a batch room needs
access to the batch's project; and a user must exist and be enabled to connect at all. Those
answers come from an :class:`AccessStore`, of which there are two:

* :class:`SQLiteStore`, the embedded default: users, projects, shares and batches in one SQLite
  file, administered with the ``hub users|projects|batches`` commands
  (:mod:`hub.app.store_cli`).
* :class:`~hub.app.access_hook.HTTPAccessHook`, for a hub deployed beside a platform that
  already knows its users: the hub asks the platform's backend and keeps each answer briefly.

Either raises :class:`StoreError` when it cannot answer (a locked or broken database, a backend
that is down or slow); the caller refuses the join with that error rather than guessing.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

import attrs
import trio

__all__ = [
    "AccessStore",
    "Batch",
    "Project",
    "SQLiteStore",
    "Share",
    "StoreError",
    "User",
    "open_store",
]

_T = TypeVar("_T")

DEFAULT_DATABASE = "hub.sqlite3"


class StoreError(Exception):
    """The access store cannot do or answer what was asked.

    The message is one line, fit for the command line and for a refused join: an unknown user
    when sharing, a duplicate id, a database that cannot be opened, a backend that is down.
    """


@attrs.frozen
class User:
    """A user as the access store knows it.

    Attributes:
        id: the user's id (the ``sub`` of their token).
        email: their address, if known.
        enabled: a disabled user may not connect.
    """

    id: str
    email: str | None
    enabled: bool = True


@attrs.frozen
class Share:
    """A project shared with a user; only an accepted share grants access."""

    user: str
    accepted: bool


@attrs.frozen
class Project:
    """A project, its owner and its shares (sorted by user id)."""

    id: str
    owner: str
    shares: tuple[Share, ...] = ()


@attrs.frozen
class Batch:
    """A batch and the project it belongs to."""

    id: str
    project: str


class AccessStore(Protocol):
    """Where access decisions come from.

    Every method raises :class:`StoreError` when the store cannot answer.
    """

    async def get_user(self, user_id: str) -> User | None:
        """The user, or ``None`` if unknown."""
        ...

    async def can_access_project(self, user_id: str, project_id: str) -> bool:
        """Whether the user owns the project or holds an accepted share of it."""
        ...

    async def project_of_batch(self, batch_id: str) -> str | None:
        """The id of the batch's project, or ``None`` if the batch is unknown."""
        ...

    async def can_access_batch(self, user_id: str, batch_id: str) -> bool:
        """Whether the user may access the batch's project (``False`` for an unknown batch)."""
        ...

    async def aclose(self) -> None:
        """Release the store's connection or client."""
        ...


def open_store(
    database: str | None = None,
    access_hook_url: str | None = None,
    access_hook_token: str | None = None,
) -> AccessStore:
    """The access store the configuration asks for.

    Args:
        database: path of the SQLite file (default ``hub.sqlite3``).
        access_hook_url: base URL of the platform's access hook; when given, the hook is used
            and ``database`` is ignored.
        access_hook_token: bearer token sent to the hook.

    Returns:
        An :class:`HTTPAccessHook` if a hook URL is given, else a :class:`SQLiteStore`.

    Raises:
        StoreError: the database cannot be opened.
    """
    if access_hook_url:
        from hub.app.access_hook import HTTPAccessHook

        return HTTPAccessHook(access_hook_url, token=access_hook_token)
    return SQLiteStore(database or DEFAULT_DATABASE)


# --- SQLite -------------------------------------------------------------------------------------

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT,
    enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id)
);
CREATE INDEX IF NOT EXISTS projects_owner ON projects(owner_id);
CREATE TABLE IF NOT EXISTS shares (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    accepted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, user_id)
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS batches_project ON batches(project_id);
"""

# Access for an enabled user: ownership, or an accepted share. Both are primary-key lookups.
_CAN_ACCESS = """
SELECT EXISTS (
    SELECT 1 FROM users u
    WHERE u.id = :user AND u.enabled
      AND (
        EXISTS (SELECT 1 FROM projects p WHERE p.id = :project AND p.owner_id = u.id)
        OR EXISTS (
            SELECT 1 FROM shares s
            WHERE s.project_id = :project AND s.user_id = u.id AND s.accepted
        )
      )
)
"""


class SQLiteStore:
    """The embedded access store: one SQLite file (or ``":memory:"``).

    Threads: an async lookup is read at once, in the event loop's thread, on a read-only
    connection of its own that never waits for a lock (``busy_timeout`` 0): a primary-key read
    of pages in the cache, about 10 µs. A file database uses WAL journaling, so an admin write
    (of this process or of a ``hub`` command in another) does not block it. Only a lookup that
    would wait (the database locked, or the reader in use by another thread) goes to a worker
    thread (``trio.to_thread.run_sync``), one at a time (a :class:`trio.CapacityLimiter` of 1,
    so waiting lookups queue in trio and stay cancellable), on the store's main connection,
    where ``busy_timeout`` bounds the wait for a lock to 5 seconds, after which
    :class:`StoreError`. Why not always the thread: a worker needs the GIL back several times
    per lookup, and a busy event loop hands it over only every switch interval (5 ms), so a
    lookup took tens of milliseconds, one at a time, exactly when the hub was busiest.

    Access needs the user to exist and be enabled as well as ownership or an accepted share, so
    disabling a user revokes their access too.

    Args:
        path: the database file, created with its schema if missing; ``":memory:"`` for a
            private in-memory database.

    Raises:
        StoreError: the file cannot be opened or holds a newer schema.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(1)
        try:
            self._conn = sqlite3.connect(self.path, timeout=5.0, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None
        try:
            self._create_schema()
            self._reader, self._reader_lock = self._open_reader()
        except BaseException:
            self._conn.close()
            raise

    def _open_reader(self) -> tuple[sqlite3.Connection, threading.Lock]:
        """The connection the lookups read on at once, and its lock (a private in-memory
        database has one connection: the main one, under the main lock)."""
        if self.path in (":memory:", ""):
            return self._conn, self._lock
        try:
            reader = sqlite3.connect(self.path, timeout=0, check_same_thread=False)
            reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None
        return reader, threading.Lock()

    def _create_schema(self) -> None:
        with self._transaction("set up the schema") as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > _SCHEMA_VERSION:
                raise StoreError(
                    f"database {self.path} has schema version {version}, "
                    f"newer than this hub's {_SCHEMA_VERSION}"
                )
            if self.path not in (":memory:", ""):
                conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, in a transaction; SQLite errors become StoreErrors."""
        with self._lock:
            try:
                with self._conn:
                    yield self._conn
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"cannot {what}: {exc}") from None
            except sqlite3.Error as exc:
                raise StoreError(f"cannot {what} in database {self.path}: {exc}") from None

    def _query(self, what: str, sql: str, params: dict[str, str]) -> list[tuple[object, ...]]:
        with self._transaction(what) as conn:
            return list(conn.execute(sql, params).fetchall())

    def _read_now(
        self, what: str, sql: str, params: dict[str, str]
    ) -> list[tuple[object, ...]] | None:
        """The rows, read on the reader without waiting; None when that would wait."""
        if not self._reader_lock.acquire(blocking=False):
            return None
        try:
            return list(self._reader.execute(sql, params).fetchall())
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return None
            raise StoreError(f"cannot {what} in database {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"cannot {what} in database {self.path}: {exc}") from None
        finally:
            self._reader_lock.release()

    async def _aquery(
        self, what: str, sql: str, params: dict[str, str]
    ) -> list[tuple[object, ...]]:
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._limiter.borrowed_tokens:  # (a lookup in the thread goes first: order)
            rows = self._read_now(what, sql, params)
            if rows is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return rows
        return await trio.to_thread.run_sync(self._query, what, sql, params, limiter=self._limiter)

    # -- AccessStore

    async def get_user(self, user_id: str) -> User | None:
        """The user, or ``None`` if unknown."""
        rows = await self._aquery(
            "read user", "SELECT id, email, enabled FROM users WHERE id = :id", {"id": user_id}
        )
        return _user(rows[0]) if rows else None

    async def can_access_project(self, user_id: str, project_id: str) -> bool:
        """Whether the user is enabled and owns the project or holds an accepted share."""
        rows = await self._aquery(
            "check access", _CAN_ACCESS, {"user": user_id, "project": project_id}
        )
        return bool(rows[0][0])

    async def project_of_batch(self, batch_id: str) -> str | None:
        """The id of the batch's project, or ``None`` if the batch is unknown."""
        rows = await self._aquery(
            "read batch", "SELECT project_id FROM batches WHERE id = :id", {"id": batch_id}
        )
        return str(rows[0][0]) if rows else None

    async def can_access_batch(self, user_id: str, batch_id: str) -> bool:
        """Whether the user may access the batch's project (``False`` for an unknown batch)."""
        project = await self.project_of_batch(batch_id)
        return project is not None and await self.can_access_project(user_id, project)

    async def aclose(self) -> None:
        """Close the connection, after the lookup in progress (if any)."""
        await trio.to_thread.run_sync(self.close, limiter=self._limiter)

    # -- administration (synchronous: the CLI and tests)

    def add_user(self, user_id: str, *, email: str | None = None, enabled: bool = True) -> User:
        """Add a user.

        Raises:
            StoreError: the id is empty or already taken.
        """
        _check_id("user", user_id)
        with self._transaction(f"add user {user_id}") as conn:
            if _exists(conn, "users", user_id):
                raise StoreError(f"user {user_id} already exists")
            conn.execute(
                "INSERT INTO users (id, email, enabled) VALUES (?, ?, ?)",
                (user_id, email, int(enabled)),
            )
        return User(user_id, email, enabled)

    def set_user_enabled(self, user_id: str, enabled: bool) -> None:
        """Enable or disable a user.

        Raises:
            StoreError: the user is unknown.
        """
        with self._transaction(f"update user {user_id}") as conn:
            cursor = conn.execute(
                "UPDATE users SET enabled = ? WHERE id = ?", (int(enabled), user_id)
            )
            if cursor.rowcount == 0:
                raise StoreError(f"unknown user {user_id}")

    def add_project(self, project_id: str, *, owner: str) -> None:
        """Add a project owned by ``owner``.

        Raises:
            StoreError: the id is empty or taken, or the owner is unknown.
        """
        _check_id("project", project_id)
        with self._transaction(f"add project {project_id}") as conn:
            if _exists(conn, "projects", project_id):
                raise StoreError(f"project {project_id} already exists")
            if not _exists(conn, "users", owner):
                raise StoreError(f"unknown user {owner}")
            conn.execute("INSERT INTO projects (id, owner_id) VALUES (?, ?)", (project_id, owner))

    def share_project(self, project_id: str, *, user: str, accepted: bool = True) -> None:
        """Share a project with a user, or change whether an existing share is accepted.

        Raises:
            StoreError: the project or the user is unknown, or the user owns the project.
        """
        with self._transaction(f"share project {project_id}") as conn:
            row = conn.execute("SELECT owner_id FROM projects WHERE id = ?", (project_id,))
            found = row.fetchone()
            if found is None:
                raise StoreError(f"unknown project {project_id}")
            if not _exists(conn, "users", user):
                raise StoreError(f"unknown user {user}")
            if found[0] == user:
                raise StoreError(f"user {user} owns project {project_id}")
            conn.execute(
                "INSERT INTO shares (project_id, user_id, accepted) VALUES (?, ?, ?)"
                " ON CONFLICT (project_id, user_id) DO UPDATE SET accepted = excluded.accepted",
                (project_id, user, int(accepted)),
            )

    def unshare_project(self, project_id: str, *, user: str) -> None:
        """Withdraw a user's share of a project.

        Raises:
            StoreError: the project is not shared with the user.
        """
        with self._transaction(f"unshare project {project_id}") as conn:
            cursor = conn.execute(
                "DELETE FROM shares WHERE project_id = ? AND user_id = ?", (project_id, user)
            )
            if cursor.rowcount == 0:
                raise StoreError(f"project {project_id} is not shared with user {user}")

    def add_batch(self, batch_id: str, *, project: str) -> None:
        """Add a batch to a project.

        Raises:
            StoreError: the id is empty or taken, or the project is unknown.
        """
        _check_id("batch", batch_id)
        with self._transaction(f"add batch {batch_id}") as conn:
            if _exists(conn, "batches", batch_id):
                raise StoreError(f"batch {batch_id} already exists")
            if not _exists(conn, "projects", project):
                raise StoreError(f"unknown project {project}")
            conn.execute("INSERT INTO batches (id, project_id) VALUES (?, ?)", (batch_id, project))

    def users(self) -> list[User]:
        """Every user, sorted by id."""
        with self._transaction("list users") as conn:
            rows = conn.execute("SELECT id, email, enabled FROM users ORDER BY id").fetchall()
        return [_user(row) for row in rows]

    def projects(self) -> list[Project]:
        """Every project with its shares, sorted by id."""
        with self._transaction("list projects") as conn:
            projects = conn.execute("SELECT id, owner_id FROM projects ORDER BY id").fetchall()
            shares = conn.execute(
                "SELECT project_id, user_id, accepted FROM shares ORDER BY project_id, user_id"
            ).fetchall()
        by_project: dict[str, list[Share]] = collections.defaultdict(list)
        for project_id, user_id, accepted in shares:
            by_project[project_id].append(Share(user_id, bool(accepted)))
        return [Project(pid, owner, tuple(by_project[pid])) for pid, owner in projects]

    def batches(self) -> list[Batch]:
        """Every batch, sorted by id."""
        with self._transaction("list batches") as conn:
            rows = conn.execute("SELECT id, project_id FROM batches ORDER BY id").fetchall()
        return [Batch(batch_id, project_id) for batch_id, project_id in rows]

    def close(self) -> None:
        """Close the connections; the store is unusable afterwards."""
        with self._lock:
            self._conn.close()
        with self._reader_lock:
            self._reader.close()


def _user(row: tuple[object, ...]) -> User:
    user_id, email, enabled = row
    return User(str(user_id), None if email is None else str(email), bool(enabled))


def _exists(conn: sqlite3.Connection, table: str, row_id: str) -> bool:
    # ``table`` is one of ours, never user input.
    return conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is not None


def _check_id(kind: str, value: str) -> None:
    if not value or value != value.strip():
        raise StoreError(f"invalid {kind} id {value!r}: empty or padded with spaces")


# --- HTTP access hook ---------------------------------------------------------------------------
