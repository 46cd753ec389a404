"""What a soak run's tabs should have received, against what they did.

A tab's life, read from the swarm's log, is a list of **spans**: from a connect that is not a
recovery until the disconnection that is not followed by a recovered connect (or the tab's
close). A recovered reconnection does not end a span: the gap is covered, because connection
state recovery replays what the tab missed. Within a span the tab is in ``user:<its user>`` from
the connect and in ``project:<its project>`` from the join's acknowledgement.

For every emit the endpoint took and every tab in one of its rooms, the pair is:

- **expected** when a span of the tab holds the emit: in the room before the request was sent,
  and still there ``margin`` after its answer (an event answered just before the tab went may be
  on the wire, or in the client's buffer, when it goes);
- then **delivered** (received once), **duplicated** (more than once), or missing:
  - **undeliverable** when the tab is on another node than the endpoint that took the emit, and
    the answer said ``"complete": false`` or the emit overlapped the outage (from the kill until
    both nodes are ready again): a node drops cross-node messages while it has no Redis;
  - **unknown** when the request got no 200 answer (nothing says what was sent);
  - **lost** otherwise, counted apart when it overlapped the outage (the emitting node's own
    sockets must still have it).
- A pair whose request was sent while the tab was in the room, but answered less than
  ``margin`` before the tab left, is **on the edge**: received or not, it counts neither way;
  nor does an emit sent before the tab was in the room.
- A pair inside the gap of a disconnection whose reconnection was *not* recovered is **missed in
  an unrecovered gap**.

Recovery: a **drop** (``socket.io.engine.close()``) of a tab that had received an event in the
last :data:`OFFSET_HORIZON` (so its client holds an offset the hub still keeps) must come back
with ``socket.recovered`` true; one that did not is a **drop not recovered**. A tab that had
received nothing holds no offset: the stock client then sends ``{pid}`` alone. Node's socket.io
never recovers that; the hub does while it still keeps every packet since the session began.
Such a tab, back without recovery, is a **drop without offset**, counted apart.

Besides: **out of order** is an event received after one whose request was sent after this
one's answer (the endpoint had delivered this one, on every node it counted, before the other
existed); **foreign** is an event received by a tab in none of its rooms.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs

from soak.population import Tab
from soak.run import NODES, Emit, Outcome, Timeline

__all__ = ["analyse", "read_log"]

EXAMPLES = 5
"""Examples kept of each kind of failure, for the report."""
OFFSET_HORIZON = 100_000.0
"""ms: a tab that received an event this recently holds an offset the hub still keeps (it keeps
120 s of them by default)."""


@attrs.define
class Span:
    """A stretch of one socket's life, recoveries included (times in ms)."""

    user_from: float
    project_from: float | None = None
    until: float = math.inf
    away_since: float | None = None  # disconnected and not back (yet)
    dropped: bool = False  # that disconnection followed a drop


@attrs.define
class Life:
    """One tab, read from the log."""

    tab: Tab
    spans: list[Span] = attrs.field(factory=list)
    received: list[tuple[float, str]] = attrs.field(factory=list)
    unrecovered: list[tuple[float, float, bool]] = attrs.field(factory=list)  # from, to, project


@attrs.define
class Tally:
    """Counts over every tab."""

    drops: int = 0
    recovered: int = 0  # reconnections with socket.recovered true
    drops_recovered: int = 0
    # Drops back without recovery, the tab holding an offset (it had received an event within
    # OFFSET_HORIZON): recovery failed. Without one, the stock client sends no offset and the
    # session cannot be recovered (as with Node's socket.io).
    drops_not_recovered: int = 0
    drops_without_offset: int = 0
    drops_closed_away: int = 0  # the tab was closed before it was back
    other_not_recovered: int = 0  # disconnections we did not cause, back without recovery
    failures: list[str] = attrs.field(factory=list)
    gaps_ms: list[float] = attrs.field(factory=list)
    reasons: Counter[str] = attrs.field(factory=Counter)
    connect_errors: Counter[str] = attrs.field(factory=Counter)
    join_failures: int = 0
    other_events: Counter[str] = attrs.field(factory=Counter)
    anomalies: Counter[str] = attrs.field(factory=Counter)


