"""One input per call for each decoder: built from a :class:`random.Random`, fed, checked.

The long run (``python -m fuzz``) calls these with ``random.Random(f"{seed}:{name}:{index}")``,
so any input it reports is rebuilt from its seed and index; the tests call them with hypothesis'
``st.randoms()``, which shrinks a failing input.

Each builder mixes three kinds of input: valid (it must round-trip), mutated valid (most of the
run: it reaches the deep branches), and raw random bytes.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from fuzz import live, mutate, targets
from hub.engineio import encode_packet

__all__ = [
    "PURE",
    "client_close_codes",
    "emit_endpoint",
    "engineio_packet",
    "engineio_payload",
    "engineio_session",
    "http",
    "http_session_body",
    "socketio_packet",
    "socketio_wire",
    "websocket",
]


def engineio_packet(rng: random.Random) -> None:
    """One WebSocket message into :func:`hub.engineio.decode_packet`."""
    message = encode_packet(mutate.engine_packet(rng))
    roll = rng.random()
    if roll < 0.6:
        mutator = mutate.Mutator(rng, max_size=512)
        message = mutator(message) if isinstance(message, bytes) else mutator.text(message)
    elif roll < 0.75:
        message = rng.randbytes(rng.randrange(16)).decode("latin-1")
    targets.engine_packet(message)


def engineio_payload(rng: random.Random) -> None:
    """One polling body, whole and in random chunks, into the payload decoder."""
    body = mutate.payload(rng)
    roll = rng.random()
    if roll < 0.7:
        body = mutate.Mutator(rng)(body, mutate.payload(rng))
    elif roll < 0.8:
        body = rng.randbytes(rng.randrange(64))
    if len(body) < 64 and rng.random() < 0.2:
        cuts = list(range(1, len(body)))  # one byte at a time
    else:
        cuts = [rng.randrange(len(body) + 1) for _ in range(rng.randrange(5))]
    limit = rng.choice([len(body), max(1, len(body) - 1), len(body) // 2 + 1, 1_000_000])
    targets.engine_payload(body, cuts, limit)


def engineio_session(rng: random.Random) -> None:
    """A random sequence of calls into one :class:`hub.engineio.Session`."""
    targets.engine_session(rng, steps=rng.randrange(1, 60))


def socketio_packet(rng: random.Random) -> None:
    """The messages of a few Socket.IO packets, one changed, into one decoder."""
    messages = mutate.sio_messages(rng)
    mutator = mutate.Mutator(rng, max_size=2048)
    for _ in range(rng.randrange(1, 3)):
        op = rng.randrange(6)
        i = rng.randrange(len(messages))
        if op <= 2:
            message = messages[i]
            messages[i] = mutator.text(message) if isinstance(message, str) else mutator(message)
        elif op == 3:
            noise: str | bytes = rng.randbytes(3) if rng.random() < 0.5 else mutate.text(rng)
            messages.insert(i, noise)
        elif op == 4 and len(messages) > 1:
            del messages[i]
        else:
            j = rng.randrange(len(messages))
            messages[i], messages[j] = messages[j], messages[i]
    targets.socketio_messages(messages, rng.choice([0, 1, 2, 10]))


PURE: dict[str, Callable[[random.Random], None]] = {
    "engineio-packet": engineio_packet,
    "engineio-payload": engineio_payload,
    "engineio-session": engineio_session,
    "socketio-packet": socketio_packet,
}
"""The sans-I/O decoders, by campaign name."""


# --- behind the listener --------------------------------------------------------------------


def http(rng: random.Random, target: live.HttpTarget) -> live.HttpAnswer:
    """Raw bytes on a new connection: requests (pipelined, chunked...) mutated, or noise."""
    data = b"".join(mutate.http_request(rng) for _ in range(rng.randrange(1, 3)))
    roll = rng.random()
    if roll < 0.75:
        data = mutate.Mutator(rng, max_size=20_000)(data, mutate.http_request(rng))
    elif roll < 0.85:
        data = rng.randbytes(rng.randrange(1, 256))
    elif roll < 0.9:
        # A head over the listener's limit, in one piece.
        data = data.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n", 1)
    return target.send(data)


def http_session_body(rng: random.Random, target: live.HttpTarget) -> live.HttpAnswer:
    """A mutated POST body on a live polling session (the payload decoder behind h11)."""
    sid = target.open_session()
    body = mutate.payload(rng)
    if rng.random() < 0.8:
        body = mutate.Mutator(rng)(body, mutate.payload(rng))
    head = (
        f"POST /engine.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nContent-Type: text/plain;charset=UTF-8\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer = target.send(head + body)
    assert answer.statuses in ((200,), (400,), (413,)), answer
    return answer


def _random_frame(rng: random.Random) -> bytes:
    opcode = rng.choice([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, rng.randrange(16)])
    data = rng.choice([b"4x", b"\xff\xfe", b"", rng.randbytes(rng.randrange(200))])
    if opcode == 0x8 and rng.random() < 0.5:
        data = struct.pack("!H", rng.choice([999, 1004, 1005, 1006, 1015, 2999, 5000])) + data
    return mutate.frame(
        rng,
        opcode,
        data,
        fin=rng.random() < 0.8,
        rsv=rng.choice([0, 0, 0, rng.randrange(8)]),
        masked=rng.random() < 0.9,
        minimal=rng.random() < 0.8,
    )


def client_close_codes(frames: bytes) -> frozenset[int]:
    """The close codes in the valid Close frames at the start of ``frames`` (the server echoes
    such a code), parsed as a server parses them."""
    protocol = FrameProtocol(client=False, extensions=[])
    protocol.receive_bytes(frames)
    codes = set()
    try:
        for received in protocol.received_frames():
            if received.opcode is Opcode.CLOSE:
                codes.add(int(received.payload[0]))
    except ParseFailed:
        pass
    return frozenset(codes)


def websocket(rng: random.Random, target: live.WsTarget) -> live.WsOutcome:
    """Client frames after a valid upgrade: valid, mutated, or with random header fields."""
    frames = mutate.ws_frames(rng)
    roll = rng.random()
    if roll < 0.6:
        frames = mutate.Mutator(rng)(frames, mutate.ws_frames(rng))
    elif roll < 0.85:
        frames = b"".join(_random_frame(rng) for _ in range(rng.randrange(1, 4)))
    return target.send(frames, client_close_codes(frames))


def socketio_wire(rng: random.Random, target: live.WsTarget) -> live.WsOutcome:
    """A CONNECT then Socket.IO packets (some mutated) in WebSocket frames to the Socket.IO
    server: the decoder behind the listener, the engine and the namespaces."""
    messages: list[str | bytes] = ["40", *mutate.sio_messages(rng)]
    mutator = mutate.Mutator(rng, max_size=2048)
    if rng.random() < 0.8:
        i = rng.randrange(1, len(messages))
        message = messages[i]
        messages[i] = mutator.text(message) if isinstance(message, str) else mutator(message)
    frames = b""
    for message in messages:
        if isinstance(message, str):
            frames += mutate.frame(rng, 0x1, b"4" + message.encode())
        else:
            frames += mutate.frame(rng, 0x2, message)
    return target.send(frames)


_EMIT_PATHS = ["emit"] * 14 + ["broadcast", "broadcast", "rooms/join", "rooms/leave"]


def emit_endpoint(rng: random.Random, target: live.EmitTarget) -> int:
    """A JSON body (valid, broken or noise) to an endpoint of the internal API.

    Returns:
        The HTTP status.
    """
    path = rng.choice(_EMIT_PATHS)
    document = mutate.json_document(rng)
    if path.startswith("rooms/") and isinstance(document, dict):
        document["userId"] = rng.choice(["alice", "bob", "nobody", 5, None])
        document["rooms"] = document.pop("to", None)
    body = mutate.dumps(document, rng)
    roll = rng.random()
    if roll < 0.35:
        body = mutate.Mutator(rng)(body, mutate.dumps(mutate.json_document(rng), rng))
    elif roll < 0.4:
        body = rng.randbytes(rng.randrange(64))
    elif roll < 0.45:
        depth = rng.choice([127, 128, 129, 900, 980, 5000])
        body = b'{"event":"x","to":["user:alice"],"data":' + b"[" * depth + b"]" * depth + b"}"
    status, _answer = target.post(path, body)
    return status
