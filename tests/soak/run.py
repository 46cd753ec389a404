"""One soak run: two hub nodes on a real Redis, a crowd of stock clients with churn, emits
through ``/internal/emit`` on both nodes, Redis killed and started again in the middle.

The run's parts, each a task of one nursery:

- **the ramp**: the first tabs open at ``Settings.ramp`` a second, spread over both nodes;
- **the posters**, one per node: at a steady rate, POST ``/internal/emit`` (one emit, or a batch
  of three), each emit a ``segmentation-update`` whose ``imageId`` is ``<node>-<sequence>``, to a
  user room, a project room, or both; each request is sent when the last one is answered (or at
  its time, whichever is later), so what one poster sends is ordered;
- **the churn**: tabs drop their connection as a network would (they come back with connection
  state recovery), or close for good while new ones open;
- **the outage**: Redis is killed (SIGKILL) in the middle of the run and started again on the
  same port ``Settings.outage`` seconds later;
- **the watch**: every node's ``/ready`` (a few times a second: when it lost Redis and when it
  had it back) and, every ``Settings.sample`` seconds, the memory and CPU of every process, the
  sockets each node holds and the tabs the swarm has connected.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from support.redis_server import RedisServer, free_port

from hub.app.auth import AuthSettings, mint_token
from soak.population import Population, Tab, populate, seed_store
from soak.processes import (
    EMIT_TOKEN,
    SECRET,
    HubNode,
    SoakError,
    Swarm,
    open_nodes,
    open_swarm,
    read_cpu_seconds,
    read_rss_kb,
)

__all__ = ["NODES", "Emit", "Outcome", "Sample", "Settings", "Timeline", "load", "run"]

NODES = ("n1", "n2")
BATCH = 3
"""Emits in a batched request."""
QUIET = 10.0
"""Seconds at the end of the load without churn, so every dropped tab is back (the stock client
reconnects within 5 s) before the emits stop."""
SETTLE = 3.0
"""Seconds between the last emit and closing the tabs, for what is on its way."""
CONNECT_WAIT = 60.0
"""How long the first tabs may take to be connected once all are opened."""
REQUEST_TIMEOUT = 15.0


def now_ms() -> float:
    """CLOCK_MONOTONIC in milliseconds: the clock of the swarm's log too."""
    return time.monotonic() * 1000.0


@attrs.frozen
class Settings:
    """What a run does. Times in seconds.

    Attributes:
        clients: tabs open at once (the churn keeps the number).
        duration: how long emits are posted (the ramp comes before).
        rate: emits per second, over both nodes.
        churn: the share of the open tabs that drop or close each minute.
        drop_share: of those, the share that drop (and come back); the others close for good,
            and as many new tabs open (half of them the same user's).
        outage: how long Redis is down, in the middle of the load.
        ramp: tabs opened per second at the start.
        sample: seconds between two samples of memory and connections.
        margin: an emit answered less than this before a tab's disconnection is on the edge:
            its event may be on the wire when the tab goes (see ``soak.analysis``).
        seed: the seed of every random choice.
        batch_share: the share of requests that carry a batch of :data:`BATCH` emits.
        node_env: more environment for the nodes (``HUB_*`` settings), as pairs.
    """

    clients: int = 2000
    duration: float = 300.0
    rate: float = 40.0
    churn: float = 0.5
    drop_share: float = 0.6
    outage: float = 10.0
    ramp: float = 200.0
    sample: float = 2.0
    margin: float = 2.0
    seed: int = 1
    batch_share: float = 0.1
    node_env: tuple[tuple[str, str], ...] = ()


@attrs.define
class Emit:
    """One emit posted, and the endpoint's answer for it.

    Attributes:
        key: the event's ``imageId``: ``<node>-<sequence>``.
        node: the node whose endpoint took it.
        rooms: its ``to``.
        posted, answered: when its request was sent and answered (ms, CLOCK_MONOTONIC); answered
            is None when no answer came.
        status: the HTTP status (None without an answer).
        delivered: the sockets the answer counted.
        complete: False when the answer said ``"complete": false`` (a node or Redis did not
            answer: this node's sockets had it, the others maybe not).
        error: what went wrong, when something did.
    """

    key: str
    node: str
    rooms: tuple[str, ...]
    posted: float
    answered: float | None = None
    status: int | None = None
    delivered: int | None = None
    complete: bool = True
    error: str | None = None


