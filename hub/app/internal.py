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
import math
import re
import urllib.parse
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import attrs

from hub.app.events import EVENTS, EventValidationError, validate_event
from hub.app.logs import RedactingFilter, secrets_of
from hub.cluster.errors import ClusterError
from hub.protocol.binary import iter_nodes
from hub.protocol.packets import MAX_DEPTH, RESERVED_EVENTS
from hub.transport.http import Request, Response, WebSocket

if TYPE_CHECKING:
    from hub.app.hub import Hub

__all__ = ["InternalAPI"]

log = logging.getLogger("hub.internal")

PREFIX = "/internal/"
MAX_BATCH = 1000


# A peer's text (a key, a path) in an error must not start a fake log line, nor grow the answer
# without bound: control characters (and the Unicode line separators) are escaped, and a long
# message loses its middle (its end says what is wrong: "...: unknown field").
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MAX_MESSAGE = 200


def _one_line(text: str) -> str:
    text = _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode(), text)
    if len(text) <= _MAX_MESSAGE:
        return text
    return text[: _MAX_MESSAGE - 50] + "…" + text[-49:]


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
        self.detail = message  # whole: the log hides tokens in it before cutting it to length
        self.message = _one_line(message)
        self.field = field if field is None or len(field) <= _MAX_MESSAGE else field[:_MAX_MESSAGE]

    def response(self) -> Response:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return Response.json(self.status, {"error": error}, self.headers)


def _bad(message: str, field: str | None = None) -> _Refusal:
    return _Refusal(400, "BAD_REQUEST", message, field)


# The body becomes Socket.IO packets, which hold only what JSON.parse gives back and hub's own
# decoder takes: no NaN or Infinity, no number out of a double's range, no lone surrogate, at
# most hub.protocol's MAX_DEPTH levels. A body that breaks one is refused before anything is
# sent (a batch is sent whole or not at all), never failed halfway through sending.
def _refuse_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not valid JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError("a number is out of range")
    return value


_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _too_deep() -> _Refusal:
    return _bad(f"the body is nested more than {MAX_DEPTH} levels deep")


