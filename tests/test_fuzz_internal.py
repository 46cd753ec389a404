"""The emit endpoint's JSON under fuzzing: a running hub with three connected tabs (alice twice,
bob once) on 127.0.0.1, its internal API fed valid emits (each tab receives exactly what was
sent), random JSON documents, mutated documents and random bytes (a 400 or 422 with a clear
error, never a 500, and nothing delivered from a refused request). ``tests/fuzz``;
``HUB_FUZZ_PROFILE=long`` for more examples.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fuzz import campaigns, examples, live
from hypothesis import given
from hypothesis import strategies as st

from hub.app.events import EVENTS
from hub.protocol.packets import MAX_DEPTH, RESERVED_EVENTS

randoms = st.integers(0, 2**64).map(random.Random)


@pytest.fixture(scope="module")
def emit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live.EmitTarget]:
    tmp = tmp_path_factory.mktemp("fuzz-hub")
    with live.hub_thread(Path(tmp)) as thread:
        target = live.EmitTarget(thread)
        yield target
        target.close()


# Function-scoped on purpose: after all of a test's examples, every tab has received exactly
# what the endpoint said it delivered, and the hub has logged no error.
@pytest.fixture
def api(emit: live.EmitTarget) -> Iterator[live.EmitTarget]:
    yield emit
    emit.thread.check()
    emit.sync()


def _alice(emit: live.EmitTarget) -> list[live.TabStats]:
    return [tab for tab in emit.tabs if tab.user == "alice"]


def _alice_rooms(emit: live.EmitTarget) -> list[str]:
    # Each socket's own room: the fuzzing joins users to rooms, never to these.
    return [tab.sid for tab in _alice(emit)]


# --- valid input ----------------------------------------------------------------------------

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
json_data = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=10,
)
names = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12).filter(
    lambda name: name not in RESERVED_EVENTS and name not in EVENTS and name != live.SENTINEL
)


@examples(40)
@given(st.lists(st.tuples(names, json_data), min_size=1, max_size=3), st.booleans())
def test_emits_round_trip(
    api: live.EmitTarget, emits: list[tuple[str, Any]], as_batch: bool
) -> None:
    """Valid input: each of alice's two tabs receives every event, equal, in order."""
    tabs = _alice(api)
    for tab in tabs:
        tab.kept.clear()
        tab.keep = True
    try:
        rooms = _alice_rooms(api)
        items = [{"event": name, "data": data, "to": rooms} for name, data in emits]
        if as_batch:
            status, answer = api.post("emit", json.dumps(items).encode())
            assert (status, answer["delivered"]) == (200, 2 * len(items))
        else:
            for item in items:
                assert api.post("emit", json.dumps(item).encode()) == (200, {"delivered": 2})
        api.sync()
        for tab in tabs:
            assert tab.kept == emits
    finally:
        for tab in tabs:
            tab.keep = False


# --- arbitrary input ------------------------------------------------------------------------


@examples(120)
@given(randoms)
def test_mutated_documents(api: live.EmitTarget, rng: random.Random) -> None:
    """Emit-shaped documents (single and batches; known, custom and reserved events; rooms of
    every type), valid or with bytes changed, to emit, broadcast and rooms/*."""
    campaigns.emit_endpoint(rng, api)


@examples(60)
@given(st.binary(max_size=200))
def test_random_bytes_are_a_400(api: live.EmitTarget, body: bytes) -> None:
    status, answer = api.post("emit", body)
    assert status == 400, answer


json_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["event", "to", "except", "data", "x"]) | st.text(max_size=4),
            children,
            max_size=5,
        )
    ),
    max_leaves=15,
)


@examples(60)
@given(json_documents, st.sampled_from(["emit", "broadcast", "rooms/join", "access/revoke"]))
def test_random_json_documents(api: live.EmitTarget, document: Any, path: str) -> None:
    # json.dumps writes NaN and Infinity for such floats: refused as invalid JSON.
    status, _answer = api.post(path, json.dumps(document).encode())
    assert status in (200, 400, 422)


# --- regressions: bodies that reached the Socket.IO encoder and failed there (a 500, and for a
# batch whatever came before the bad item had been sent) -----------------------------------