def read_log(path: Path) -> Iterator[list[Any]]:
    """The swarm log's records, in the order they were written."""
    with path.open() as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def _lives(tabs: list[Tab], records: Iterable[list[Any]], tally: Tally) -> list[Life]:
    lives = [Life(tab) for tab in tabs]
    current: dict[int, Span] = {}
    dropping: set[int] = set()
    last_event: dict[int, float] = {}

    def end(index: int, at: float) -> None:
        span = current.pop(index, None)
        if span is not None:
            span.until = span.away_since if span.away_since is not None else at
            lives[index].spans.append(span)

    last = 0.0
    for kind, at, index, *rest in records:
        last = at
        life = lives[index]
        span = current.get(index)
        if kind == "connect":
            recovered = bool(rest[1])
            if recovered and span is not None and span.away_since is not None:
                tally.recovered += 1
                tally.drops_recovered += span.dropped
                tally.gaps_ms.append(at - span.away_since)
                span.away_since, span.dropped = None, False
                continue
            if recovered:
                tally.anomalies["recovered without a session to recover"] += 1
            if span is not None and span.away_since is not None:
                offset = span.away_since - last_event.get(index, -math.inf) < OFFSET_HORIZON
                if not span.dropped:
                    tally.other_not_recovered += 1
                elif offset:
                    tally.drops_not_recovered += 1
                    if len(tally.failures) < EXAMPLES:
                        tally.failures.append(f"tab {index} on {life.tab.node} at {at:.0f} ms")
                else:
                    tally.drops_without_offset += 1
                had_project = span.project_from is not None
                life.unrecovered.append((span.away_since, at, had_project))
            end(index, at)
            current[index] = Span(user_from=at, project_from=at if recovered else None)
        elif kind == "ready":
            if span is not None and life.tab.project is not None:
                if rest[0] and span.project_from is None:
                    span.project_from = at
                elif not rest[0]:
                    tally.join_failures += 1
        elif kind == "ev":
            life.received.append((at, rest[0]))
            last_event[index] = at
        elif kind == "disconnect":
            tally.reasons[rest[0]] += 1
            if span is not None and span.away_since is None:
                span.away_since = at
                span.dropped = index in dropping
            dropping.discard(index)
        elif kind == "drop":
            tally.drops += 1
            dropping.add(index)
        elif kind == "close":
            if span is not None and span.away_since is not None and span.dropped:
                tally.drops_closed_away += 1
            end(index, at)
        elif kind == "connect_error":
            tally.connect_errors[rest[0]] += 1
        elif kind == "other":
            tally.other_events[rest[0]] += 1
    for index in list(current):
        end(index, last)
    return lives


def _overlaps(emit: Emit, window: tuple[float, float] | None) -> bool:
    if window is None:
        return False
    finish = emit.answered if emit.answered is not None else emit.posted
    return emit.posted <= window[1] and finish >= window[0]


def _entered(span: Span, tab: Tab, rooms: tuple[str, ...]) -> float | None:
    """When the span's socket was first in one of ``rooms``; None if it never was."""
    times = []
    if f"user:{tab.user}" in rooms:
        times.append(span.user_from)
    if (
        tab.project is not None
        and f"project:{tab.project}" in rooms
        and span.project_from is not None
    ):
        times.append(span.project_from)
    return min(times) if times else None