def _check_sendable(text: str, value: Any) -> None:
    """Refuse a parsed body that is nested too deeply or holds a lone surrogate.

    Raises:
        _Refusal: 400, saying which.
    """
    # Walk only when the text could hold either (C-speed scans first), and then only the
    # containers for the depth.
    if text.count("[") + text.count("{") > MAX_DEPTH and isinstance(value, list | dict):
        stack: list[tuple[Any, int]] = [(value, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise _too_deep()
            children = node.values() if isinstance(node, dict) else node
            stack += [(child, depth + 1) for child in children if isinstance(child, list | dict)]
    if _SURROGATE.search(text) or _SURROGATE_ESCAPE.search(text):
        strings = [value] if isinstance(value, str) else []
        if isinstance(value, list | dict):
            for _container, key, child in iter_nodes(value):
                strings += [s for s in (key, child) if isinstance(s, str)]
        if any(_SURROGATE.search(string) for string in strings):
            raise _bad("the body holds a lone surrogate (\\ud800-\\udfff): UTF-8 has none")


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


def _event_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"'{field}' is required: a string", field)
    if value in RESERVED_EVENTS:
        raise _bad(f"'{field}' cannot be {value!r}: Socket.IO reserves that name", field)
    return value


def _string(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise _bad(f"'{field}' is required: a string", field)
    return value


@attrs.frozen
class _Sent:
    """What one emit reached; ``error`` when the cluster could not say it all."""

    delivered: int
    error: str | None = None

    def answer(self) -> dict[str, Any]:
        if self.error is None:
            return {"delivered": self.delivered}
        return {"delivered": self.delivered, "complete": False, "error": self.error}


class InternalAPI:
    """An :class:`~hub.transport.http.App` for ``/internal/``, acting on a :class:`Hub`."""

    handles_body_too_large = True

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._token = (hub.config.emit_token or "").encode()
        self._redaction = RedactingFilter(secrets_of(hub.config))

    async def handle_websocket(self, request: Request, websocket: WebSocket) -> None:
        await websocket.reject(Response.json(404, {"error": {"code": "NOT_FOUND"}}))

    async def handle_http(self, request: Request) -> Response:
        try:
            self._authorize(request)
            limit = self.hub.config.max_internal_body
            if request.body_too_large or len(request.body) > limit:
                raise _Refusal(413, "TOO_LARGE", f"request body over {limit} bytes")
            return await self._route(request)
        except _Refusal as refusal:
            if refusal.status >= 400 and refusal.status != 401:
                path = self._loggable(request.path)
                log.info("internal %s %s: %s", request.method, path, self._loggable(refusal.detail))
            return refusal.response()

    def _loggable(self, text: str) -> str:
        """A peer's text for the log: tokens and secrets hidden first, then cut to length. Cut
        first, a token would lose its middle, and its two ends, which no longer look like a
        token, would pass the log's own redaction (:mod:`hub.app.logs`)."""
        return _one_line(self._redaction.redact(text))

    def _authorize(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        if not self._token or not hmac.compare_digest(given, self._token):
            raise _Refusal(401, "UNAUTHORIZED", "missing or wrong bearer token")

    async def _route(self, request: Request) -> Response:
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
            disconnected = await self._cluster(self.hub.disconnect_user_everywhere(parts[1]))
            return Response.json(200, {"disconnected": disconnected})
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
        return await handler(self._json(request))

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            raise _Refusal(
                405, "METHOD_NOT_ALLOWED", f"use {allowed}", headers=(("Allow", allowed),)
            )

    @staticmethod
    def _json(request: Request) -> Any:
        body = request.body
        if not body:
            raise _bad("a JSON body is required")
        try:
            # As json.loads(bytes) reads it: UTF-8, -16 or -32.
            text = body.decode(json.detect_encoding(body), "surrogatepass")
            value = _JSON.decode(text)
        except ValueError:
            raise _bad("the body is not valid JSON") from None
        except RecursionError:
            raise _too_deep() from None
        _check_sendable(text, value)
        return value

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
        event = _event_name(item.get("event"), f"{where}event")
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

    async def _cluster(self, operation: Awaitable[int]) -> int:
        """Await a cluster-wide operation; a cluster failure (Redis down, a node silent) is
        a 503 that says what was done: this node's part."""
        try:
            return await operation
        except ClusterError as exc:
            raise _Refusal(
                503, "CLUSTER_UNAVAILABLE", f"{exc}; this node's part was done"
            ) from None

    async def _deliver(self, event: str, data: Any, to: list[str], skip: list[str]) -> _Sent:
        """One emit: on every node with a cluster (counted across it), else on this one."""
        if not self.hub.clustered:
            return _Sent(self.hub.emit(event, data, to=to, except_=skip, validated=True))
        try:
            return _Sent(await self.hub.emit_everywhere(event, data, to=to, except_=skip))
        except ClusterError as exc:
            # Delivered on this node (and maybe others): said, with what is known.
            return _Sent(exc.partial if isinstance(exc.partial, int) else 0, str(exc))

    async def _emit(self, body: Any) -> Response:
        stats = self.hub.stats
        if not isinstance(body, list):
            event, data, to, skip = self._check_item(body)
            sent = await self._deliver(event, data, to, skip)
            stats.emitted(sent.delivered)
            return Response.json(200, sent.answer())
        if not body or len(body) > MAX_BATCH:
            raise _bad(f"a batch holds 1 to {MAX_BATCH} emits")
        # Everything is validated first: a batch is sent whole or not at all.
        items = [self._check_item(item, f"[{index}].") for index, item in enumerate(body)]
        if self.hub.clustered:
            results = [await self._deliver(*item) for item in items]
        else:
            # On one node the emits are written at once: one write per recipient for all.
            with self.hub.server.main.adapter.batched():
                results = [
                    _Sent(self.hub.emit(event, data, to=to, except_=skip, validated=True))
                    for event, data, to, skip in items
                ]
        for sent in results:
            stats.emitted(sent.delivered)
        answer: dict[str, Any] = {
            "delivered": sum(sent.delivered for sent in results),
            "results": [sent.answer() for sent in results],
        }
        if any(sent.error for sent in results):
            answer["complete"] = False
        return Response.json(200, answer)

    async def _broadcast(self, body: Any) -> Response:
        body = self._object(body)
        event = _event_name(body.get("event"), "event")
        try:
            delivered = self.hub.broadcast(event, body.get("data"))
        except EventValidationError as exc:
            field = f"data.{exc.field}" if exc.field else "data"
            raise _Refusal(422, "VALIDATION_ERROR", str(exc), field) from None
        self.hub.stats.emitted(delivered)
        return Response.json(200, {"delivered": delivered})

    async def _join(self, body: Any) -> Response:
        body = self._object(body)
        user_id = _string(body, "userId")
        rooms = _rooms(body.get("rooms"), "rooms", required=True)
        sockets = await self._cluster(self.hub.join_rooms_everywhere(user_id, rooms))
        return Response.json(200, {"sockets": sockets})

    async def _leave(self, body: Any) -> Response:
        body = self._object(body)
        user_id = _string(body, "userId")
        rooms = _rooms(body.get("rooms"), "rooms", required=True)
        sockets = await self._cluster(self.hub.leave_rooms_everywhere(user_id, rooms))
        return Response.json(200, {"sockets": sockets})

    async def _revoke(self, body: Any) -> Response:
        body = self._object(body)
        user_id = _string(body, "userId")
        project_id = _string(body, "projectId")
        sockets = await self._cluster(self.hub.revoke_project_everywhere(user_id, project_id))
        return Response.json(200, {"sockets": sockets})

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
