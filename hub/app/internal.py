"""The internal HTTP API that backend services use to reach sockets.

Every request needs ``Authorization: Bearer $HUB_EMIT_TOKEN`` (compared in constant time); it is
served under ``/internal/`` on the public port, or only on its own port when one is configured.

=========================================  ================================================
``POST /internal/emit``                    ``{event, data, to: [rooms], except: [rooms]}``,
                                           or a JSON array of those; answers
                                           ``{"delivered": N}`` (and ``results`` per item)
``POST /internal/broadcast``               ``{event, data}`` to every socket
``POST /internal/rooms/join``              ``{userId, rooms: [...]}``: the user's sockets join
``POST /internal/rooms/leave``             ``{userId, rooms: [...]}``: ... and leave
``POST /internal/access/revoke``           ``{userId, projectId}``: leave ``project:<id>`` now
``POST /internal/users/<id>/disconnect``   every socket of the user (logout; no reconnect)
``GET  /internal/users/<id>/sockets``      the user's live sockets (tabs)
``GET  /internal/connections``             how many users and sockets are connected
=========================================  ================================================

Errors are JSON ``{"error": {"code": ..., "message": ..., "field": ...}}``: 401 without the right
token, 400 for a body that is not the JSON asked for, 404 for an unknown path, 405 for a wrong
method, 413 for a body over the limit, 422 for an event payload that fails validation (naming the
field), 503 once the hub is shutting down (nothing was done: send it again to a node that is up).
"""

from __future__ import annotations

import hmac
import json
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

from hub.app.events import EVENTS, EventValidationError, validate_event
from hub.transport.http import Request, Response, WebSocket

if TYPE_CHECKING:
    from hub.app.hub import Hub

__all__ = ["InternalAPI"]

log = logging.getLogger("hub.internal")

PREFIX = "/internal/"
MAX_BATCH = 1000


