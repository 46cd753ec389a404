"""The WebSocket frames a client sends (RFC 6455 section 5), read by the server, sans-I/O.

The server writes its own frames (:func:`hub.engineio.outgoing.encode_frame`); this reads the
client's: bytes in (:meth:`FrameReader.receive_data`), whole messages and control frames out
(:meth:`FrameReader.next_event`). No socket, no clock. A connection keeps one reader: a few
slots and, between reads, nothing but the bytes of a frame that has not fully arrived.

Rules (RFC 6455 section 5 unless said otherwise):

1. "The server MUST close the connection upon receiving a frame that is not masked" (5.1).
2. RSV1-3 "MUST be 0 unless an extension is negotiated" (5.2); none is (no permessage-deflate).
3. Opcodes: 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong; the others are
   reserved: a protocol error.
4. Payload length: 7 bits, or 126 then 16 bits, or 127 then 64 bits whose most significant bit
   is 0; "the minimal number of bytes MUST be used to encode the length".
5. Control frames "MUST have a payload length of 125 bytes or less and MUST NOT be fragmented";
   they may come between the fragments of a message (5.4). A ping is answered by the caller
   with a pong carrying the same payload (5.5.2); a pong is ignored (5.5.3).
6. Fragmentation (5.4): a text or binary frame without FIN starts a message, continuation
   frames carry the rest, the one with FIN ends it; a continuation outside a message, or a new
   message inside one, is a protocol error.
7. A message over ``max_message`` bytes is refused (1009) as soon as a frame header announces
   it, before its payload is buffered.
8. A text message that is not UTF-8 "MUST _Fail the WebSocket Connection_" (8.1) with 1007.
9. Close (5.5.1, 7.4): an empty payload means no status (1005 to the application); a 1-byte
   payload, or a code that may not be sent on the wire (below 1000, 1004-1006, 1015,
   1016-2999, 5000 and above), is a protocol error; the reason must be UTF-8 (1007).

A broken rule raises :class:`FrameError` carrying the close code to answer with.
"""

from __future__ import annotations

import attrs

from hub.errors import RemoteProtocolError

__all__ = ["Close", "FrameError", "FrameReader", "Ping"]

_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_PROTOCOL_ERROR, _INVALID_DATA, _TOO_BIG = 1002, 1007, 1009
# The one-character text messages, made once: a heartbeat's pong is the text "3".
_ASCII = tuple(chr(code) for code in range(128))


class FrameError(RemoteProtocolError):
    """The client broke RFC 6455; the connection is failed with a close frame.

    Attributes:
        code: the close code to send (1002 protocol error, 1007 invalid data, 1009 too big).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen(slots=True)
class Ping:
    """A ping; answer it with a pong carrying ``payload``."""

    payload: bytes


@attrs.frozen(slots=True)
class Close:
    """The client's close frame (``code`` 1005 when it carried none)."""

    code: int
    reason: str = ""