@attrs.frozen
class Sample:
    """The processes at one moment (``at``: ms, CLOCK_MONOTONIC)."""

    at: float
    rss_kb: dict[str, int]  # per node, and "swarm", "redis"
    cpu_s: dict[str, float]  # per node
    sockets: dict[str, int | None]  # per node: what /internal/connections counts
    connected: int  # tabs connected, as the swarm sees them
    tabs: int  # tabs open


@attrs.define
class Timeline:
    """When things happened, in ms of CLOCK_MONOTONIC."""

    start: float = 0.0
    load: float = 0.0  # the first emit
    kill: float | None = None
    restart: float | None = None
    back: dict[str, float] = attrs.field(factory=dict)  # per node: ready again after the restart
    end: float = 0.0  # the last emit
    ready_changes: list[tuple[float, str, bool]] = attrs.field(factory=list)

    def outage(self) -> tuple[float, float] | None:
        """Redis down, from the kill until every node is ready again (ms); None without one."""
        if self.kill is None:
            return None
        if len(self.back) < len(NODES):
            return (self.kill, math.inf)
        return (self.kill, max(self.back.values()))


@attrs.define
class Outcome:
    """What a run leaves for :mod:`soak.analysis`."""

    settings: Settings
    tabs: list[Tab]
    emits: list[Emit]
    samples: list[Sample]
    timeline: Timeline
    swarm_log: Path
    node_errors: dict[str, list[str]]
    seconds: float


