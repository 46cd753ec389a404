"""The HTTP access hook: a hub beside a platform that already knows its users asks its backend.

The backend answers three questions, each answer kept a few seconds (bounded in entries):

* ``GET {base}/users/{id}`` -> ``200 {"id", "email", "enabled"}`` or ``404``
* ``GET {base}/projects/{pid}/access/{uid}`` -> ``200 {"allowed": bool}``
* ``GET {base}/batches/{bid}`` -> ``200 {"projectId": "..."}`` or ``404``

A backend that is down, slow or answers nonsense raises :class:`~hub.app.store.StoreError`, never
cached; the caller refuses the join with that error rather than guessing.
"""

from __future__ import annotations

import collections
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import attrs
import httpx
import trio

from hub.app.store import StoreError, User

__all__ = ["HTTPAccessHook"]

_T = TypeVar("_T")

_MAX_ANSWER_BYTES = 64 * 1024

_Key = tuple[str, ...]
"""A cache key: its kind first, which fixes the type of its value.

``("user", uid)`` -> ``User | None``; ``("access", pid, uid)`` -> ``bool``;
``("batch", bid)`` -> ``str | None``.
"""


@attrs.define(eq=False)
class _Flight:
    """A lookup in progress, which identical lookups wait for instead of asking again."""

    done: trio.Event = attrs.field(factory=trio.Event)
    answered: bool = False
    value: object = None
    error: str | None = None
    stale: bool = False  # invalidated while in flight: answer its waiters, but do not cache