VALID = {"event": "custom", "data": 1, "to": ["user:alice"]}


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


REFUSED = [
    pytest.param('{"event":"connect","to":["user:alice"]}', "reserves", id="reserved-name"),
    pytest.param('{"event":"disconnect","to":"user:alice"}', "reserves", id="reserved-name-2"),
    pytest.param('{"event":"x","to":["user:alice"],"data":NaN}', "not valid JSON", id="nan"),
    pytest.param('{"event":"x","to":["user:alice"],"data":-Infinity}', "not valid", id="inf"),
    pytest.param('{"event":"x","to":["user:alice"],"data":1e400}', "not valid JSON", id="1e400"),
    pytest.param(
        '{"event":"x","to":["user:alice"],"data":"\\ud800"}', "lone surrogate", id="surrogate"
    ),
    pytest.param(
        '{"event":"x","to":["user:alice"],"data":{"\\udfff":1}}', "lone surrogate", id="key"
    ),
    pytest.param('{"event":"\\udc00","to":["user:alice"]}', "lone surrogate", id="surrogate-name"),
    pytest.param(
        '{"event":"x","to":["user:alice"],"data":' + _deep(MAX_DEPTH) + "}",
        "nested",
        id="too-deep",
    ),
    pytest.param(
        '{"event":"x","to":["user:alice"],"data":' + _deep(980) + "}", "nested", id="980-deep"
    ),
]


@pytest.mark.parametrize(("body", "message"), REFUSED)
@pytest.mark.parametrize("where", ["alone", "second-in-a-batch", "broadcast"])
def test_what_no_packet_can_carry_is_refused_before_anything_is_sent(
    api: live.EmitTarget, body: str, message: str, where: str
) -> None:
    path = "broadcast" if where == "broadcast" else "emit"
    content = body.encode()
    if where == "second-in-a-batch":
        content = b"[" + json.dumps(VALID).encode() + b"," + content + b"]"
    status, answer = api.post(path, content)
    assert status == 400, answer
    assert message in answer["error"]["message"], answer
    # api's teardown: no tab received anything (the first item of the batch neither).


def test_raw_surrogates_in_the_body_are_refused(api: live.EmitTarget) -> None:
    body = b'{"event":"x","to":["user:alice"],"data":"\xed\xa0\x80"}'
    status, answer = api.post("emit", body)
    assert status == 400
    assert "lone surrogate" in answer["error"]["message"]


def test_the_deepest_accepted_body_is_delivered(api: live.EmitTarget) -> None:
    to = json.dumps(_alice_rooms(api))
    # data at the second level of the body and of the event's array: MAX_DEPTH levels in all.
    body = '{"event":"x","to":' + to + ',"data":' + _deep(MAX_DEPTH - 1) + "}"
    assert api.post("emit", body.encode()) == (200, {"delivered": 2})
    # A surrogate pair, escaped or not, is one character: fine.
    body = '{"event":"x","to":' + to + ',"data":"\\ud83d\\ude00😀"}'
    assert api.post("emit", body.encode()) == (200, {"delivered": 2})


# --- regressions: errors that repeated the peer's text as it was (a newline in a key or a path
# made a multi-line error and a fake line in the log; a long key, a long error) -------------


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("emit", {"event": "notification", "to": ["x"], "data": {"a\nINFO forged": 1}}, 422),
        ("emit", [{"event": "notification", "to": ["x"], "data": {"k" * 5000: 1}}], 422),
        ("broadcast", {"event": "notification", "data": {"\u2028\r\x00": 1}}, 422),
        ("nowhere%0AINFO%20forged", {}, 404),
        ("rooms/%0A" + "x" * 500, {}, 404),
    ],
)
def test_an_error_that_names_the_peers_text_stays_one_short_line(
    api: live.EmitTarget, path: str, body: Any, status: int
) -> None:
    answer_status, answer = api.post(path, json.dumps(body).encode())
    assert answer_status == status
    message = answer["error"]["message"]
    assert "\n" not in message
    assert "\r" not in message
    assert "\u2028" not in message
    assert len(message) <= 201
    if status == 422:
        assert "unknown field" in message
        assert len(answer["error"]["field"]) <= 200