class _Run:
    """The state of a run while it goes: its tabs, what was posted, what was sampled."""

    def __init__(
        self, settings: Settings, population: Population, nodes: dict[str, HubNode]
    ) -> None:
        self.settings = settings
        self.population = population
        self.nodes = nodes
        self.emits: list[Emit] = []
        self.samples: list[Sample] = []
        self.timeline = Timeline(start=now_ms())
        self.open_tabs: dict[int, Tab] = {}
        self.auth = AuthSettings(secret=SECRET)
        self.tokens: dict[str, str] = {}
        self.redis: RedisServer | None = None
        self.swarm: Swarm | None = None
        self.say: Callable[[str], None] = print

    # -- tabs ------------------------------------------------------------------------------

    def token(self, user: str) -> str:
        if user not in self.tokens:
            # Longer than any run: a token that expires closes its tabs' connections.
            self.tokens[user] = mint_token(user, self.auth, expires_in=6 * 3600)
        return self.tokens[user]

    async def open(self, tab: Tab) -> None:
        assert self.swarm is not None
        self.open_tabs[tab.index] = tab
        await self.swarm.send(
            {
                "op": "open",
                "tab": tab.index,
                "url": self.nodes[tab.node].url,
                "token": self.token(tab.user),
                "project": tab.project,
                "transports": list(tab.transports),
            }
        )

    async def ramp(self) -> None:
        first = self.population.first_tabs(self.settings.clients)
        interval = 1.0 / self.settings.ramp
        for tab in first:
            await self.open(tab)
            await trio.sleep(interval)
        assert self.swarm is not None
        with trio.move_on_after(CONNECT_WAIT):
            while self.swarm.stats.get("connected", 0) < len(first):
                await trio.sleep(0.2)
        connected = self.swarm.stats.get("connected", 0)
        self.say(f"{connected} of {len(first)} tabs connected")
        if connected < len(first) * 0.95:
            raise SoakError(f"only {connected} of {len(first)} tabs connected")

    async def churn(self, until: float) -> None:
        """Drop or replace tabs at the churn rate, until ``until`` (trio time)."""
        assert self.swarm is not None
        rng = random.Random(f"{self.settings.seed}:churn")
        step, owed = 0.25, 0.0
        while trio.current_time() < until:
            await trio.sleep(step)
            owed += self.settings.churn * len(self.open_tabs) / 60.0 * step
            while owed >= 1.0:
                owed -= 1.0
                index = rng.choice(list(self.open_tabs))
                if rng.random() < self.settings.drop_share:
                    await self.swarm.send({"op": "drop", "tab": index})
                    continue
                tab = self.open_tabs.pop(index)
                await self.swarm.send({"op": "close", "tab": index})
                user = tab.user if rng.random() < 0.5 else None
                await self.open(self.population.new_tab(user))

    # -- emits -----------------------------------------------------------------------------

    def _item(self, rng: random.Random, node: str, seq: int) -> tuple[str, dict[str, Any]]:
        population = self.population
        user = rng.choice(population.users)
        projects = population.access[user]
        kind = rng.random()
        if kind < 0.3 or (kind < 0.4 and not projects):
            project = rng.choice(list(population.projects))
            rooms = [f"project:{project}"]
        elif kind < 0.4:
            project = rng.choice(projects)
            rooms = [f"user:{user}", f"project:{project}"]
        else:
            project = rng.choice(projects) if projects else "none"
            rooms = [f"user:{user}"]
        key = f"{node}-{seq}"
        data = {"imageId": key, "projectId": project, "status": "segmented", "progress": 100}
        return key, {"event": "segmentation-update", "to": rooms, "data": data}

    async def post(self, node: HubNode, until: float) -> None:
        """Post emits to ``node`` at its share of the rate, one request at a time."""
        rng = random.Random(f"{self.settings.seed}:post:{node.id}")
        interval = len(self.nodes) / self.settings.rate
        headers = {"Authorization": f"Bearer {EMIT_TOKEN}"}
        seq = 0
        async with httpx.AsyncClient(
            base_url=node.internal_url, headers=headers, timeout=REQUEST_TIMEOUT
        ) as client:
            due = trio.current_time()
            while due < until:
                count = BATCH if rng.random() < self.settings.batch_share else 1
                items = []
                for _ in range(count):
                    seq += 1
                    items.append(self._item(rng, node.id, seq))
                await self._post_one(client, node.id, items)
                # Steady: the next one at its time; late, at once (never a burst to catch up).
                due = max(due + interval * count, trio.current_time())
                await trio.sleep_until(due)

    async def _post_one(
        self, client: httpx.AsyncClient, node: str, items: list[tuple[str, dict[str, Any]]]
    ) -> None:
        posted = now_ms()
        emits = [
            Emit(key, node, tuple(body["to"]), posted) for key, body in items
        ]  # in the order the hub sends them
        self.emits.extend(emits)
        body: Any = items[0][1] if len(items) == 1 else [item for _, item in items]
        try:
            response = await client.post("/internal/emit", json=body)
        except httpx.HTTPError as exc:
            for emit in emits:
                emit.error = f"{type(exc).__name__}: {exc}"
            return
        answered = now_ms()
        answer: Any = {}
        with contextlib.suppress(ValueError):
            answer = response.json()
        results = answer.get("results", [answer]) if isinstance(answer, dict) else []
        results += [{}] * (len(emits) - len(results))
        for emit, result in zip(emits, results, strict=False):
            emit.answered = answered
            emit.status = response.status_code
            if response.status_code != 200:
                emit.error = response.text[:200]
                continue
            emit.delivered = result.get("delivered")
            emit.complete = result.get("complete", True) is not False
            if not emit.complete:
                emit.error = str(result.get("error"))

    # -- the outage and the watch ----------------------------------------------------------

    async def outage(self, at: float) -> None:
        assert self.redis is not None
        await trio.sleep_until(at)
        self.redis.kill()
        self.timeline.kill = now_ms()
        self.say("redis killed")
        await trio.sleep(self.settings.outage)
        await trio.to_thread.run_sync(self.redis.start)
        self.timeline.restart = now_ms()
        self.say("redis started again")

    async def watch_ready(self) -> None:
        """Poll every node's ``/ready``; note each change, and when each is back after the
        restart."""
        state = dict.fromkeys(self.nodes, True)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                for node in self.nodes.values():
                    try:
                        response = await client.get(f"{node.internal_url}/ready")
                        ready = response.status_code == 200
                    except httpx.HTTPError:
                        ready = False
                    t = now_ms()
                    if ready != state[node.id]:
                        state[node.id] = ready
                        self.timeline.ready_changes.append((t, node.id, ready))
                    restart = self.timeline.restart
                    if ready and restart is not None and node.id not in self.timeline.back:
                        self.timeline.back[node.id] = t
                await trio.sleep(0.2)

    async def watch(self) -> None:
        """A :class:`Sample` every ``Settings.sample`` seconds."""
        assert self.swarm is not None
        swarm = self.swarm
        async with httpx.AsyncClient(
            timeout=2.0, headers={"Authorization": f"Bearer {EMIT_TOKEN}"}
        ) as client:
            while True:
                sockets: dict[str, int | None] = {}
                for node in self.nodes.values():
                    try:
                        response = await client.get(f"{node.internal_url}/internal/connections")
                        sockets[node.id] = int(response.json()["sockets"])
                    except (httpx.HTTPError, ValueError, KeyError):
                        sockets[node.id] = None
                redis = self.redis.process if self.redis is not None else None
                rss = {node.id: read_rss_kb(node.pid) for node in self.nodes.values()}
                rss["swarm"] = read_rss_kb(swarm.pid)
                rss["redis"] = read_rss_kb(redis.pid) if redis is not None else 0
                self.samples.append(
                    Sample(
                        at=now_ms(),
                        rss_kb=rss,
                        cpu_s={node.id: read_cpu_seconds(node.pid) for node in self.nodes.values()},
                        sockets=sockets,
                        connected=int(swarm.stats.get("connected", 0)),
                        tabs=int(swarm.stats.get("tabs", 0)),
                    )
                )
                await trio.sleep(self.settings.sample)

    async def load(self) -> None:
        """The ramp, then the load with its churn and outage, then the settling."""
        settings = self.settings
        await self.ramp()
        self.timeline.load = now_ms()
        start = trio.current_time()
        end = start + settings.duration
        self.say(f"load for {settings.duration:.0f} s")
        async with trio.open_nursery() as nursery:
            for node in self.nodes.values():
                nursery.start_soon(self.post, node, end)
            nursery.start_soon(self.churn, end - min(QUIET, settings.duration / 4))
            if settings.outage > 0:
                nursery.start_soon(self.outage, start + (settings.duration - settings.outage) / 2)
        self.timeline.end = now_ms()
        await trio.sleep(SETTLE)