class HTTPAccessHook:
    """An access store that asks the platform's backend.

    The backend answers three requests (ids are percent-encoded into the path)::

        GET {base}/users/{uid}                  200 {"id", "email", "enabled"} | 404
        GET {base}/projects/{pid}/access/{uid}  200 {"allowed": bool}  (404: not allowed)
        GET {base}/batches/{bid}                200 {"projectId": ...} | 404

    with ``Authorization: Bearer <token>`` when a token is given.

    Caching: every answer, negative ones included, is kept for ``cache_ttl`` seconds of
    :func:`trio.current_time`; at most ``max_cache`` answers are kept, and the oldest is dropped
    to make room. Errors are never cached. Identical lookups made while one is in flight wait for
    its answer instead of sending their own. :meth:`invalidate` drops answers (and detaches
    lookups in flight) when access is revoked.

    Bounds: each request has ``timeout`` seconds in all (connecting, waiting in the client's pool,
    reading) and an answer of at most 64 KiB; lookups in flight are at most one per distinct key.

    Args:
        base_url: the hook's base URL.
        token: bearer token for the backend.
        cache_ttl: seconds an answer is kept; 0 disables caching.
        max_cache: most answers kept.
        timeout: seconds a request may take.
        client: an HTTP client to use (not closed by :meth:`aclose`); by default the hook makes
            and owns one.

    Every lookup raises :class:`StoreError` when the backend is unreachable, slow, answers with
    an unexpected status, or answers something malformed.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        cache_ttl: float = 5.0,
        max_cache: int = 10000,
        timeout: float = 2.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if max_cache < 1:
            raise ValueError("max_cache must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.cache_ttl = cache_ttl
        self.max_cache = max_cache
        self.timeout = timeout
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)
        # key -> (expiry, value), oldest first
        self._cache: collections.OrderedDict[_Key, tuple[float, object]] = collections.OrderedDict()
        self._flights: dict[_Key, _Flight] = {}

    # -- AccessStore

    async def get_user(self, user_id: str) -> User | None:
        """The user, or ``None`` if the backend does not know them (404)."""
        return await self._lookup(("user", user_id), lambda: self._fetch_user(user_id))

    async def can_access_project(self, user_id: str, project_id: str) -> bool:
        """The backend's ``allowed``; ``False`` if it answers 404."""
        return await self._lookup(
            ("access", project_id, user_id), lambda: self._fetch_access(user_id, project_id)
        )

    async def project_of_batch(self, batch_id: str) -> str | None:
        """The batch's ``projectId``, or ``None`` if the backend does not know it (404)."""
        return await self._lookup(("batch", batch_id), lambda: self._fetch_batch(batch_id))

    async def can_access_batch(self, user_id: str, batch_id: str) -> bool:
        """Whether the user may access the batch's project (``False`` for an unknown batch)."""
        project = await self.project_of_batch(batch_id)
        return project is not None and await self.can_access_project(user_id, project)

    async def aclose(self) -> None:
        """Close the HTTP client if the hook made it."""
        if self._owns_client:
            await self._client.aclose()

    def invalidate(self, *, user_id: str | None = None, project_id: str | None = None) -> None:
        """Forget cached answers, so that the next lookup asks the backend.

        With ``user_id``, the user and their access to every project; with ``project_id``,
        every user's access to the project; with both, that user's access to that project;
        with neither, everything. Batches' projects are kept unless everything is dropped.
        Matching lookups in flight still answer their callers but are not cached, and later
        lookups send a new request.
        """

        def matches(key: _Key) -> bool:
            kind = key[0]
            if user_id is None and project_id is None:
                return True
            if kind == "user":
                return project_id is None and key[1] == user_id
            if kind == "access":
                return (project_id is None or key[1] == project_id) and (
                    user_id is None or key[2] == user_id
                )
            return False

        for key in [key for key in self._cache if matches(key)]:
            del self._cache[key]
        for key in [key for key in self._flights if matches(key)]:
            self._flights.pop(key).stale = True

    # -- cache and single flight

    async def _lookup(self, key: _Key, fetch: Callable[[], Awaitable[_T]]) -> _T:
        while True:
            cached = self._cache.get(key)
            if cached is not None:
                expiry, value = cached
                if trio.current_time() < expiry:
                    return cast(_T, value)  # the key's kind fixes the value's type
                del self._cache[key]
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.error is not None:
                raise StoreError(flight.error)
            if flight.answered:
                return cast(_T, flight.value)
            # The lookup we waited for was cancelled: look again, perhaps asking ourselves.

        flight = _Flight()
        self._flights[key] = flight
        try:
            value = await fetch()
        except StoreError as exc:
            flight.error = str(exc)
            raise
        else:
            flight.value, flight.answered = value, True
            if not flight.stale:
                self._remember(key, value)
            return value
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.done.set()

    def _remember(self, key: _Key, value: object) -> None:
        if self.cache_ttl <= 0:
            return
        self._cache.pop(key, None)
        self._cache[key] = (trio.current_time() + self.cache_ttl, value)
        while len(self._cache) > self.max_cache:
            self._cache.popitem(last=False)

    # -- requests

    async def _fetch_user(self, user_id: str) -> User | None:
        status, answer = await self._get(f"/users/{_segment(user_id)}")
        if status == 404:
            return None
        email = answer.get("email")
        enabled = answer.get("enabled")
        if not (email is None or isinstance(email, str)) or not isinstance(enabled, bool):
            raise StoreError(f"access hook: malformed user {user_id}: {_brief(answer)}")
        return User(user_id, email, enabled)

    async def _fetch_access(self, user_id: str, project_id: str) -> bool:
        status, answer = await self._get(
            f"/projects/{_segment(project_id)}/access/{_segment(user_id)}"
        )
        if status == 404:
            return False
        allowed = answer.get("allowed")
        if not isinstance(allowed, bool):
            raise StoreError(f"access hook: malformed access answer: {_brief(answer)}")
        return allowed

    async def _fetch_batch(self, batch_id: str) -> str | None:
        status, answer = await self._get(f"/batches/{_segment(batch_id)}")
        if status == 404:
            return None
        project = answer.get("projectId")
        if not isinstance(project, str) or not project:
            raise StoreError(f"access hook: malformed batch {batch_id}: {_brief(answer)}")
        return project

    async def _get(self, path: str) -> tuple[int, dict[str, object]]:
        """GET ``path``: ``(200, the JSON object)`` or ``(404, {})``.

        This is where the client's errors become :class:`StoreError`.
        """
        url = self.base_url + path
        body = b""
        with trio.move_on_after(self.timeout) as scope:
            try:
                async with self._client.stream(
                    "GET", url, headers=self._headers, timeout=self.timeout
                ) as response:
                    status = response.status_code
                    if status == 404:
                        return 404, {}
                    if status != 200:
                        raise StoreError(f"access hook answered {status} to GET {url}")
                    length = response.headers.get("content-length", "")
                    if length.isdigit() and int(length) > _MAX_ANSWER_BYTES:
                        raise StoreError(f"access hook answer to GET {url} is too large")
                    # Read to the end (leaving the loop early would strand httpx's generators);
                    # beyond the limit the rest is dropped, and the deadline bounds the wait.
                    async for chunk in response.aiter_bytes():
                        if len(body) <= _MAX_ANSWER_BYTES:
                            body += chunk
            except httpx.TimeoutException:
                raise StoreError(f"access hook timed out on GET {url}") from None
            except httpx.HTTPError as exc:
                raise StoreError(f"access hook unreachable on GET {url}: {exc}") from None
        if scope.cancelled_caught:
            raise StoreError(f"access hook timed out on GET {url}")
        if len(body) > _MAX_ANSWER_BYTES:
            raise StoreError(f"access hook answer to GET {url} is too large")
        try:
            answer = json.loads(body)
        except ValueError:
            raise StoreError(f"access hook answered GET {url} with invalid JSON") from None
        if not isinstance(answer, dict):
            raise StoreError(f"access hook answered GET {url} with {_brief(answer)}")
        return 200, answer


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _brief(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
