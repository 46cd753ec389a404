"""hub.transport.frames: the client frames the server reads, table-driven.

Valid frames are written by wsproto as a client (an encoder nobody here wrote); broken ones by
hand. Every case is fed whole and also one byte at a time (in the manner of h11's
``tests/test_io.py``): frames may be cut anywhere by TCP.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol

from hub.transport.frames import Close, FrameError, FrameReader, Ping

MAX = 1_000_000
Event = str | bytes | Ping | Close


def client() -> FrameProtocol:
    return FrameProtocol(client=True, extensions=[])


def text(data: str) -> bytes:
    return bytes(client().send_data(data, fin=True))


def binary(data: bytes) -> bytes:
    return bytes(client().send_data(data, fin=True))


def fragments(parts: list[str | bytes]) -> list[bytes]:
    """One message in ``len(parts)`` frames (text or binary after the first part's type)."""
    proto = client()
    return [
        bytes(proto.send_data(part, fin=index == len(parts) - 1))
        for index, part in enumerate(parts)
    ]


def ping(payload: bytes) -> bytes:
    return bytes(client().ping(payload))


def pong(payload: bytes) -> bytes:
    return bytes(client().pong(payload))


def close(code: int | None = None, reason: str = "") -> bytes:
    return bytes(client().close(code, reason or None))


def raw(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: bytes | None = None,
) -> bytes:
    """A frame written by hand, so that it can break the rules wsproto keeps."""
    mask = b"\x37\xfa\x21\x3d"
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    if length is None:
        if len(payload) < 126:
            length = bytes((len(payload),))
        elif len(payload) < 1 << 16:
            length = b"\x7e" + struct.pack("!H", len(payload))
        else:
            length = b"\x7f" + struct.pack("!Q", len(payload))
    second = length[0] | (0x80 if masked else 0)
    head = bytes((first, second)) + length[1:]
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_all(chunks: list[bytes], *, max_message: int = MAX) -> list[Event]:
    reader = FrameReader(max_message=max_message)
    events: list[Event] = []
    for chunk in chunks:
        reader.receive_data(chunk)
        while (event := reader.next_event()) is not None:
            events.append(event)
    return events


def whole(frames: list[bytes]) -> list[bytes]:
    return [b"".join(frames)]


def bytewise(frames: list[bytes]) -> list[bytes]:
    data = b"".join(frames)
    return [data[i : i + 1] for i in range(len(data))]


def per_frame(frames: list[bytes]) -> list[bytes]:
    return frames


FEEDS: list[Callable[[list[bytes]], list[bytes]]] = [whole, bytewise, per_frame]

# (frames, events)
VALID: list[tuple[list[bytes], list[Event]]] = [
    ([text("4hello")], ["4hello"]),
    ([text("3")], ["3"]),  # a heartbeat's pong: the one-byte fast path
    ([text("2"), text("3"), text("4x")], ["2", "3", "4x"]),
    ([text("")], [""]),
    ([text("4é€𝄞")], ["4é€𝄞"]),
    ([text("é")], ["é"]),
    ([binary(b"\x00\x01\xff")], [b"\x00\x01\xff"]),
    ([binary(b"")], [b""]),
    ([binary(b"x")], [b"x"]),
    ([text("4" + "a" * 125)], ["4" + "a" * 125]),  # 16-bit length
    ([binary(b"b" * 65535)], [b"b" * 65535]),
    ([binary(b"c" * 70000)], [b"c" * 70000]),  # 64-bit length
    (fragments(["4frag", "men", "ted €"]), ["4fragmented €"]),
    (fragments([b"\x01", b"", b"\x02"]), [b"\x01\x02"]),
    # "é" cut between two frames: UTF-8 is checked on the whole message.
    ([raw(0x1, b"4\xc3", fin=False), raw(0x0, b"\xa9")], ["4é"]),
    # Control frames between the fragments of a message come out first.
    (
        [raw(0x1, b"4a", fin=False), ping(b"p"), pong(b"q"), raw(0x0, b"b")],
        [Ping(b"p"), "4ab"],
    ),
    ([ping(b"")], [Ping(b"")]),
    ([ping(b"x" * 125)], [Ping(b"x" * 125)]),
    ([pong(b"ignored")], []),
    ([close(1000, "bye")], [Close(1000, "bye")]),
    ([close(1001)], [Close(1001)]),
    ([close(4000, "é")], [Close(4000, "é")]),
    ([raw(0x8, struct.pack("!H", 3000))], [Close(3000)]),
    ([raw(0x8, b"")], [Close(1005)]),
    ([text("4a"), close(1000)], ["4a", Close(1000)]),
]


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize(("frames", "events"), VALID)
def test_valid(
    frames: list[bytes], events: list[Event], feed: Callable[[list[bytes]], list[bytes]]
) -> None:
    assert read_all(feed(frames)) == events


# (frames, close code, fragment of the message)
INVALID: list[tuple[list[bytes], int, str]] = [
    ([raw(0x1, b"4x", masked=False)], 1002, "not masked"),
    ([raw(0x1, b"4x", rsv=4)], 1002, "reserved bits"),
    ([raw(0x1, b"4x", rsv=1)], 1002, "reserved bits"),
    ([raw(0x3, b"")], 1002, "reserved opcode"),
    ([raw(0xB, b"")], 1002, "reserved opcode"),
    ([raw(0x9, b"p", fin=False)], 1002, "fragmented control"),
    ([raw(0x8, b"", fin=False)], 1002, "fragmented control"),
    ([raw(0x9, b"p" * 126)], 1002, "over 125"),
    ([raw(0x0, b"4x")], 1002, "continuation frame outside"),
    ([raw(0x1, b"4a", fin=False), raw(0x1, b"4b")], 1002, "before the end"),
    ([raw(0x1, b"4a", fin=False), raw(0x2, b"4b")], 1002, "before the end"),
    ([raw(0x1, b"4x", length=b"\x7e\x00\x02")], 1002, "minimally"),
    ([raw(0x1, b"4x", length=b"\x7f" + struct.pack("!Q", 2))], 1002, "minimally"),
    ([raw(0x1, b"", length=b"\x7f" + struct.pack("!Q", 1 << 63))], 1002, "top bit"),
    ([raw(0x1, b"4\xff\xfe")], 1007, "UTF-8"),
    ([raw(0x1, b"\xff")], 1007, "UTF-8"),  # one byte: the fast path checks it too
    ([raw(0x1, b"\xc3")], 1007, "UTF-8"),
    ([raw(0x1, b"4\xc3", fin=False), raw(0x0, b"x")], 1007, "UTF-8"),
    ([raw(0x8, b"\x03")], 1002, "1-byte"),
    ([raw(0x8, struct.pack("!H", 999))], 1002, "close code 999"),
    ([raw(0x8, struct.pack("!H", 1004))], 1002, "close code 1004"),
    ([raw(0x8, struct.pack("!H", 1005))], 1002, "close code 1005"),
    ([raw(0x8, struct.pack("!H", 1006))], 1002, "close code 1006"),
    ([raw(0x8, struct.pack("!H", 1015))], 1002, "close code 1015"),
    ([raw(0x8, struct.pack("!H", 2999))], 1002, "close code 2999"),
    ([raw(0x8, struct.pack("!H", 5000))], 1002, "close code 5000"),
    ([raw(0x8, struct.pack("!H", 1000) + b"\xff")], 1007, "UTF-8"),
]


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize(("frames", "code", "fragment"), INVALID)
def test_invalid(
    frames: list[bytes], code: int, fragment: str, feed: Callable[[list[bytes]], list[bytes]]
) -> None:
    with pytest.raises(FrameError) as caught:
        read_all(feed(frames))
    assert caught.value.code == code
    assert fragment in caught.value.message


def test_frames_before_an_invalid_one_come_out() -> None:
    reader = FrameReader(max_message=MAX)
    reader.receive_data(text("4ok") + raw(0x1, b"4x", masked=False))
    assert reader.next_event() == "4ok"
    with pytest.raises(FrameError):
        reader.next_event()


@pytest.mark.parametrize("size", [101, 126, 70000])
def test_a_frame_over_the_limit_is_refused_from_its_header(size: int) -> None:
    # RFC 6455 7.4.1, 1009: refused before its payload is received (or buffered).
    frame = binary(b"x" * size)
    head = frame[: 2 + (2 if size >= 126 else 0) + (6 if size >= 1 << 16 else 0)]
    reader = FrameReader(max_message=100)
    reader.receive_data(head)
    with pytest.raises(FrameError) as caught:
        reader.next_event()
    assert caught.value.code == 1009


@pytest.mark.parametrize("feed", FEEDS)
def test_a_message_at_the_limit_is_read_one_over_is_refused(
    feed: Callable[[list[bytes]], list[bytes]],
) -> None:
    assert read_all(feed(fragments(["4" + "a" * 49, "b" * 50])), max_message=100) == [
        "4" + "a" * 49 + "b" * 50
    ]
    with pytest.raises(FrameError) as caught:
        read_all(feed(fragments(["4" + "a" * 49, "b" * 50, "c"])), max_message=100)
    assert caught.value.code == 1009


def test_nothing_is_kept_between_frames() -> None:
    # An idle connection's reader holds no bytes: the fast path's promise.
    reader = FrameReader(max_message=MAX)
    reader.receive_data(text("3") + text("4" + "a" * 300))
    assert reader.next_event() == "3"
    assert reader.next_event() == "4" + "a" * 300
    assert reader.next_event() is None
    assert reader._buffer == b""


messages = st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300)), max_size=6)


@given(messages, st.integers(1, 50), st.randoms(use_true_random=False))
def test_any_messages_cut_anywhere(
    items: list[str | bytes], pieces: int, rng: random.Random
) -> None:
    proto = client()
    data = b"".join(bytes(proto.send_data(item, fin=True)) for item in items)
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(pieces))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    assert read_all(chunks) == items
