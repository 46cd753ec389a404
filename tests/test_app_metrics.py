"""``/health``, ``/ready`` and ``/metrics`` of the hub, read as an operator's tools read them.

Each test starts a :class:`~hub.app.hub.Hub` on loopback ports (a SQLite access store, the
internal port on unless said otherwise) and drives it with real clients: the official
socket.io-client in Node (``tests/interop/node_client.mjs``) for the connect, upgrade and emit
path; raw WebSocket frames (trio-websocket) where a client must misbehave (stop reading, stop
answering pings, come without a valid token). ``/metrics`` is parsed with prometheus-client's
own parser, and what is asserted is what moved between two scrapes.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio_websocket
from interop.harness import CONNECT_TIMEOUT, STEP_TIMEOUT, node_command, open_client
from prometheus_client.parser import text_string_to_metric_families
from support.hubs import RunningHub, hub_settings
from support.redis_server import redis_server

from hub.app.config import Config, ConfigError
from hub.app.store import SQLiteStore
from hub.server.stats import Histogram
from hub.transport import stream as stream_module

SECRET = "test-secret-of-the-hub-metrics-tests-0123456789"
EMIT_TOKEN = "emit-token-of-the-metrics-tests"
AUTH = {"Authorization": f"Bearer {EMIT_TOKEN}"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    """alice owns project demo, shared with bob; carol has none."""
    store = SQLiteStore(tmp_path / "hub.sqlite3")
    for user in ("alice", "bob", "carol"):
        store.add_user(user, email=f"{user}@example.test")
    store.add_project("demo", owner="alice")
    store.share_project("demo", user="bob")
    return store


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client that keeps no connection open: the hub, stopped when the test returns,
    would wait for a kept-alive connection's peer to hang up."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=STEP_TIMEOUT, limits=limits) as client:
        yield client


@attrs.frozen
class Running(RunningHub):
    http: httpx.AsyncClient

    @property
    def address(self) -> str:
        return f"{self.addresses.public[0]}:{self.addresses.public[1]}"

    @property
    def metrics_url(self) -> str:
        return self.addresses.internal_url + "/metrics"


class Hubs:
    """Starts hubs in the nursery of the ``hubs`` fixture: they stop after the clients of the
    ``raw`` fixture have hung up (a hub lingers on a connection until its peer does)."""

    def __init__(self, nursery: trio.Nursery, store: SQLiteStore, http: httpx.AsyncClient) -> None:
        self.nursery = nursery
        self.store = store
        self.http = http

    async def start(self, **settings: Any) -> Running:
        options = hub_settings(SECRET, EMIT_TOKEN, {"internal_port": 0}, settings)
        return await Running.start(self.nursery, self.store, options, http=self.http)


@pytest.fixture
async def hubs(nursery: trio.Nursery, store: SQLiteStore, http: httpx.AsyncClient) -> Hubs:
    return Hubs(nursery, store, http)


async def emit(running: Running, body: Any) -> Any:
    response = await running.http.post(
        running.addresses.internal_url + "/internal/emit", json=body, headers=AUTH
    )
    assert response.status_code == 200, response.text
    return response.json()


# -- reading /metrics ------------------------------------------------------------------------


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels (counters keep their ``_total``)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(http: httpx.AsyncClient, url: str, **headers: str) -> Samples:
    response = await http.get(url, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"no sample {name}{labels}; have {sorted({k[0] for k in samples})}"
    return samples[key]


def moved(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def scrape_until(
    http: httpx.AsyncClient,
    url: str,
    condition: Callable[[Samples], bool],
    timeout: float = STEP_TIMEOUT,
) -> Samples:
    """Scrape until ``condition`` holds (counters of things that end a moment later)."""
    samples: Samples = {}
    with trio.move_on_after(timeout):
        while True:
            samples = await scrape(http, url)
            if condition(samples):
                return samples
            await trio.sleep(0.05)
    interesting = {k: v for k, v in samples.items() if k[0].startswith("hub_")}
    raise AssertionError(f"not reached within {timeout} s; last scrape: {interesting}")


# -- raw clients -----------------------------------------------------------------------------


class RawClients:
    """WebSocket sessions spoken frame by frame (trio-websocket), for clients that misbehave.

    Each is closed when the test ends, before the hub stops: a connection whose peer never
    hangs up would hold the hub's shutdown for its linger time.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.opened: list[trio_websocket.WebSocketConnection] = []

    async def connect(
        self, running: Running, token: str | None, *, queue: int = 1
    ) -> tuple[trio_websocket.WebSocketConnection, str]:
        """Open a session and send CONNECT with ``{"token": token}``; returns the session and
        the server's answer. ``queue=1``: once the test stops reading, so does the client."""
        host, port = running.addresses.public
        with trio.fail_after(STEP_TIMEOUT):
            ws = await trio_websocket.connect_websocket(
                self.nursery,
                host,
                port,
                "/socket.io/?EIO=4&transport=websocket",
                use_ssl=False,
                message_queue_size=queue,
            )
            self.opened.append(ws)
            opened = await ws.get_message()
            assert str(opened).startswith("0{")
            await ws.send_message("40" + (json.dumps({"token": token}) if token else ""))
            answer = str(await ws.get_message())
        return ws, answer

    async def connected(
        self, running: Running, *users: str
    ) -> list[trio_websocket.WebSocketConnection]:
        """A session of each of ``users`` (with a valid token), connected, and reading ahead."""
        sessions = []
        for user in users:
            ws, answer = await self.connect(running, running.token(user), queue=16)
            assert answer.startswith("40{"), answer
            sessions.append(ws)
        return sessions


