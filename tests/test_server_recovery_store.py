"""The store behind connection state recovery, on an explicit clock: which sessions come back,
with which packets, and when they are forgotten."""

from __future__ import annotations

from typing import Any

import attrs

from hub.engineio.outgoing import Outgoing
from hub.server.recovery import Recovery, RecoveryOptions


@attrs.define
class _Socket:
    """What :meth:`Recovery.persist` reads of a socket."""

    id: str
    rooms: set[str]
    data: dict[str, Any] = attrs.field(factory=dict)


def _message(text: str) -> list[Outgoing]:
    return [Outgoing.message_of(text)]


def _emit(
    recovery: Recovery, text: str, now: float, rooms: set[str], except_: set[str] | None = None
) -> str:
    offset = recovery.next_offset()
    recovery.store(frozenset(rooms), except_ or set(), _message(f"{text}|{offset}"), now)
    return offset


def _texts(recovery: Recovery, saved: Any) -> list[str]:
    return [str(messages[0].polling_item).split("|")[0][1:] for messages in recovery.missed(saved)]


def test_a_session_comes_back_with_what_its_rooms_missed_in_order() -> None:
    recovery = Recovery(RecoveryOptions(max_disconnection_duration=60))
    last = _emit(recovery, "a", 0, {"news"})
    recovery.persist(_Socket("s1", {"s1", "news"}, {"user": "u"}), "p1", now=1)  # type: ignore[arg-type]
    _emit(recovery, "b", 2, {"news"})
    _emit(recovery, "other room", 3, {"sports"})
    _emit(recovery, "excepted", 4, {"news"}, except_={"s1"})
    _emit(recovery, "everyone", 5, set())
    _emit(recovery, "to it", 6, {"s1"})
    saved = recovery.restore("p1", last, now=10)
    assert saved is not None
    assert (saved.sid, saved.rooms, saved.data) == ("s1", {"s1", "news"}, {"user": "u"})
    assert _texts(recovery, saved) == ["b", "everyone", "to it"]
    assert recovery.restore("p1", last, now=10) is None  # once


def test_expired_sessions_and_packets_are_forgotten() -> None:
    recovery = Recovery(RecoveryOptions(max_disconnection_duration=5))
    last = _emit(recovery, "a", 0, {"news"})
    recovery.persist(_Socket("s1", {"s1", "news"}), "p1", now=1)  # type: ignore[arg-type]
    assert recovery.restore("p1", last, now=6.5) is None
    assert recovery.sessions == {}


def test_an_offset_whose_followers_were_dropped_is_refused() -> None:
    recovery = Recovery(RecoveryOptions(max_packets=2))
    first = _emit(recovery, "a", 0, {"news"})
    second = _emit(recovery, "b", 0, {"news"})
    recovery.persist(_Socket("s1", {"news"}), "p1", now=0)  # type: ignore[arg-type]
    recovery.persist(_Socket("s2", {"news"}), "p2", now=0)  # type: ignore[arg-type]
    _emit(recovery, "c", 0, {"news"})  # "a" goes: max_packets
    assert recovery.restore("p1", first, now=0) is not None  # "b" and "c" are still kept
    _emit(recovery, "d", 0, {"news"})  # "b" goes
    assert recovery.restore("p2", first, now=0) is None  # "b" would be missing
    saved = recovery.restore("p2", second, now=0)  # the refusal did not take the session
    assert saved is not None
    assert _texts(recovery, saved) == ["c", "d"]


def test_offsets_of_another_process_or_never_given_are_refused() -> None:
    recovery = Recovery(RecoveryOptions())
    other = Recovery(RecoveryOptions())
    offset = _emit(other, "a", 0, {"news"})
    _emit(recovery, "a", 0, {"news"})
    recovery.persist(_Socket("s1", {"news"}), "p1", now=0)  # type: ignore[arg-type]
    assert recovery.restore("p1", offset, now=0) is None
    assert recovery.restore("p1", recovery.next_offset(), now=0) is None
    assert recovery.restore("p1", "garbage", now=0) is None
    assert recovery.restore(None, offset, now=0) is None
    assert recovery.restore("p1", recovery.saved()[0].sid, now=0) is None


def test_a_client_with_no_offset_yet_gets_everything_since_it_connected() -> None:
    recovery = Recovery(RecoveryOptions())
    _emit(recovery, "before it came", 0, {"news"})
    since = recovery.sequence  # it connects now, and drops before any event reaches it
    recovery.persist(_Socket("s1", {"news"}), "p1", now=1, since=since)  # type: ignore[arg-type]
    stale = _emit(recovery, "x", 2, {"other"})  # an offset from an older session of its own
    _emit(recovery, "missed", 3, {"news"})
    saved = recovery.restore("p1", None, now=4)
    assert saved is not None
    assert _texts(recovery, saved) == ["missed"]
    recovery.persist(_Socket("s1", {"news"}), "p1", now=5, since=recovery.sequence)  # type: ignore[arg-type]
    _emit(recovery, "again", 6, {"news"})
    saved = recovery.restore("p1", stale, now=7)  # older than its connection: counts from there
    assert saved is not None
    assert _texts(recovery, saved) == ["again"]
