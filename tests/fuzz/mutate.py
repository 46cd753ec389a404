"""Seeded generators of valid input, and a mutator that breaks it.

Random bytes rarely get past a decoder's first byte; a mutated valid packet reaches its deep
branches. Every function here takes a :class:`random.Random`, so that a run is reproduced by
its seed (the long run) or shrunk by hypothesis (``st.randoms()`` in the tests).
"""

from __future__ import annotations

import base64
import json
import random
import struct
from typing import Any

from hub.engineio import Packet as EnginePacket
from hub.engineio import PacketType as EngineType
from hub.engineio import encode_payload
from hub.protocol import Ack, Connect, ConnectError, Disconnect, Event, encode
from hub.protocol import Packet as SioPacket

__all__ = [
    "Mutator",
    "dumps",
    "engine_packet",
    "frame",
    "http_request",
    "json_document",
    "json_value",
    "payload",
    "sio_messages",
    "sio_packet",
    "text",
    "ws_frames",
]

# Characters that matter to some decoder, and some that take 2, 3 and 4 bytes in UTF-8.
_CHARS = '0123456789abcxyz-/,.:[]{}"\\ \x1e\x00\n\r\té€𝄞\u2028'
_WORDS = [
    "probe",
    "ping",
    "message",
    "connect",
    "disconnect",
    "/admin",
    "/custom",
    "_placeholder",
    "null",
    "true",
    "false",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "9007199254740991",
    "9007199254740992",
    "\\ud800",
    "\\udc00",
    "\\u0000",
    '{"_placeholder":true,"num":0}',
    '{"_placeholder":true,"num":1}',
]


def text(rng: random.Random, max_size: int = 12) -> str:
    """A short string, mostly of characters that some decoder gives a meaning."""
    if rng.random() < 0.3:
        return rng.choice(_WORDS)
    return "".join(rng.choice(_CHARS) for _ in range(rng.randrange(max_size + 1)))


def json_value(rng: random.Random, depth: int = 3, *, binary: bool = False) -> Any:
    """A JSON value (with ``bytes`` leaves when ``binary``), at most ``depth`` levels deep."""
    kind = rng.randrange(9 if depth > 0 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, -1, 2**31, 2**53 - 1, -(2**63), rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.5, -1.25, 1e300, 5e-324, rng.uniform(-1e6, 1e6)])
    if kind in (4, 5):
        return text(rng)
    if kind == 6:
        return rng.randbytes(rng.randrange(6)) if binary else text(rng)
    if kind == 7:
        return [json_value(rng, depth - 1, binary=binary) for _ in range(rng.randrange(4))]
    return {
        text(rng, 6).replace("_placeholder", "p"): json_value(rng, depth - 1, binary=binary)
        for _ in range(rng.randrange(4))
    }


# --- Engine.IO ------------------------------------------------------------------------------


def engine_packet(rng: random.Random) -> EnginePacket:
    """A valid Engine.IO packet (text without the record separator, or a binary message)."""
    if rng.random() < 0.2:
        return EnginePacket(EngineType.MESSAGE, rng.randbytes(rng.randrange(12)))
    kind = EngineType(rng.randrange(7))
    data = "probe" if kind in (EngineType.PING, EngineType.PONG) and rng.random() < 0.3 else ""
    if kind is EngineType.MESSAGE or rng.random() < 0.2:
        data = text(rng).replace("\x1e", "")
    return EnginePacket(kind, data)


def payload(rng: random.Random) -> bytes:
    """A valid HTTP long-polling body."""
    packets = [engine_packet(rng) for _ in range(rng.randrange(1, 5))]
    return encode_payload(packets).encode()


# --- Socket.IO ------------------------------------------------------------------------------

_NAMESPACES = ["/", "/", "/", "/custom", "/admin", "/é"]
_RESERVED = {"connect", "connect_error", "disconnect", "disconnecting", "newListener"}


def sio_packet(rng: random.Random) -> SioPacket:
    """A valid Socket.IO packet (binary attachments included)."""
    namespace = rng.choice(_NAMESPACES)
    ack_id = rng.choice([None, 0, 1, rng.randrange(2**53)])
    kind = rng.randrange(5)
    args = tuple(json_value(rng, binary=True) for _ in range(rng.randrange(4)))
    if kind == 0:
        auth = rng.choice([None, {}, {"token": text(rng)}])
        return Connect(namespace, auth)
    if kind == 1:
        return Disconnect(namespace)
    if kind == 2:
        name = text(rng)
        return Event("x" if name in _RESERVED else name, args, namespace, ack_id)
    if kind == 3:
        return Ack(args, ack_id or 0, namespace)
    return ConnectError(rng.choice([text(rng), {"message": text(rng)}]), namespace)