@pytest.fixture
async def raw(nursery: trio.Nursery, hubs: Hubs) -> AsyncIterator[RawClients]:
    clients = RawClients(nursery)
    yield clients
    for ws in clients.opened:
        with trio.move_on_after(1):
            await ws.aclose()


# -- where the endpoints are -----------------------------------------------------------------


async def test_health_ready_and_metrics_are_on_the_internal_port_only(
    hubs: Hubs, http: httpx.AsyncClient
) -> None:
    running = await hubs.start()
    internal = running.addresses.internal_url
    health = await http.get(internal + "/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await http.get(internal + "/ready")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    samples = await scrape(http, internal + "/metrics")
    assert value(samples, "hub_up") == 1
    assert value(samples, "hub_namespaces") == 1
    assert ("process_resident_memory_bytes", ()) in samples
    for path in ("/metrics", "/health", "/ready"):
        assert (await http.get(running.url + path)).status_code == 404, path
    posted = await http.post(internal + "/health")
    assert posted.status_code == 405
    head = await http.head(internal + "/ready")  # probes that read only the status
    assert (head.status_code, head.content) == (200, b"")
    assert (await http.get(internal + "/metricsx")).status_code == 404


async def test_without_an_internal_port_metrics_ask_for_the_emit_token(
    hubs: Hubs, http: httpx.AsyncClient
) -> None:
    running = await hubs.start(internal_port=None)
    health = await http.get(running.url + "/health")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (await http.get(running.url + "/ready")).status_code == 200
    refused = await http.get(running.url + "/metrics")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "hub_" not in refused.text
    wrong = await http.get(
        running.url + "/metrics", headers={"authorization": "Bearer not-the-emit-token"}
    )
    assert wrong.status_code == 401
    samples = await scrape(http, running.url + "/metrics", authorization=f"Bearer {EMIT_TOKEN}")
    assert value(samples, "hub_up") == 1


async def test_metrics_public_serves_them_on_the_public_port_too(
    hubs: Hubs, http: httpx.AsyncClient
) -> None:
    running = await hubs.start(metrics_public=True)
    samples = await scrape(http, running.url + "/metrics")
    assert value(samples, "hub_up") == 1
    assert (await http.get(running.url + "/ready")).json() == {"status": "ready"}
    assert (await http.get(running.addresses.internal_url + "/health")).status_code == 200


async def test_openmetrics_when_the_scraper_asks_for_it(
    hubs: Hubs, http: httpx.AsyncClient
) -> None:
    running = await hubs.start()
    response = await http.get(
        running.metrics_url, headers={"accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


# -- counters moving with traffic -----------------------------------------------------------


async def test_a_client_connecting_upgrading_and_receiving_an_emit_moves_the_counters(
    nursery: trio.Nursery, hubs: Hubs, http: httpx.AsyncClient
) -> None:
    running = await hubs.start()
    url = running.metrics_url
    before = await scrape(http, url)
    options = {"url": running.url, "auth": {"token": running.token("alice")}}
    async with open_client(nursery, node_command(), options, name="alice") as alice:
        await alice.expect("connect", timeout=CONNECT_TIMEOUT)
        upgrade = await alice.expect("upgrade")
        assert upgrade["transport"] == "websocket"
        for tag in (1, 2):  # two events in, each acknowledged
            await alice.send(
                op="emit", event="join-project", args=[{"projectId": "demo"}], ack=True, tag=tag
            )
            assert (await alice.expect("ack", tag=tag))["args"] == [{"ok": True}]
        answer = await emit(running, {"event": "note", "data": {"n": 1}, "to": ["user:alice"]})
        assert answer == {"delivered": 1}
        await alice.expect("event", name="note")
        during = await scrape(http, url)

        assert moved(during, before, "hub_connections_opened_total", transport="polling") == 1
        assert moved(during, before, "hub_connections_opened_total", transport="websocket") == 0
        assert moved(during, before, "hub_upgrades_total") == 1
        assert value(during, "hub_connections", transport="websocket") == 1
        assert value(during, "hub_connections", transport="polling") == 0
        assert value(during, "hub_sockets", namespace="/") == 1
        assert value(during, "hub_rooms", namespace="/") == 2  # user:alice, project:demo
        assert value(during, "hub_users") == 1
        assert moved(during, before, "hub_events_received_total") == 2
        assert moved(during, before, "hub_events_sent_total") == 1
        assert moved(during, before, "hub_internal_emits_total") == 1
        assert moved(during, before, "hub_internal_emit_recipients_total") == 1
        frame = len('42["note",{"n":1}]') + 2  # and its WebSocket frame header
        assert moved(during, before, "hub_sent_bytes_total") > frame
        assert moved(during, before, "hub_received_bytes_total") > 0
        deliveries = moved(during, before, "hub_delivery_seconds_count")
        assert deliveries == 1
        assert moved(during, before, "hub_delivery_seconds_bucket", le="+Inf") == deliveries
        assert moved(during, before, "hub_delivery_seconds_bucket", le="1.0") == deliveries
        assert 0 < moved(during, before, "hub_delivery_seconds_sum") < 1

        await alice.send(op="close")
        after = await scrape_until(http, url, lambda s: value(s, "hub_sockets", namespace="/") == 0)
    after = await scrape_until(
        http, url, lambda s: value(s, "hub_connections", transport="websocket") == 0
    )
    assert moved(after, before, "hub_disconnects_total", reason="transport close") == 1
    assert value(after, "hub_users") == 0
    assert value(after, "hub_rooms", namespace="/") == 0


async def test_an_emit_to_several_rooms_counts_each_recipient_once(
    hubs: Hubs, http: httpx.AsyncClient, raw: RawClients
) -> None:
    running = await hubs.start()
    clients = await raw.connected(running, "alice", "bob", "bob")
    before = await scrape(http, running.metrics_url)
    answer = await emit(
        running,
        [
            {"event": "note", "data": {"n": 1}, "to": ["user:alice", "user:bob"]},
            {"event": "note", "data": {"n": 2}, "to": ["user:carol"]},
        ],
    )
    assert answer["delivered"] == 3
    after = await scrape(http, running.metrics_url)
    assert moved(after, before, "hub_internal_emits_total") == 2
    assert moved(after, before, "hub_internal_emit_recipients_total") == 3
    assert moved(after, before, "hub_events_sent_total") == 3
    assert value(after, "hub_users") == 2
    for ws in clients:
        assert await ws.get_message() == '42["note",{"n":1}]'


async def test_a_sliced_broadcast_is_timed_when_its_last_slice_is_written(
    hubs: Hubs, http: httpx.AsyncClient, raw: RawClients
) -> None:
    running = await hubs.start()
    # One socket per slice: a broadcast to three goes through the namespace's delivery task.
    running.hub.server.main.adapter.slice_size = 1
    clients = await raw.connected(running, "alice", "bob", "alice")
    before = await scrape(http, running.metrics_url)
    assert (await emit(running, {"event": "tick", "data": 1, "to": ["user:alice", "user:bob"]}))[
        "delivered"
    ] == 3
    for ws in clients:
        assert await ws.get_message() == '42["tick",1]'
    after = await scrape(http, running.metrics_url)
    assert moved(after, before, "hub_delivery_seconds_count") == 1
    assert moved(after, before, "hub_events_sent_total") == 3


async def test_auth_refusals_are_counted_by_code(
    hubs: Hubs, http: httpx.AsyncClient, raw: RawClients
) -> None:
    running = await hubs.start()
    before = await scrape(http, running.metrics_url)
    cases = {
        "TOKEN_MISSING": None,
        "TOKEN_INVALID": "not-a-jwt",
        "TOKEN_EXPIRED": running.token("alice", expires_in=-30),
        "USER_NOT_FOUND": running.token("mallory"),
    }
    for code, token in cases.items():
        _, answer = await raw.connect(running, token)
        assert answer.startswith("44{"), answer
        assert json.loads(answer[2:])["data"]["code"] == code
    _, answer = await raw.connect(running, running.token("carol"))  # and one accepted
    assert answer.startswith("40{"), answer
    after = await scrape(http, running.metrics_url)
    for code in cases:
        assert moved(after, before, "hub_auth_refusals_total", code=code) == 1, code
    assert moved(after, before, "hub_auth_refusals_total", code="UNAVAILABLE") == 0
    recent = running.hub.stats.recent_refusals
    assert [refusal.code for refusal in recent] == list(cases)
    assert all(refusal.address == "127.0.0.1" for refusal in recent)


async def test_a_slow_consumer_disconnect_is_counted(
    hubs: Hubs, http: httpx.AsyncClient, raw: RawClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The goodbye (a close frame saying why) waits this long for a reader that never reads.
    monkeypatch.setattr(stream_module, "GOODBYE_TIMEOUT", 0.3)
    running = await hubs.start(max_buffered=64_000)
    before = await scrape(http, running.metrics_url)
    # It takes one message, then reads no more: the kernel's buffers fill, then the hub's.
    stalled, answer = await raw.connect(running, running.token("alice"), queue=1)
    assert answer.startswith("40{"), answer
    pad = "x" * 50_000
    batch = [{"event": "bulk", "data": pad, "to": ["user:alice"]}] * 15
    with trio.fail_after(30):
        while True:
            await emit(running, batch)
            samples = await scrape(http, running.metrics_url)
            if moved(samples, before, "hub_disconnects_total", reason="slow consumer"):
                break
    assert moved(samples, before, "hub_disconnects_total", reason="slow consumer") == 1
    after = await scrape_until(http, running.metrics_url, lambda s: value(s, "hub_users") == 0)
    assert value(after, "hub_connections", transport="websocket") == 0
    del stalled


async def test_a_client_that_stops_answering_pings_is_a_heartbeat_timeout(
    hubs: Hubs, http: httpx.AsyncClient, raw: RawClients
) -> None:
    running = await hubs.start(ping_interval=0.2, ping_timeout=0.2)
    before = await scrape(http, running.metrics_url)
    mute, answer = await raw.connect(running, running.token("alice"), queue=64)
    assert answer.startswith("40{"), answer
    # It reads the pings ("2") and never answers them with a pong ("3").
    after = await scrape_until(
        http,
        running.metrics_url,
        lambda s: moved(s, before, "hub_disconnects_total", reason="ping timeout") >= 1,
        timeout=5,
    )
    assert moved(after, before, "hub_disconnects_total", reason="ping timeout") == 1
    assert value(after, "hub_sockets", namespace="/") == 0
    del mute


# -- Redis -----------------------------------------------------------------------------------


async def test_ready_and_the_redis_metrics_follow_redis(
    hubs: Hubs, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    with redis_server(tmp_path) as redis:
        running = await hubs.start(redis_url=redis.url)
        ready_url = running.addresses.internal_url + "/ready"
        up = await scrape_until(
            http, running.metrics_url, lambda s: value(s, "hub_redis_connected") == 1
        )
        ready = await http.get(ready_url)
        assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
        assert value(up, "hub_redis_outages_total") == 0
        assert abs(value(up, "hub_redis_state_since_seconds") - time.time()) < 60

        redis.kill()
        down = await scrape_until(
            http, running.metrics_url, lambda s: value(s, "hub_redis_connected") == 0
        )
        ready = await http.get(ready_url)
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "reason": "redis unreachable"}
        assert value(down, "hub_redis_outages_total") >= 1
        # A broadcast while Redis is away reaches no other node: dropped, and counted.
        await emit(running, {"event": "note", "data": 1, "to": ["user:alice"]})
        dropped = await scrape(http, running.metrics_url)
        assert moved(dropped, down, "hub_cluster_messages_dropped_total") >= 1

        redis.start()
        await scrape_until(
            http, running.metrics_url, lambda s: value(s, "hub_redis_connected") == 1, timeout=15
        )
        assert (await http.get(ready_url)).status_code == 200


# -- the pieces ----------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_a_bound_belongs_to_its_bucket() -> None:
    histogram = Histogram((0.001, 0.01, 0.1))
    for seconds in (0.0005, 0.001, 0.002, 0.01, 5.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == [(0.001, 2), (0.01, 4), (0.1, 4), (float("inf"), 5)]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(5.0135)
    with pytest.raises(ValueError, match="increase"):
        Histogram((0.1, 0.01))


@pytest.mark.parametrize(
    ("raw_value", "expected"),
    [("1", True), ("true", True), ("on", True), ("0", False), ("no", False)],
)
def test_hub_metrics_public_is_read_from_the_environment(raw_value: str, expected: bool) -> None:
    assert Config.from_env({"HUB_METRICS_PUBLIC": raw_value}).metrics_public is expected


def test_a_hub_metrics_public_that_is_not_a_yes_or_no_is_refused() -> None:
    with pytest.raises(ConfigError, match="HUB_METRICS_PUBLIC must be 1 or 0"):
        Config.from_env({"HUB_METRICS_PUBLIC": "maybe"})
