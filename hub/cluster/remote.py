"""What a node knows of a socket on any node: :class:`RemoteSocket`, and its wire form.

The wire form is the one a Node socket.io node answers a REMOTE_FETCH with (``fetchSockets``)::

    {"id": ..., "handshake": {headers, time, address, xdomain, secure, issued, url, query, auth},
     "rooms": [...], "data": ...}

``issued`` is in milliseconds there and in seconds in :class:`~hub.server.socket.Handshake`.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

import attrs

from hub.cluster.wire import MalformedMessage, room_names
from hub.server.socket import Handshake, Socket

__all__ = ["RemoteSocket"]


def _text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(key): item if isinstance(item, str) else str(item) for key, item in value.items()}


@attrs.frozen
class RemoteSocket:
    """A socket of some node of the cluster, as ``fetch_sockets`` found it.

    Act on it through the broadcast operators: every socket is in the room named after its id,
    so ``server.to(remote.id).emit(...)`` reaches it wherever it is, and
    ``await server.to(remote.id).everywhere.disconnect()`` disconnects it.

    Attributes:
        id: the socket id.
        rooms: the rooms it is in (its id included).
        data: its ``socket.data`` (a copy, through JSON when it is on another node).
        handshake: what its client sent when it connected.
        local: whether it is connected to this node.
    """

    id: str
    rooms: frozenset[str]
    data: Any
    handshake: Handshake
    local: bool = False

    @classmethod
    def of(cls, socket: Socket) -> RemoteSocket:
        """A local socket's description."""
        return cls(
            id=socket.id,
            rooms=frozenset(socket.rooms),
            data=dict(socket.data),
            handshake=socket.handshake,
            local=True,
        )

    @classmethod
    def from_wire(cls, value: Any) -> RemoteSocket:
        """A socket from another node's REMOTE_FETCH answer.

        Raises:
            MalformedMessage: not ``{id, handshake, rooms, data}``.
        """
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            raise MalformedMessage("a fetched socket is an object with a string id")
        handshake = value.get("handshake")
        if not isinstance(handshake, dict):
            handshake = {}
        issued = handshake.get("issued")
        auth = handshake.get("auth")
        return cls(
            id=value["id"],
            rooms=room_names(value.get("rooms")),
            data=value.get("data"),
            handshake=Handshake(
                headers=_text_map(handshake.get("headers")),
                query=_text_map(handshake.get("query")),
                auth=auth if isinstance(auth, dict) else {},
                address=str(handshake.get("address") or ""),
                issued=issued / 1000 if isinstance(issued, int | float) else 0.0,
            ),
        )


def socket_to_wire(socket: Socket) -> dict[str, Any]:
    """A local socket as a Node node describes one in a REMOTE_FETCH answer."""
    handshake = socket.handshake
    url = ""
    request = getattr(getattr(socket.client, "engine", None), "request", None)
    if request is not None:
        url = request.path + (f"?{urllib.parse.urlencode(request.query)}" if request.query else "")
    return {
        "id": socket.id,
        "handshake": {
            "headers": handshake.headers,
            # new Date().toString() of the connection, in UTC
            "time": time.strftime(
                "%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)",
                time.gmtime(handshake.issued),
            ),
            "address": handshake.address,
            "xdomain": "origin" in handshake.headers,
            "secure": False,
            "issued": int(handshake.issued * 1000),
            "url": url,
            "query": handshake.query,
            "auth": handshake.auth,
        },
        "rooms": sorted(socket.rooms),
        "data": socket.data,
    }