def _coverage(life: Life, emit: Emit, margin: float) -> str:
    """``expected``, ``edge``, ``gap`` (an unrecovered gap) or ``none``."""
    finish = emit.answered if emit.answered is not None else emit.posted
    near = False
    for span in life.spans:
        entered = _entered(span, life.tab, emit.rooms)
        if entered is None:
            continue
        if entered <= emit.posted <= span.until:
            if finish <= span.until - margin:
                return "expected"
            near = True
    if near:
        return "edge"
    for start, stop, had_project in life.unrecovered:
        in_room = f"user:{life.tab.user}" in emit.rooms or (
            had_project and f"project:{life.tab.project}" in emit.rooms
        )
        if in_room and start <= emit.posted and finish <= stop:
            return "gap"
    return "none"


@attrs.define
class _Counts:
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    lost_during_outage: int = 0
    undeliverable_cross_node: int = 0
    unknown: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    foreign: int = 0
    unknown_events: int = 0
    edge_received: int = 0
    edge_missed: int = 0
    missed_in_unrecovered_gap: int = 0
    complete_but_missing: int = 0
    examples: dict[str, list[str]] = attrs.field(factory=lambda: defaultdict(list))

    def example(self, kind: str, text: str) -> None:
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(text)


def _deliveries(
    lives: list[Life], emits: list[Emit], window: tuple[float, float] | None, margin: float
) -> _Counts:
    counts = _Counts()
    by_key = {emit.key: emit for emit in emits}
    by_user: dict[str, list[Life]] = defaultdict(list)
    by_project: dict[str, list[Life]] = defaultdict(list)
    for life in lives:
        by_user[life.tab.user].append(life)
        if life.tab.project is not None:
            by_project[life.tab.project].append(life)
    got: list[Counter[str]] = [Counter(key for _, key in life.received) for life in lives]

    for emit in emits:
        candidates: dict[int, Life] = {}
        for room in emit.rooms:
            kind, _, name = room.partition(":")
            for life in (by_user if kind == "user" else by_project).get(name, []):
                candidates[life.tab.index] = life
        for index, life in candidates.items():
            received = got[index][emit.key]
            coverage = _coverage(life, emit, margin)
            where = f"{emit.key} {list(emit.rooms)} tab {index} on {life.tab.node}"
            if coverage == "edge":
                counts.edge_received += received > 0
                counts.edge_missed += received == 0
                if not received:
                    counts.example("edge_missed", where)
                continue
            if coverage == "gap":
                counts.missed_in_unrecovered_gap += received == 0
                continue
            if coverage != "expected":
                continue
            counts.expected += 1
            if received:
                counts.delivered += 1
                continue
            cross = life.tab.node != emit.node
            during = _overlaps(emit, window)
            if cross and emit.status == 200 and emit.complete:
                counts.complete_but_missing += 1
                counts.example("complete_but_missing", where)
            if emit.status != 200:
                counts.unknown += 1
            elif cross and (not emit.complete or during):
                counts.undeliverable_cross_node += 1
            elif during:
                counts.lost_during_outage += 1
                counts.example("lost_during_outage", where)
            else:
                counts.lost += 1
                counts.example("lost", where)

    for life, keys in zip(lives, got, strict=True):
        tab = life.tab
        rooms = {f"user:{tab.user}"} | ({f"project:{tab.project}"} if tab.project else set())
        for key, times in keys.items():
            if times > 1:
                counts.duplicated += times - 1
                counts.example("duplicated", f"{key} x{times} tab {tab.index}")
            sent = by_key.get(key)
            if sent is None:
                counts.unknown_events += 1
            elif rooms.isdisjoint(sent.rooms):
                counts.foreign += 1
                counts.example("foreign", f"{key} {list(sent.rooms)} to tab {tab.index}")
        latest = -math.inf
        seen: set[str] = set()
        for _, key in life.received:
            sent = by_key.get(key)
            if sent is None or key in seen:
                continue
            seen.add(key)
            if sent.answered is not None and sent.answered < latest:
                counts.out_of_order += 1
                counts.example("out_of_order", f"{key} after a later one, tab {tab.index}")
            latest = max(latest, sent.posted)
    return counts


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"count": len(values), "p50": at(0.5), "p90": at(0.9), "p99": at(0.99),
            "max": round(ordered[-1], 2)}  # fmt: skip