def sio_messages(rng: random.Random) -> list[str | bytes]:
    """The Engine.IO messages of a few valid Socket.IO packets, in order."""
    messages: list[str | bytes] = []
    for _ in range(rng.randrange(1, 4)):
        messages += encode(sio_packet(rng))
    return messages


# --- HTTP -----------------------------------------------------------------------------------

_QUERIES = [
    "EIO=4&transport=polling",
    "EIO=4&transport=websocket",
    "EIO=3&transport=polling",
    "EIO=4&transport=polling&sid=unknown",
    "EIO=4&transport=polling&t=N1a2b3",
    "",
]
_PATHS = ["/engine.io/", "/socket.io/", "/", "/engine.io", "/%2e%2e/", "/socket.io/x"]
_METHODS = ["GET", "GET", "POST", "POST", "OPTIONS", "PUT", "HEAD", "DELETE", "CONNECT"]


def http_request(rng: random.Random, body: bytes | None = None) -> bytes:
    """One valid HTTP/1.1 request to one of the conformance app's paths."""
    method = rng.choice(_METHODS)
    query = rng.choice(_QUERIES)
    target = rng.choice(_PATHS) + ("?" + query if query else "")
    if method == "CONNECT":
        target = "127.0.0.1:80"
    headers = [("Host", "127.0.0.1")]
    if rng.random() < 0.3:
        headers.append(("Origin", rng.choice(["http://localhost:3000", "null", "http://evil"])))
    if rng.random() < 0.2:
        headers += [
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", base64.b64encode(rng.randbytes(16)).decode()),
            ("Sec-WebSocket-Version", rng.choice(["13", "8"])),
        ]
    if rng.random() < 0.2:
        headers.append(("Connection", rng.choice(["close", "keep-alive"])))
    if body is None and method in ("POST", "PUT"):
        body = payload(rng)
    head = f"{method} {target} HTTP/1.1\r\n"
    if body is not None:
        if rng.random() < 0.3:
            headers.append(("Transfer-Encoding", "chunked"))
            body = _chunked(rng, body)
        else:
            headers.append(("Content-Length", str(len(body))))
    head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    return head.encode("latin-1") + (body or b"")


def _chunked(rng: random.Random, body: bytes) -> bytes:
    out = b""
    while body:
        size = rng.randrange(1, len(body) + 1)
        out += b"%x\r\n" % size + body[:size] + b"\r\n"
        body = body[size:]
    return out + b"0\r\n\r\n"


# --- WebSocket ------------------------------------------------------------------------------


def frame(
    rng: random.Random,
    opcode: int,
    data: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    minimal: bool = True,
) -> bytes:
    """One WebSocket frame as a client writes it (RFC 6455 5.2); ``minimal=False`` writes its
    length in more bytes than needed (which the RFC forbids)."""
    head = bytes([(0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)])
    mask_bit = 0x80 if masked else 0
    length = len(data)
    if length < 126 and minimal:
        head += bytes([mask_bit | length])
    elif length < 65536 and (minimal or (length < 126 and rng.random() < 0.5)):
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + data
    key = rng.randbytes(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))


def ws_frames(rng: random.Random) -> bytes:
    """A few valid client frames: Engine.IO packets, pings, fragments, maybe a close."""
    out = b""
    for _ in range(rng.randrange(1, 5)):
        choice = rng.randrange(10)
        if choice < 5:
            packet = engine_packet(rng)
            if isinstance(packet.data, bytes):
                out += frame(rng, 0x2, packet.data)
            else:
                out += frame(rng, 0x1, f"{packet.type:d}{packet.data}".encode())
        elif choice < 7:
            out += frame(rng, 0x9, rng.randbytes(rng.randrange(8)))
        elif choice < 9:
            data = ("4" + text(rng)).encode()
            cut = rng.randrange(len(data) + 1)
            out += frame(rng, 0x1, data[:cut], fin=False) + frame(rng, 0x0, data[cut:])
        else:
            code = rng.choice([1000, 1001, 1003, 3000, 4999])
            out += frame(rng, 0x8, struct.pack("!H", code) + text(rng).encode()[:100])
    return out


# --- the mutator ----------------------------------------------------------------------------

