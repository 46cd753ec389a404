"""A small client of the hub's internal API, for backend services (httpx; trio or asyncio).

    async with Emitter("http://127.0.0.1:3000", token=os.environ["HUB_EMIT_TOKEN"]) as emitter:
        delivered = await emitter.emit("segmentation-update", {...}, to=["user:42"])

Every method answers what the hub answered (how many sockets an emit reached), and raises
:class:`EmitError` with the hub's error code, message and field when it refused.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import attrs
import httpx

__all__ = ["Emit", "EmitError", "Emitter"]


class EmitError(Exception):
    """The hub refused a request.

    Attributes:
        status: the HTTP status (401, 400, 413, 422...).
        code: the hub's error code (``UNAUTHORIZED``, ``VALIDATION_ERROR``...).
        field: the field at fault, when the hub named one.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" ({field})" if field else ""))
        self.status = status
        self.code = code
        self.message = message
        self.field = field


@attrs.frozen
class Emit:
    """One emit of a batch."""

    event: str
    data: Any
    to: Sequence[str]
    except_: Sequence[str] = ()

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"event": self.event, "data": self.data, "to": list(self.to)}
        if self.except_:
            body["except"] = list(self.except_)
        return body


class Emitter:
    """Talks to one hub's internal API.

    Args:
        base_url: the hub's internal address, e.g. ``http://127.0.0.1:3000``.
        token: the emit token (``HUB_EMIT_TOKEN``).
        timeout: seconds per request.
        client: an ``httpx.AsyncClient`` to use instead of one of its own.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._own = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._base = base_url.rstrip("/") + "/internal/"
        self._headers = {"Authorization": f"Bearer {token}"}

    async def __aenter__(self) -> Emitter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self._client.aclose()

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        response = await self._client.request(
            method, self._base + path, json=body, headers=self._headers
        )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200:
            error = answer.get("error", {}) if isinstance(answer, dict) else {}
            raise EmitError(
                response.status_code,
                str(error.get("code", "ERROR")),
                str(error.get("message", response.text[:200])),
                error.get("field"),
            )
        return answer

    async def emit(
        self, event: str, data: Any, *, to: Iterable[str], except_: Iterable[str] = ()
    ) -> int:
        """Send ``event`` to the rooms ``to`` (minus ``except_``); returns the sockets reached."""
        answer = await self._request(
            "POST", "emit", Emit(event, data, list(to), list(except_)).body()
        )
        return int(answer["delivered"])

    async def emit_many(self, emits: Sequence[Emit]) -> list[int]:
        """Send a batch (validated whole before any is sent); returns the sockets each reached."""
        answer = await self._request("POST", "emit", [e.body() for e in emits])
        return [int(result["delivered"]) for result in answer["results"]]

    async def broadcast(self, event: str, data: Any) -> int:
        answer = await self._request("POST", "broadcast", {"event": event, "data": data})
        return int(answer["delivered"])

    async def emit_to_user(self, user_id: str, event: str, data: Any) -> int:
        return await self.emit(event, data, to=[f"user:{user_id}"])

    async def join(self, user_id: str, rooms: Iterable[str]) -> int:
        answer = await self._request(
            "POST", "rooms/join", {"userId": user_id, "rooms": list(rooms)}
        )
        return int(answer["sockets"])

    async def leave(self, user_id: str, rooms: Iterable[str]) -> int:
        answer = await self._request(
            "POST", "rooms/leave", {"userId": user_id, "rooms": list(rooms)}
        )
        return int(answer["sockets"])

    async def revoke_project(self, user_id: str, project_id: str) -> int:
        answer = await self._request(
            "POST", "access/revoke", {"userId": user_id, "projectId": project_id}
        )
        return int(answer["sockets"])

    async def disconnect_user(self, user_id: str) -> int:
        user = urllib.parse.quote(user_id, safe="")
        answer = await self._request("POST", f"users/{user}/disconnect")
        return int(answer["disconnected"])

    async def sockets_of(self, user_id: str) -> list[dict[str, Any]]:
        user = urllib.parse.quote(user_id, safe="")
        answer = await self._request("GET", f"users/{user}/sockets")
        return list(answer["sockets"])