def _valid_close_code(code: int) -> bool:
    # RFC 6455 7.4.1/7.4.2 and the IANA registry: 1004 is reserved; 1005, 1006 and 1015 are
    # for applications to report, never sent; 1016-2999 are for the RFC's extensions; 3000-4999
    # are for libraries and applications.
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _unmask(mask: bytes | bytearray, payload: bytes | bytearray) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (RFC 6455 5.3), in one big-int XOR."""
    size = len(payload)
    if size == 0:
        return b""
    key = bytes(mask) * ((size + 3) >> 2)
    value = int.from_bytes(payload, "little") ^ int.from_bytes(key[:size], "little")
    return value.to_bytes(size, "little")


def _text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(_INVALID_DATA, "text message is not valid UTF-8") from None


class FrameReader:
    """Reads the frames of one client connection.

    Args:
        max_message: the most bytes one message (all its fragments) may have.
    """

    __slots__ = ("_buffer", "_max_message", "_parts", "_size", "_text")

    def __init__(self, *, max_message: int) -> None:
        # Bytes received and not parsed yet: ``b""`` between frames (the usual case: a frame
        # arrives whole in one read and is parsed from the received bytes without a copy), a
        # bytearray while a frame arrives in pieces.
        self._buffer: bytes | bytearray = b""
        self._max_message = max_message
        self._parts: list[bytes] | None = None  # the fragments of a message so far
        self._size = 0
        self._text = False

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the client (any amount, frames may be cut anywhere)."""
        buffer = self._buffer
        if not buffer:
            self._buffer = data
        elif isinstance(buffer, bytearray):
            buffer += data
        else:
            self._buffer = bytearray(buffer) + data

    def next_event(self) -> str | bytes | Ping | Close | None:
        """The next whole message (``str`` text, ``bytes`` binary), ping or close.

        Returns:
            None when more bytes are needed.

        Raises:
            FrameError: the client broke the protocol (the reader is then of no further use).
        """
        while True:
            buffer = self._buffer
            available = len(buffer)
            if available < 2:
                return None
            first, second = buffer[0], buffer[1]
            if not second & 0x80:
                raise FrameError(_PROTOCOL_ERROR, "client frame is not masked")
            if first & 0x70:
                raise FrameError(_PROTOCOL_ERROR, "reserved bits set without an extension")
            opcode = first & 0x0F
            final = first & 0x80
            length = second & 0x7F
            start = 2
            if length == 126:
                if available < 4:
                    return None
                length = int.from_bytes(buffer[2:4], "big")
                if length < 126:
                    raise FrameError(_PROTOCOL_ERROR, "payload length not minimally encoded")
                start = 4
            elif length == 127:
                if available < 10:
                    return None
                length = int.from_bytes(buffer[2:10], "big")
                if length >> 63:
                    raise FrameError(_PROTOCOL_ERROR, "64-bit payload length with the top bit set")
                if length < 1 << 16:
                    raise FrameError(_PROTOCOL_ERROR, "payload length not minimally encoded")
                start = 10
            self._check(opcode, final, length)
            end = start + 4 + length
            if available < end:
                return None
            if length == 1 and opcode == _TEXT and final:
                # The fast path of a heartbeat: a pong is the one-byte text frame "3".
                char = buffer[start + 4] ^ buffer[start]
                self._consume(buffer, end, available)
                if char < 0x80:
                    return _ASCII[char]
                raise FrameError(_INVALID_DATA, "text message is not valid UTF-8")
            payload = _unmask(buffer[start : start + 4], buffer[start + 4 : end])
            self._consume(buffer, end, available)
            event = self._frame(opcode, final, payload)
            if event is not None:
                return event

    def _consume(self, buffer: bytes | bytearray, end: int, available: int) -> None:
        if end == available:
            self._buffer = b""
        elif isinstance(buffer, bytearray):
            del buffer[:end]  # cheap: a bytearray drops its head in place
        else:
            self._buffer = buffer[end:]

    def _check(self, opcode: int, final: int, length: int) -> None:
        """Rules 3, 5, 6 and 7, from the frame header alone."""
        if opcode >= _CLOSE:
            if opcode > _PONG:
                raise FrameError(_PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
            if not final:
                raise FrameError(_PROTOCOL_ERROR, "fragmented control frame")
            if length > 125:
                raise FrameError(_PROTOCOL_ERROR, "control frame payload over 125 bytes")
            return
        if opcode > _BINARY:
            raise FrameError(_PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if opcode == _CONTINUATION:
            if self._parts is None:
                raise FrameError(_PROTOCOL_ERROR, "continuation frame outside a message")
            size = self._size + length
        else:
            if self._parts is not None:
                raise FrameError(_PROTOCOL_ERROR, "new message before the end of the last one")
            size = length
        if size > self._max_message:
            raise FrameError(_TOO_BIG, "message too big")

    def _frame(self, opcode: int, final: int, payload: bytes) -> str | bytes | Ping | Close | None:
        """One checked, unmasked frame: an event, or None (a pong, a fragment)."""
        if opcode in (_TEXT, _BINARY):
            if final:
                return _text(payload) if opcode == _TEXT else payload
            self._parts = [payload]
            self._size = len(payload)
            self._text = opcode == _TEXT
            return None
        if opcode == _CONTINUATION:
            parts = self._parts
            assert parts is not None  # checked by _check
            parts.append(payload)
            self._size += len(payload)
            if not final:
                return None
            self._parts = None
            self._size = 0
            message = b"".join(parts)
            return _text(message) if self._text else message
        if opcode == _PING:
            return Ping(payload)
        if opcode == _PONG:
            return None
        return _close(payload)


def _close(payload: bytes) -> Close:
    if not payload:
        return Close(1005)
    if len(payload) == 1:
        raise FrameError(_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = int.from_bytes(payload[:2], "big")
    if not _valid_close_code(code):
        raise FrameError(_PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(_INVALID_DATA, "close reason is not valid UTF-8") from None
    return Close(code, reason)
