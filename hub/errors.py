"""The errors hub raises.

One tree, in the manner of h11::

    ProtocolError                 something broke a protocol's rules
    ├── LocalProtocolError        we misused a protocol object (a bug on our side)
    └── RemoteProtocolError       the peer broke the protocol; carries what to answer
        ├── EngineIOError         ... answered with HTTP 400 and an engine.io error code
        └── SocketIOError         ... answered by closing the Engine.IO session

A peer's mistake is always a :class:`RemoteProtocolError`; it ends that peer's session (and
nothing else) with the answer it carries, and is logged as one line, never as a traceback.
"""

from __future__ import annotations

import enum

__all__ = [
    "EngineErrorCode",
    "EngineIOError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "SocketIOError",
]


class ProtocolError(Exception):
    """Base class of every protocol error hub raises."""


class LocalProtocolError(ProtocolError):
    """A protocol object was used in a way its protocol forbids (a bug in our code)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol.

    Attributes:
        message: what went wrong, one line, safe to send to the peer and to log.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EngineErrorCode(enum.IntEnum):
    """The error codes engine.io answers with, in a JSON body ``{"code": N, "message": M}``."""

    UNKNOWN_TRANSPORT = 0
    UNKNOWN_SID = 1
    BAD_HANDSHAKE_METHOD = 2
    BAD_REQUEST = 3
    FORBIDDEN = 4
    UNSUPPORTED_PROTOCOL_VERSION = 5

    @property
    def message(self) -> str:
        return _ENGINE_ERROR_MESSAGES[self]


_ENGINE_ERROR_MESSAGES = {
    EngineErrorCode.UNKNOWN_TRANSPORT: "Transport unknown",
    EngineErrorCode.UNKNOWN_SID: "Session ID unknown",
    EngineErrorCode.BAD_HANDSHAKE_METHOD: "Bad handshake method",
    EngineErrorCode.BAD_REQUEST: "Bad request",
    EngineErrorCode.FORBIDDEN: "Forbidden",
    EngineErrorCode.UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}


class EngineIOError(RemoteProtocolError):
    """The peer broke Engine.IO.

    Attributes:
        code: the engine.io error code to answer with.
        status: the HTTP status to answer with (400 unless said otherwise).
    """

    def __init__(
        self, code: EngineErrorCode, message: str | None = None, *, status: int = 400
    ) -> None:
        super().__init__(message or code.message)
        self.code = code
        self.status = status


class SocketIOError(RemoteProtocolError):
    """The peer sent a Socket.IO packet that breaks the protocol; its session is closed."""
