"""hub: a Socket.IO server for Python on Trio."""

from hub.server import (
    AckTimeout,
    BroadcastOperator,
    ConnectionRefused,
    Handshake,
    Namespace,
    RecoveryOptions,
    Server,
    ServerOptions,
    Socket,
)

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