def _requests(emits: list[Emit], window: tuple[float, float] | None) -> dict[str, Any]:
    """The endpoint's side: latency, errors, incomplete answers."""
    requests: dict[tuple[str, float], Emit] = {}
    for emit in emits:
        requests.setdefault((emit.node, emit.posted), emit)
    calm: list[float] = []
    outage: list[float] = []
    errors: Counter[str] = Counter()
    for emit in requests.values():
        if emit.answered is None or emit.status != 200:
            errors[f"HTTP {emit.status}" if emit.status else (emit.error or "?")[:80]] += 1
        if emit.answered is not None:
            (outage if _overlaps(emit, window) else calm).append(emit.answered - emit.posted)
    incomplete = [emit for emit in emits if emit.status == 200 and not emit.complete]
    return {
        "requests": len(requests),
        "http_errors": sum(errors.values()),
        "http_error_kinds": dict(errors),
        "incomplete": len(incomplete),
        "incomplete_outside_outage": sum(not _overlaps(emit, window) for emit in incomplete),
        "incomplete_errors": dict(Counter((emit.error or "")[:120] for emit in incomplete)),
        "latency_ms": _percentiles(calm),
        "latency_ms_during_outage": _percentiles(outage),
    }


def _memory(outcome: Outcome) -> dict[str, Any]:
    """Per node: after the ramp, the peak, at the end, and the peak of each half of the load."""
    timeline = outcome.timeline
    loaded = [s for s in outcome.samples if timeline.load <= s.at <= timeline.end]
    middle = (timeline.load + timeline.end) / 2
    result: dict[str, Any] = {}
    for name in [*NODES, "swarm", "redis"]:
        series = [s.rss_kb.get(name, 0) / 1024 for s in loaded]
        if not series:
            continue
        first = [s.rss_kb.get(name, 0) / 1024 for s in loaded if s.at <= middle]
        second = [s.rss_kb.get(name, 0) / 1024 for s in loaded if s.at > middle]
        result[name] = {
            "start_mb": round(series[0], 1),
            "peak_mb": round(max(series), 1),
            "end_mb": round(series[-1], 1),
            "peak_first_half_mb": round(max(first), 1) if first else None,
            "peak_second_half_mb": round(max(second), 1) if second else None,
        }
    return result