async def run(settings: Settings, folder: Path, say: Callable[[str], None] = print) -> Outcome:
    """Make a run; every process's output goes to ``folder``.

    Raises:
        SoakError: the run could not be made.
    """
    began = time.monotonic()
    population = populate(settings.clients, NODES, settings.seed)
    database = folder / "hub.sqlite3"
    database.unlink(missing_ok=True)  # a kept folder used again
    await trio.to_thread.run_sync(seed_store, population, database)
    say(f"store: {len(population.users)} users, {len(population.projects)} projects")
    redis = RedisServer(_redis_binary(), folder)
    await trio.to_thread.run_sync(redis.start)
    try:
        async with (
            open_nodes(
                NODES, redis.url, database, folder, free_port, dict(settings.node_env)
            ) as nodes,
            open_swarm(folder) as swarm,
        ):
            say(f"nodes {', '.join(node.url for node in nodes.values())}, redis {redis.url}")
            state = _Run(settings, population, nodes)
            state.redis, state.swarm, state.say = redis, swarm, say
            async with trio.open_nursery() as nursery:
                nursery.start_soon(swarm.read_stats)
                nursery.start_soon(state.watch_ready)
                nursery.start_soon(state.watch)
                await state.load()
                await swarm.finish(timeout=30.0)
                nursery.cancel_scope.cancel()
            say("tabs closed")
    finally:
        redis.kill()
    say("nodes stopped")
    errors = {node.id: node.error_lines() for node in nodes.values()}  # shutdown included
    outcome = Outcome(
        settings=settings,
        tabs=population.tabs,
        emits=state.emits,
        samples=state.samples,
        timeline=state.timeline,
        swarm_log=swarm.log,
        node_errors=errors,
        seconds=time.monotonic() - began,
    )
    # The run as it was measured, beside the swarm's log: enough to count it again.
    raw = attrs.asdict(
        outcome, value_serializer=lambda _, __, v: str(v) if isinstance(v, Path) else v
    )
    (folder / "outcome.json").write_text(json.dumps(raw) + "\n")
    return outcome


def load(folder: Path) -> Outcome:
    """The outcome of a run kept in ``folder`` (``--logs``), to count it again."""
    raw = json.loads((folder / "outcome.json").read_text())
    timeline = raw["timeline"]
    timeline["ready_changes"] = [tuple(change) for change in timeline["ready_changes"]]
    return Outcome(
        settings=Settings(
            **{**raw["settings"], "node_env": tuple(map(tuple, raw["settings"]["node_env"]))}
        ),
        tabs=[Tab(**{**tab, "transports": tuple(tab["transports"])}) for tab in raw["tabs"]],
        emits=[Emit(**{**emit, "rooms": tuple(emit["rooms"])}) for emit in raw["emits"]],
        samples=[Sample(**sample) for sample in raw["samples"]],
        timeline=Timeline(**timeline),
        swarm_log=folder / "swarm.log",
        node_errors=raw["node_errors"],
        seconds=raw["seconds"],
    )


def _redis_binary() -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        raise SoakError("redis-server is not installed (apt-get install redis-server)")
    return path


def temporary_folder() -> tempfile.TemporaryDirectory[str]:
    """Where a run's processes write, unless ``--logs`` says."""
    return tempfile.TemporaryDirectory(prefix="hub-soak-")
