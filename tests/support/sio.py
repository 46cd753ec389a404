"""A Socket.IO client made of raw WebSocket frames, for tests that read the wire."""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
import trio
import trio_websocket

from hub.server import Server
from support.wire import WAIT, closed_code, connect_ws, receive

__all__ = ["SID", "RawSio", "Tab", "start_server"]

SID = re.compile(r'\{"sid":"[A-Za-z0-9_-]+"(,"pid":"[A-Za-z0-9_-]+")?\}')
"""The payload of the server's CONNECT (with connection state recovery on, a ``pid`` too)."""


async def start_server(nursery: trio.Nursery, server: Server) -> str:
    """Serve ``server`` on 127.0.0.1 (any free port); returns ``host:port``."""
    host, port = await nursery.start(server.serve, "127.0.0.1", 0)
    return f"{host}:{port}"


class RawSio:
    """One Engine.IO WebSocket session on ``/socket.io/``, spoken frame by frame."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, open_fields: dict[str, Any]) -> None:
        self.ws = ws
        self.open_fields = open_fields

    @classmethod
    async def open(cls, nursery: trio.Nursery, address: str, path: str = "/socket.io/") -> RawSio:
        ws = await connect_ws(nursery, address, path)
        message = await receive(ws)
        assert isinstance(message, str)
        assert message.startswith("0{")
        return cls(ws, json.loads(message[1:]))

    @classmethod
    async def connected(
        cls,
        nursery: trio.Nursery,
        address: str,
        namespace: str = "/",
        auth: dict[str, Any] | None = None,
    ) -> tuple[RawSio, str]:
        """Open a session and CONNECT to ``namespace`` (with ``auth``, if any); returns the
        client and its socket id."""
        client = await cls.open(nursery, address)
        prefix = "" if namespace == "/" else namespace + ","
        await client.send(f"40{prefix}" + ("" if auth is None else json.dumps(auth)))
        answer = await client.receive_text()
        assert answer.startswith(f"40{prefix}"), answer
        assert SID.fullmatch(answer[len(prefix) + 2 :]), answer
        sid = json.loads(answer[len(prefix) + 2 :])["sid"]
        assert isinstance(sid, str)
        return client, sid

    async def send(self, message: str | bytes) -> None:
        await self.ws.send_message(message)

    async def receive(self, timeout: float = WAIT) -> str | bytes:
        return await receive(self.ws, timeout)

    async def receive_text(self, timeout: float = WAIT) -> str:
        message = await receive(self.ws, timeout)
        assert isinstance(message, str), message
        return message

    async def nothing_for(self, seconds: float) -> None:
        """Assert that no message arrives within ``seconds``."""
        with trio.move_on_after(seconds):
            message = await self.ws.get_message()
            raise AssertionError(f"unexpected message {message!r}")

    async def closed_code(self, timeout: float = WAIT) -> int:
        return await closed_code(self.ws, timeout)

    async def aclose(self) -> None:
        await self.ws.aclose()


@attrs.frozen
class Tab:
    """One raw Socket.IO client of a hub user, connected to ``/`` with its token."""

    client: RawSio
    sid: str

    @classmethod
    async def open(cls, nursery: trio.Nursery, address: str, token: str) -> Tab:
        client, sid = await RawSio.connected(nursery, address, auth={"token": token})
        return cls(client, sid)

    async def frame(self) -> str:
        return await self.client.receive_text()

    async def event(self) -> tuple[str, Any]:
        """The next frame, which must be an EVENT: its name and its one argument."""
        message = await self.frame()
        assert message.startswith("42["), message
        name, data = json.loads(message[2:])
        assert isinstance(name, str)
        return name, data