class _Refusal(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.headers = headers
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def response(self) -> Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return Response.json(self.status, {"error": error}, self.headers)


def _bad(message: str, field: str | None = None) -> _Refusal:
    return _Refusal(400, "BAD_REQUEST", message, field)


def _rooms(value: Any, field: str, *, required: bool) -> list[str]:
    if value is None:
        if required:
            raise _bad(f"'{field}' is required: a list of room names", field)
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _bad(f"'{field}' must be a list of room names", field)
    if required and not value:
        raise _bad(f"'{field}' must name at least one room", field)
    return value


def _string(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise _bad(f"'{field}' is required: a string", field)
    return value


class InternalAPI:
    """An :class:`~hub.transport.http.App` for ``/internal/``, acting on a :class:`Hub`."""

    handles_body_too_large = True

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._token = (hub.config.emit_token or "").encode()

    async def handle_websocket(self, request: Request, websocket: WebSocket) -> None:
        await websocket.reject(Response.json(404, {"error": {"code": "NOT_FOUND"}}))

    async def handle_http(self, request: Request) -> Response:
        try:
            self._authorize(request)
            limit = self.hub.config.max_internal_body
            if request.body_too_large or len(request.body) > limit:
                raise _Refusal(413, "TOO_LARGE", f"request body over {limit} bytes")
            return self._route(request)
        except _Refusal as refusal:
            if refusal.status >= 400 and refusal.status != 401:
                log.info("internal %s %s: %s", request.method, request.path, refusal.message)
            return refusal.response()

    def _authorize(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        if not self._token or not hmac.compare_digest(given, self._token):
            raise _Refusal(401, "UNAUTHORIZED", "missing or wrong bearer token")

    def _route(self, request: Request) -> Response:
        raw = request.raw_path or request.path
        path = raw[len(PREFIX) :] if raw.startswith(PREFIX) else ""
        # Split before decoding, once: a user id may hold an encoded "/" or "%".
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")] if path else []
        method = request.method
        if parts == ["connections"]:
            self._method(method, "GET")
            return self._connections()
        if len(parts) == 3 and parts[0] == "users" and parts[2] == "sockets":
            self._method(method, "GET")
            return self._user_sockets(parts[1])
        if len(parts) == 3 and parts[0] == "users" and parts[2] == "disconnect":
            self._method(method, "POST")
            return Response.json(200, {"disconnected": self.hub.disconnect_user(parts[1])})
        handlers = {
            ("emit",): self._emit,
            ("broadcast",): self._broadcast,
            ("rooms", "join"): self._join,
            ("rooms", "leave"): self._leave,
            ("access", "revoke"): self._revoke,
        }
        handler = handlers.get(tuple(parts))
        if handler is None:
            raise _Refusal(404, "NOT_FOUND", f"no such endpoint: {request.path}")
        self._method(method, "POST")
        if self.hub.shutting_down:
            # Said, not dropped: the caller sends it again, to a node that is up.
            raise _Refusal(503, "SHUTTING_DOWN", "the hub is shutting down; nothing was done")
        return handler(self._json(request))

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            raise _Refusal(
                405, "METHOD_NOT_ALLOWED", f"use {allowed}", headers=(("Allow", allowed),)
            )

    @staticmethod
    def _json(request: Request) -> Any:
        if not request.body:
            raise _bad("a JSON body is required")
        try:
            return json.loads(request.body)
        except (ValueError, RecursionError):
            raise _bad("the body is not valid JSON") from None

    @staticmethod
    def _object(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad("the body must be a JSON object")
        return body

    # -- endpoints -------------------------------------------------------------------------

    @staticmethod
    def _check_item(item: Any, where: str = "") -> tuple[str, Any, list[str], list[str]]:
        """One emit of the body, validated: ``(event, data, to, except)``."""
        if not isinstance(item, dict):
            raise _bad(f"{where}an emit must be a JSON object")
        event = item.get("event")
        if not isinstance(event, str) or not event:
            raise _bad(f"{where}'event' is required: a string", f"{where}event")
        to = _rooms(item.get("to"), f"{where}to", required=True)
        skip = _rooms(item.get("except"), f"{where}except", required=False)
        data = item.get("data")
        if event in EVENTS:
            try:
                data = validate_event(event, data)
            except EventValidationError as exc:
                field = f"{where}data.{exc.field}" if exc.field else f"{where}data"
                raise _Refusal(422, "VALIDATION_ERROR", str(exc), field) from None
        return event, data, to, skip

    def _emit(self, body: Any) -> Response:
        if not isinstance(body, list):
            event, data, to, skip = self._check_item(body)
            return Response.json(
                200, {"delivered": self.hub.emit(event, data, to=to, except_=skip, validated=True)}
            )
        if not body or len(body) > MAX_BATCH:
            raise _bad(f"a batch holds 1 to {MAX_BATCH} emits")
        # Everything is validated first: a batch is sent whole or not at all.
        items = [self._check_item(item, f"[{index}].") for index, item in enumerate(body)]
        results = [
            self.hub.emit(event, data, to=to, except_=skip, validated=True)
            for event, data, to, skip in items
        ]
        return Response.json(
            200, {"delivered": sum(results), "results": [{"delivered": n} for n in results]}
        )

    def _broadcast(self, body: Any) -> Response:
        body = self._object(body)
        event = body.get("event")
        if not isinstance(event, str) or not event:
            raise _bad("'event' is required: a string", "event")
        try:
            delivered = self.hub.broadcast(event, body.get("data"))
        except EventValidationError as exc:
            field = f"data.{exc.field}" if exc.field else "data"
            raise _Refusal(422, "VALIDATION_ERROR", str(exc), field) from None
        return Response.json(200, {"delivered": delivered})

    def _join(self, body: Any) -> Response:
        body = self._object(body)
        user_id = _string(body, "userId")
        rooms = _rooms(body.get("rooms"), "rooms", required=True)
        return Response.json(200, {"sockets": self.hub.join_rooms(user_id, rooms)})

    def _leave(self, body: Any) -> Response:
        body = self._object(body)
        user_id = _string(body, "userId")
        rooms = _rooms(body.get("rooms"), "rooms", required=True)
        return Response.json(200, {"sockets": self.hub.leave_rooms(user_id, rooms)})

    def _revoke(self, body: Any) -> Response:
        body = self._object(body)
        user_id = _string(body, "userId")
        project_id = _string(body, "projectId")
        return Response.json(200, {"sockets": self.hub.revoke_project(user_id, project_id)})

    def _user_sockets(self, user_id: str) -> Response:
        sockets = [
            {
                "id": socket.id,
                "transport": socket.transport,
                "rooms": sorted(socket.rooms),
                "connectedAt": int(socket.handshake.issued * 1000),
                "address": socket.handshake.address,
            }
            for socket in self.hub.sockets_of(user_id)
        ]
        return Response.json(200, {"userId": user_id, "sockets": sockets})

    def _connections(self) -> Response:
        connections = self.hub.connections
        sockets = sum(len(tabs) for tabs in connections.values())
        return Response.json(200, {"users": len(connections), "sockets": sockets})