def _series(outcome: Outcome) -> dict[str, Any]:
    """Time series for the plot (seconds since the load started)."""
    timeline = outcome.timeline
    zero = timeline.load

    def rel(at: float) -> float:
        return round((at - zero) / 1000, 2)

    answered: Counter[int] = Counter()
    for emit in outcome.emits:
        if emit.status == 200:
            answered[int((emit.posted - zero) // 1000)] += 1
    seconds = range(0, int((timeline.end - zero) // 1000) + 1)
    requests: dict[tuple[str, float], Emit] = {}
    for emit in outcome.emits:
        if emit.answered is not None:
            requests.setdefault((emit.node, emit.posted), emit)
    return {
        "t": [rel(s.at) for s in outcome.samples],
        "rss_mb": {
            name: [round(s.rss_kb.get(name, 0) / 1024, 1) for s in outcome.samples]
            for name in [*NODES, "swarm", "redis"]
        },
        "sockets": {name: [s.sockets.get(name) for s in outcome.samples] for name in NODES},
        "connected": [s.connected for s in outcome.samples],
        "emits_t": list(seconds),
        "emits_per_s": [answered[second] for second in seconds],
        "latency": {
            name: [
                [rel(emit.posted), round(emit.answered - emit.posted, 2)]
                for (node, _), emit in requests.items()
                if node == name and emit.answered is not None
            ]
            for name in NODES
        },
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _timeline(timeline: Timeline) -> dict[str, Any]:
    zero = timeline.load

    def rel(at: float | None) -> float | None:
        return None if at is None else round((at - zero) / 1000, 2)

    window = timeline.outage()
    return {
        "ramp_s": round((timeline.load - timeline.start) / 1000, 2),
        "load_s": rel(timeline.end),
        "redis_killed_at": rel(timeline.kill),
        "redis_started_at": rel(timeline.restart),
        "ready_again_at": {node: rel(at) for node, at in timeline.back.items()},
        # The end is None when a node was not ready again by the end of the run.
        "outage_window": None if window is None else [rel(window[0]), rel(_finite(window[1]))],
        "ready_changes": [[rel(at), node, ready] for at, node, ready in timeline.ready_changes],
    }


def analyse(outcome: Outcome) -> dict[str, Any]:
    """The report of a run, as JSON-ready data (``soak`` in RELIABILITY.md reads it)."""
    settings = outcome.settings
    tally = Tally()
    lives = _lives(outcome.tabs, read_log(outcome.swarm_log), tally)
    window = outcome.timeline.outage()
    counts = _deliveries(lives, outcome.emits, window, settings.margin * 1000)
    gaps = sorted(tally.gaps_ms)
    examples = dict(counts.examples)
    deliveries = attrs.asdict(counts, filter=lambda field, _: field.name != "examples")
    errors_by_node = {node: len(lines) for node, lines in outcome.node_errors.items()}
    report: dict[str, Any] = {
        "settings": attrs.asdict(settings),
        "seconds": round(outcome.seconds, 1),
        "timeline": _timeline(outcome.timeline),
        "tabs": {
            "opened": len(outcome.tabs),
            "by_node": dict(Counter(tab.node for tab in outcome.tabs)),
            "by_transports": dict(Counter("+".join(tab.transports) for tab in outcome.tabs)),
            "drops": tally.drops,
            "recovered": tally.recovered,
            "drops_recovered": tally.drops_recovered,
            "drops_not_recovered": tally.drops_not_recovered,
            "drops_not_recovered_examples": tally.failures,
            "drops_without_offset": tally.drops_without_offset,
            "drops_closed_away": tally.drops_closed_away,
            "other_not_recovered": tally.other_not_recovered,
            "recovered_gap_ms": _percentiles(gaps),
            "disconnect_reasons": dict(tally.reasons),
            "connect_errors": dict(tally.connect_errors),
            "join_failures": tally.join_failures,
            "other_events": dict(tally.other_events),
            "anomalies": dict(tally.anomalies),
        },
        "emits": {
            "posted": len(outcome.emits),
            "answered_200": sum(emit.status == 200 for emit in outcome.emits),
            "delivered_counted_by_hub": sum(emit.delivered or 0 for emit in outcome.emits),
            **_requests(outcome.emits, window),
        },
        "deliveries": deliveries,
        "examples": examples,
        "node_log_errors": errors_by_node,
        "node_log_error_lines": {
            node: lines[:EXAMPLES] for node, lines in outcome.node_errors.items() if lines
        },
        "memory": _memory(outcome),
        "series": _series(outcome),
    }
    report["verdict"] = verdict(report)
    return report


def verdict(report: dict[str, Any]) -> list[str]:
    """What went wrong, one line each; empty when nothing did."""
    d = report["deliveries"]
    problems = [
        f"{d[name]} {name.replace('_', ' ')}"
        for name in ("lost", "lost_during_outage", "duplicated", "out_of_order", "foreign",
                     "unknown_events")
        if d[name]
    ]  # fmt: skip
    if report["tabs"]["drops_not_recovered"]:
        problems.append(
            f"{report['tabs']['drops_not_recovered']} drops of tabs holding an offset not recovered"
        )
    if report["emits"]["http_errors"]:
        problems.append(f"{report['emits']['http_errors']} HTTP errors from the endpoint")
    if report["emits"]["incomplete_outside_outage"]:
        problems.append(
            f"{report['emits']['incomplete_outside_outage']} incomplete answers outside the outage"
        )
    errors = sum(report["node_log_errors"].values())
    if errors:
        problems.append(f"{errors} error lines in the nodes' logs")
    return problems
