"""python-socketio 5 under test: its ASGI app under uvicorn (uvloop, httptools, websockets).
With ``--jwt-secret``, the application mode: pyjwt checks the token at connect, and a small
ASGI app beside it serves ``POST /internal/emit``. Behaviour: see ``common.py``."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import jwt
import socketio
import uvicorn

from bench.servers.common import (
    BACKLOG,
    PING_INTERVAL,
    PING_TIMEOUT,
    ROOM,
    Burst,
    arguments,
    pause,
    ticks,
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
MAX_BODY = 1_000_000  # as hub's internal API


def build(
    ping_interval: float = PING_INTERVAL,
    ping_timeout: float = PING_TIMEOUT,
    jwt_secret: str | None = None,
) -> socketio.AsyncServer:
    sio = socketio.AsyncServer(
        async_mode="asgi",
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        http_compression=False,
    )

    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
        await sio.enter_room(sid, ROOM)

    key = jwt_secret or ""  # used only when there is one

    async def connect_with_token(sid: str, environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError({"code": "TOKEN_MISSING"})
        try:
            claims = jwt.decode(token, key, algorithms=["HS256"])
        except jwt.ExpiredSignatureError:
            raise socketio.exceptions.ConnectionRefusedError({"code": "TOKEN_EXPIRED"}) from None
        except jwt.PyJWTError:
            raise socketio.exceptions.ConnectionRefusedError({"code": "TOKEN_INVALID"}) from None
        await sio.enter_room(sid, f"user:{claims['sub']}")

    async def burst(sid: str, request: Burst) -> str:
        loop = asyncio.get_running_loop()
        wait, started = pause(request), loop.time()
        for index, payload in enumerate(ticks(request)):
            await sio.emit("tick", payload, room=ROOM)
            # emit only queues; let the sockets' writer tasks run (paced: until the next slot)
            await asyncio.sleep(max(0.0, started + (index + 1) * wait - loop.time()))
        return "done"

    sio.on("connect", connect_with_token if jwt_secret else connect)
    sio.on("burst", burst)
    return sio


def emit_api(sio: socketio.AsyncServer, token: str) -> Callable[[Scope, Receive, Send], Any]:
    """``POST /internal/emit`` as a python-socketio user would write it, in plain ASGI."""
    expected = token.encode()

    async def reply(send: Send, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    def members(rooms: list[str]) -> set[str]:
        namespace = sio.manager.rooms.get("/", {})
        return {sid for room in rooms for sid in namespace.get(room, {})}

    def check(item: Any) -> tuple[str, Any, list[str], list[str]]:
        if not isinstance(item, dict) or not isinstance(item.get("event"), str):
            raise ValueError("an emit is {event, data, to: [rooms], except: [rooms]}")
        to, skip = item.get("to"), item.get("except") or []
        if not isinstance(to, list) or not to or not isinstance(skip, list):
            raise ValueError("'to' and 'except' are lists of rooms")
        return item["event"], item.get("data"), to, skip

    async def emit(event: str, data: Any, to: list[str], skip: list[str]) -> int:
        skipped = list(members(skip))
        await sio.emit(event, data, to=to, skip_sid=skipped or None)
        return len(members(to).difference(skipped))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/internal/emit" or scope["method"] != "POST":
            return await reply(send, 404, {"error": {"code": "NOT_FOUND"}})
        authorization = dict(scope["headers"]).get(b"authorization", b"")
        if not hmac.compare_digest(authorization, b"Bearer " + expected):
            return await reply(send, 401, {"error": {"code": "UNAUTHORIZED"}})
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY:
                return await reply(send, 413, {"error": {"code": "TOO_LARGE"}})
        try:
            request = json.loads(body)
            # Validated whole first, as hub does: a batch is sent whole or not at all.
            items = [check(item) for item in (request if isinstance(request, list) else [request])]
        except ValueError as exc:
            return await reply(send, 400, {"error": {"code": "BAD_REQUEST", "message": str(exc)}})
        results = [await emit(*item) for item in items]
        answer: dict[str, Any] = {"delivered": sum(results)}
        if isinstance(request, list):
            answer["results"] = [{"delivered": n} for n in results]
        await reply(send, 200, answer)

    return app


def main() -> None:
    args = arguments("python-socketio, as the benchmark serves it")
    sio = build(args.ping_interval, args.ping_timeout, args.jwt_secret)
    other = emit_api(sio, args.emit_token) if args.emit_token else None
    config = uvicorn.Config(
        socketio.ASGIApp(sio, other_asgi_app=other),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets",
        ws_ping_interval=None,  # Engine.IO pings; no second heartbeat
        ws_per_message_deflate=False,
        lifespan="off",
        backlog=BACKLOG,
        access_log=False,
        log_level="warning",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