_INTERESTING = [0x00, 0x01, 0x1E, 0x7F, 0x80, 0xC0, 0xED, 0xF0, 0xFF, 0x0A, 0x0D, 0x22, 0x5B]
_TOKENS = [
    b"\x1e",
    b"\r\n",
    b"\r\n\r\n",
    b":",
    b",",
    b"-",
    b"/",
    b"b",
    b"%",
    b"?",
    b"&",
    b"=",
    b"\\",
    b'"',
    b"[",
    b"]",
    b"{",
    b"}",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc3",
    b"0\r\n\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 99999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Expect: 100-continue\r\n",
    b"ffffffffffffffff\r\n",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b" HTTP/1.1\r\n",
    *(word.encode() for word in _WORDS),
]


class Mutator:
    """Breaks valid input the way a fuzzer does: flipped bits, interesting bytes and tokens,
    deleted, duplicated and spliced ranges, truncation and runaway repetition.

    Args:
        rng: the source of every choice.
        max_size: mutants are cut to this many bytes.
    """

    def __init__(self, rng: random.Random, *, max_size: int = 4096) -> None:
        self.rng = rng
        self.max_size = max_size

    def __call__(self, data: bytes, other: bytes = b"") -> bytes:
        """``data`` changed by one to four mutations (``other`` is spliced in by some)."""
        buf = bytearray(data)
        for _ in range(self.rng.randrange(1, 5)):
            self._mutate_once(buf, other)
        return bytes(buf[: self.max_size])

    def _mutate_once(self, buf: bytearray, other: bytes) -> None:
        rng = self.rng
        op = rng.randrange(11)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[at % len(buf)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[at % len(buf)] = rng.choice(_INTERESTING)
        elif op == 2:
            buf[at:at] = rng.choice(_TOKENS)
        elif op == 3:
            buf[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif op == 4 and buf:
            del buf[at : at + rng.randrange(1, 17)]
        elif op == 5 and buf:
            piece = buf[at : at + rng.randrange(1, 33)]
            buf[at:at] = piece * rng.randrange(1, 4)
        elif op == 6:
            del buf[at:]
        elif op == 7 and other:
            start = rng.randrange(len(other))
            buf[at:] = other[start : start + rng.randrange(1, 65)]
        elif op == 8:
            token = rng.choice(_TOKENS) or b"x"
            buf[at:at] = token * rng.choice([2, 10, 100, 1000])
        elif op == 9 and buf:
            # A digit changed into a bigger number: lengths, counts, ids, sizes.
            digits = [i for i, b in enumerate(buf) if 0x30 <= b <= 0x39]
            if digits:
                i = rng.choice(digits)
                buf[i : i + 1] = str(rng.choice([0, 9, 10, 99, 2**16, 2**53, 2**64])).encode()
        elif op == 10 and buf:
            a, b = sorted(rng.randrange(len(buf)) for _ in range(2))
            buf[a:b] = bytes(reversed(buf[a:b]))

    def text(self, message: str) -> str:
        """``message`` mutated as UTF-8 and decoded back (a decoder of text gets valid UTF-8:
        wsproto and the payload decoder refuse anything else before it)."""
        return self(message.encode()).decode("utf-8", errors="replace")


def json_document(rng: random.Random) -> Any:
    """A JSON value shaped like an emit-endpoint body, valid or not."""
    item: dict[str, Any] = {}
    if rng.random() < 0.95:
        item["event"] = rng.choice(
            [
                "custom",
                "segmentation-update",
                "notification",
                "connect",
                "disconnect",
                "",
                7,
                None,
                text(rng),
            ]
        )
    if rng.random() < 0.9:
        rooms = ["user:alice", "user:bob", "user:carol", "project:p1", "nobody", "", 3]
        item["to"] = rng.choice(
            [[rng.choice(rooms) for _ in range(rng.randrange(3))], rng.choice(rooms), None]
        )
    if rng.random() < 0.3:
        item["except"] = rng.choice([["user:bob"], "user:alice", [None], {}])
    if rng.random() < 0.8:
        item["data"] = json_value(rng)
    if rng.random() < 0.2:
        item[text(rng, 6)] = json_value(rng)
    if rng.random() < 0.25:
        return [item, *(json_document(rng) for _ in range(rng.randrange(3)))]
    return item


def dumps(value: Any, rng: random.Random) -> bytes:
    """``value`` as JSON bytes, sometimes with NaN, odd spacing or ASCII escapes."""
    body = json.dumps(value, ensure_ascii=rng.random() < 0.5, allow_nan=True)
    if rng.random() < 0.1:
        body = body.replace(",", " ,\n ")
    return body.encode()
