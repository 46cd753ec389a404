"""The Socket.IO server: namespaces, sockets, rooms, broadcasts, acks."""

from hub.server.broadcast import BroadcastOperator
from hub.server.namespace import Namespace
from hub.server.recovery import RecoveryOptions
from hub.server.server import Server, ServerOptions
from hub.server.socket import AckTimeout, ConnectionRefused, Handshake, Socket

__all__ = [
    "AckTimeout",
    "BroadcastOperator",
    "ConnectionRefused",
    "Handshake",
    "Namespace",
    "RecoveryOptions",
    "Server",
    "ServerOptions",
    "Socket",
]
