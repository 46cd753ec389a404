"""Hub nodes behind a real nginx, with the configuration that ``hub nginx-config`` renders.

The cluster tests start three ``hub serve`` processes (``--node-id n1``, ``n2``, ``n3``) and
Debian's nginx in front of them (:mod:`support.cluster`), and connect through nginx with the
official socket.io-client in Node: over polling only, WebSocket only and the default upgrade. A
session must stay on the node that opened it, which is checked three ways: the stock client
never loses its session (no ``connect_error``, no reconnection, the upgrade succeeds), the
socket is listed on exactly one node's ``/internal/users/<id>/sockets``, and nginx's access log
shows every request carrying a ``sid`` answered by the node its prefix names.

Each node delivers here only to its own sockets, by its own internal API. Delivery across nodes
(a user with tabs on two nodes gets each emit once per tab, ``except`` across nodes, the emit
endpoint of one node reaching sockets of another) needs the Redis adapter and belongs with its
tests: ``start_cluster(directory, node_args=("--redis", url))`` starts this same set-up with
every node on a redis-server.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from interop.harness import CONNECT_TIMEOUT, STEP_TIMEOUT, ClientProcess, node_command, open_client
from support.cluster import (
    EMIT_TOKEN,
    Cluster,
    LogLine,
    Node,
    hub_env,
    nginx_binary,
    start_cluster,
)

from hub.app.config import Config, ConfigError
from hub.app.nginx import parse_listen, parse_nodes, render

ROOT = Path(__file__).resolve().parents[1]
SWARM = ROOT / "tests" / "support" / "swarm.mjs"
AUTH = {"Authorization": f"Bearer {EMIT_TOKEN}"}
ENGINE_SID = re.compile(r"(n\d)\.[A-Za-z0-9_-]{20}")
FAST_RECONNECT: dict[str, Any] = {"reconnectionDelay": 100, "reconnectionDelayMax": 200}
Record = dict[str, Any]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("cluster"), ("n1", "n2", "n3")) as running:
        yield running


# -- helpers -----------------------------------------------------------------------------------


async def internal(node: Node, method: str, path: str, body: Any = None) -> httpx.Response:
    """A request to one node's internal API, directly (not through nginx)."""
    async with httpx.AsyncClient(base_url=node.url, headers=AUTH, timeout=STEP_TIMEOUT) as http:
        return await http.request(method, "/internal/" + path, json=body)


async def sockets_by_node(cluster: Cluster, user: str) -> dict[str, list[Record]]:
    """Each node's list of ``user``'s sockets."""
    found = {}
    for node in cluster.nodes:
        response = await internal(node, "GET", f"users/{user}/sockets")
        assert response.status_code == 200, response.text
        found[node.id] = response.json()["sockets"]
    return found


async def holder(cluster: Cluster, user: str, socket_id: str) -> tuple[Node, Record]:
    """The one node that holds socket ``socket_id``, and its listing there."""
    where = [
        (cluster.node(node_id), socket)
        for node_id, sockets in (await sockets_by_node(cluster, user)).items()
        for socket in sockets
        if socket["id"] == socket_id
    ]
    assert len(where) == 1, f"socket {socket_id} is listed on {len(where)} nodes: {where}"
    return where[0]


async def emit(node: Node, event: str, data: Any, to: str) -> int:
    response = await internal(node, "POST", "emit", {"event": event, "data": data, "to": [to]})
    assert response.status_code == 200, response.text
    delivered: int = response.json()["delivered"]
    return delivered


def lost_nothing(client: ClientProcess) -> None:
    """The client kept its first session: one Engine.IO open, no error, no disconnect."""
    assert len(client.seen("open")) == 1, client.report()
    for trouble in ("connect_error", "disconnect", "reconnect_attempt", "manager_error"):
        assert client.seen(trouble) == [], client.report()


async def raw_request(port: int, target: str, headers: str = "") -> tuple[int, bytes]:
    """Send a request line as it is (no normalisation of the target); the status and body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = f"GET {target} HTTP/1.1\r\nHost: hub\r\n{headers}Connection: close\r\n\r\n"
        await stream.send_all(request.encode())
        answer = b""
        with trio.fail_after(STEP_TIMEOUT):
            while chunk := await stream.receive_some():
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# -- the rendered configuration ----------------------------------------------------------------


def nginx_test(directory: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on ``config``, with a prefix in ``directory``."""
    directory.mkdir(exist_ok=True)
    return subprocess.run(
        [nginx_binary(), "-t", "-p", str(directory), "-c", str(config)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_the_repository_config_is_the_rendered_one_and_nginx_accepts_it(tmp_path: Path) -> None:
    shipped = ROOT / "nginx" / "hub.conf"
    rendered = render(parse_nodes("127.0.0.1:3001,127.0.0.1:3002"), Config(), listen="8080")
    assert shipped.read_text() == rendered, "render nginx/hub.conf again (see its header)"
    checked = nginx_test(tmp_path / "prefix", shipped)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_the_http_only_and_ip_hash_variants_are_valid_nginx(tmp_path: Path) -> None:
    nodes = parse_nodes("a=127.0.0.1:3001,b=127.0.0.1:3002,c=[::1]:3003")
    http = tmp_path / "hub-http.conf"
    http.write_text(render(nodes, Config(), listen="127.0.0.1:8081", http_only=True))
    text = http.read_text()
    assert "events {" not in text
    assert "access_log /var/log/nginx/hub-access.log hub;" in text
    main = tmp_path / "main.conf"
    main.write_text(
        f"pid nginx.pid;\nevents {{}}\nhttp {{\n    access_log off;\n    include {http};\n}}\n"
    )
    checked = nginx_test(tmp_path / "prefix", main)
    assert checked.returncode == 0, checked.stderr

    hashed = tmp_path / "hash.conf"
    hashed.write_text(render(nodes, Config(), balancing="ip_hash"))
    assert "    ip_hash;\n" in hashed.read_text()
    assert "least_conn" not in hashed.read_text()
    checked = nginx_test(tmp_path / "prefix2", hashed)
    assert checked.returncode == 0, checked.stderr


def test_timeouts_outlast_the_heartbeat_and_the_body_limit_follows_max_payload() -> None:
    config = Config(ping_interval=5, ping_timeout=3.5, max_payload=2000, path="/rt/")
    text = render(parse_nodes("127.0.0.1:1"), config)
    for directive in ("proxy_read_timeout", "proxy_send_timeout", "send_timeout"):
        (seconds,) = re.findall(rf"^\s*{directive} (\d+)s;$", text, re.MULTILINE)
        assert int(seconds) > 5 + 3.5
    assert re.search(r"^\s*client_max_body_size 3024;$", text, re.MULTILINE)
    assert re.search(r"^\s*location /rt/ \{$", text, re.MULTILINE)


def test_node_lists_and_listen_values_are_checked() -> None:
    assert parse_nodes(" 10.0.0.5:3000 , 10.0.0.6:3000 ") == parse_nodes(
        "n1=10.0.0.5:3000,n2=10.0.0.6:3000"
    )
    assert [n.id for n in parse_nodes("web-a=h1:1,[::1]:2")] == ["web-a", "n2"]
    for bad, message in [
        ("", "names no node"),
        ("127.0.0.1", "expected host:port"),
        ("127.0.0.1:0", "expected host:port"),
        ("a.b=127.0.0.1:1", "node id"),
        ("x=127.0.0.1:1,x=127.0.0.1:2", "node id given twice: x"),
        ("127.0.0.1:1,127.0.0.1:1", "node address given twice"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_nodes(bad)
    assert parse_listen("8080") == "8080"
    assert parse_listen("[::]:443") == "[::]:443"
    with pytest.raises(ConfigError):
        parse_listen("eighty")


def test_the_commands_refuse_a_bad_node_id_or_node_list(tmp_path: Path) -> None:
    env = hub_env(tmp_path / "hub.sqlite3")
    for args, message in [
        (["serve", "--node-id", "n1.x"], "HUB_NODE_ID must be"),
        (["serve", "--trusted-proxies", "nginx"], "HUB_TRUSTED_PROXIES"),
        (["nginx-config", "--nodes", "127.0.0.1"], "expected host:port"),
        (["nginx-config", "--nodes", "127.0.0.1:1", "--listen", "x"], "--listen"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "hub.cli", *args],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (2, ""), done
        assert done.stderr.startswith("hub: "), done.stderr
        assert message in done.stderr, done.stderr


# -- through nginx -----------------------------------------------------------------------------

TRANSPORTS = {
    "polling": ({"transports": ["polling"]}, "polling", "carol"),
    "websocket": ({"transports": ["websocket"]}, "websocket", "dave"),
    "upgrade": ({}, "websocket", "erin"),
}


@pytest.mark.parametrize("mode", list(TRANSPORTS))
async def test_each_transport_connects_through_nginx_and_stays_on_one_node(
    cluster: Cluster, nursery: trio.Nursery, mode: str
) -> None:
    options, final_transport, user = TRANSPORTS[mode]
    async with open_client(
        nursery,
        node_command(),
        {"url": cluster.url, "auth": {"token": cluster.token(user)}, **options},
        name=f"{mode} client",
    ) as client:
        connected = await client.expect("connect", timeout=CONNECT_TIMEOUT)
        if mode == "upgrade":
            await client.expect("upgrade", transport="websocket", timeout=CONNECT_TIMEOUT)
        # An event with an ack, client to server: the join goes through the session's node.
        await client.send(
            op="emitWithAck", event="join-project", args=[{"projectId": "demo"}], tag="join"
        )
        assert (await client.expect("ack", tag="join"))["args"] == [{"ok": True}]

        node, listed = await holder(cluster, user, connected["id"])
        assert listed["transport"] == final_transport
        assert "project:demo" in listed["rooms"]

        # Server to client: only the holding node has the socket; each node delivers locally.
        for other in cluster.nodes:
            assert await emit(other, "where", {"node": other.id}, f"user:{user}") == (
                1 if other is node else 0
            )
        assert await emit(node, "fence", {}, f"user:{user}") == 1
        await client.expect("event", name="fence")
        # (its recovery offset follows the data)
        assert [e["args"][:1] for e in client.events("where")] == [[{"node": node.id}]]
        lost_nothing(client)

    def upgraded(line: LogLine) -> bool:
        return line.transport == "websocket" and line.status == 101

    # (a WebSocket-only session makes one request, without a sid: nothing to wait for)
    routed = await cluster.check_affinity(upgraded if mode == "upgrade" else lambda line: True)
    if mode != "websocket":
        assert any(line.transport == "polling" for line in routed)
    if mode == "upgrade":  # the upgrade carries the sid of the polling session
        assert any(upgraded(line) for line in routed)


async def test_many_polling_clients_spread_over_the_nodes_and_keep_their_sessions(
    cluster: Cluster, nursery: trio.Nursery
) -> None:
    count = 30
    node = node_command()[0]
    options = {
        "url": cluster.url,
        "count": count,
        "transports": ["polling"],
        "auth": {"token": cluster.token("bob")},
        "join": ["join-project", {"projectId": "demo"}],
        "reconnection": False,
    }
    async with open_client(nursery, [node, str(SWARM)], options, name="swarm") as swarm:
        ready = [await swarm.expect("ready", timeout=4 * CONNECT_TIMEOUT) for _ in range(count)]
        assert sorted(r["i"] for r in ready) == list(range(count))
        assert all(r["ack"] == {"ok": True} and r["transport"] == "polling" for r in ready)
        node_of = {}
        for record in ready:
            match = ENGINE_SID.fullmatch(record["engine"])
            assert match, record
            node_of[record["i"]] = match[1]
        spread = Counter(node_of.values())
        # Handshakes are balanced: every node has its share (least_conn, shared between
        # nginx's workers).
        assert sorted(spread) == ["n1", "n2", "n3"], spread
        assert min(spread.values()) >= count // 6, spread

        # Each node holds exactly the sessions whose ids it made.
        listed = await sockets_by_node(cluster, "bob")
        assert {n: len(s) for n, s in listed.items()} == dict(spread)

        # And its long-polls reach them: each socket gets the event of its own node, once.
        for cluster_node in cluster.nodes:
            delivered = await emit(cluster_node, "hello", {"node": cluster_node.id}, "user:bob")
            assert delivered == spread[cluster_node.id]
        for cluster_node in cluster.nodes:
            await emit(cluster_node, "fence", {}, "user:bob")
        for _ in range(count):
            await swarm.expect("event", name="fence", timeout=4 * STEP_TIMEOUT)
        hellos = Counter((e["i"], e["args"][0]["node"]) for e in swarm.seen("event", name="hello"))
        assert hellos == Counter(node_of.items())
        for trouble in ("connect_error", "disconnect", "reconnect_attempt"):
            assert swarm.seen(trouble) == [], swarm.report()

    routed = await cluster.check_affinity(lambda line: True)
    assert sum(line.transport == "polling" for line in routed) >= 2 * count
    assert all(line.status != 400 for line in routed if line.sid[:2] in spread)


async def test_the_internal_api_is_not_reachable_through_nginx(cluster: Cluster) -> None:
    authorization = f"Authorization: Bearer {EMIT_TOKEN}\r\n"
    for target in [
        "/internal/connections",
        "/internal",
        "//internal/connections",
        "/%69nternal/connections",
        "/socket.io/../internal/connections",
        "/socket.io/%2e%2e/internal/connections",
        "/socket.io/..%2Finternal/connections",
        "/other/",
    ]:
        status, body = await raw_request(cluster.nginx.port, target, authorization)
        assert status in (400, 404), (target, status, body)
        assert b'"sockets"' not in body, (target, body)
    async with httpx.AsyncClient(base_url=cluster.url, headers=AUTH) as http:
        response = await http.post(
            "/internal/emit", json={"event": "x", "data": {}, "to": ["user:alice"]}
        )
        assert response.status_code == 404
        assert b"delivered" not in response.content

    # On the nodes themselves (the private network) it answers.
    for node in cluster.nodes:
        response = await internal(node, "GET", "connections")
        assert response.status_code == 200
        assert set(response.json()) >= {"users", "sockets"}


async def test_a_sid_of_no_known_node_is_an_unknown_session(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=STEP_TIMEOUT) as http:
        response = await http.get("/socket.io/?EIO=4&transport=polling&sid=n9.abc")
        assert response.status_code == 400
        assert response.json() == {"code": 1, "message": "Session ID unknown"}
        # A sid of a node but a session it does not have: that node says so itself.
        response = await http.get("/socket.io/?EIO=4&transport=polling&sid=n2.abc")
        assert response.status_code == 400
        assert response.json() == {"code": 1, "message": "Session ID unknown"}
    logged = await cluster.nginx.logged(lambda line: line.sid == "n2.abc")
    (line,) = [line for line in logged if line.sid == "n2.abc"]
    assert line.node == cluster.node("n2").address


POLLING = "/socket.io/?EIO=4&transport=polling"


async def handshake(http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    """Open an Engine.IO session over long-polling; its sid."""
    with trio.fail_after(STEP_TIMEOUT):
        response = await http.get(POLLING, headers=headers)
    assert response.status_code == 200, response.text
    assert response.text.startswith("0{"), response.text
    sid: str = json.loads(response.text[1:])["sid"]
    return sid


async def connect_polling(url: str, token: str, local: str, headers: dict[str, str]) -> None:
    """A Socket.IO connection over raw long-polling from ``local``, left open."""
    transport = httpx.AsyncHTTPTransport(local_address=local)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=STEP_TIMEOUT) as http:
        sid = await handshake(http, headers)
        with trio.fail_after(STEP_TIMEOUT):
            connect = "40" + json.dumps({"token": token})
            assert (await http.post(f"{POLLING}&sid={sid}", content=connect)).text == "ok"
            answer = (await http.get(f"{POLLING}&sid={sid}")).text
        assert answer.startswith('40{"sid":'), answer


async def test_the_hub_sees_the_client_address_and_only_its_proxy_may_say_it(
    cluster: Cluster,
) -> None:
    forged = {"X-Forwarded-For": "10.9.8.7", "X-Real-IP": "10.9.8.7"}
    token = cluster.token("frank")
    # Through nginx from 127.0.0.3: nginx connects to the node from 127.0.0.1 and says who the
    # client is; what the client claimed itself stays to the left and is not taken.
    await connect_polling(cluster.url, token, "127.0.0.3", forged)
    # Straight to a node from 127.0.0.4, which is no trusted proxy: its headers are ignored.
    await connect_polling(cluster.nodes[0].url, token, "127.0.0.4", forged)
    # From 127.0.0.1, the proxy's address (HUB_TRUSTED_PROXIES): its word is taken.
    await connect_polling(cluster.nodes[1].url, token, "127.0.0.1", {"X-Forwarded-For": "10.1.1.1"})

    listed = await sockets_by_node(cluster, "frank")
    addresses = sorted(socket["address"] for sockets in listed.values() for socket in sockets)
    assert addresses == ["10.1.1.1", "127.0.0.3", "127.0.0.4"]
    logged = await cluster.nginx.logged(lambda line: line.client == "127.0.0.3")
    assert any(line.client == "127.0.0.3" for line in logged)


async def test_a_session_whose_node_is_gone_is_unknown_and_the_client_moves_on(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    with start_cluster(tmp_path, ("n1", "n2")) as two:
        async with open_client(
            nursery,
            node_command(),
            {
                "url": two.url,
                "auth": {"token": two.token("grace")},
                "transports": ["polling"],
                **FAST_RECONNECT,
            },
            name="polling client",
        ) as client:
            first = await client.expect("connect", timeout=CONNECT_TIMEOUT)
            gone, _ = await holder(two, "grace", first["id"])
            survivor = next(node for node in two.nodes if node is not gone)
            # A session of the same node, opened by hand, to ask for after the node is gone.
            async with httpx.AsyncClient(base_url=two.url, timeout=STEP_TIMEOUT) as http:
                for _ in range(20):
                    lost_sid = await handshake(http)
                    if lost_sid.startswith(gone.id + "."):
                        break
                assert lost_sid.startswith(gone.id + ".")

                gone.kill()
                with trio.fail_after(STEP_TIMEOUT):
                    response = await http.get(f"{POLLING}&sid={lost_sid}")
                assert response.status_code == 400
                assert response.json() == {"code": 1, "message": "Session ID unknown"}

                # The stock client loses its long-poll, reconnects, and lands on the survivor.
                await client.expect("disconnect", timeout=STEP_TIMEOUT)
                second = await client.expect("connect", timeout=CONNECT_TIMEOUT)
                node, _ = await holder_alive(two, survivor, "grace", second["id"])
                assert node is survivor
                for _ in range(3):
                    assert (await handshake(http)).startswith(survivor.id + ".")
        # nginx answered for the dead node: its request went there, and got the 400.
        logged = await two.nginx.logged(lambda line: line.sid == lost_sid)
        *_, lost = [line for line in logged if line.sid == lost_sid]
        assert (lost.node, lost.status) == (gone.address, 400)


async def holder_alive(
    cluster: Cluster, node: Node, user: str, socket_id: str
) -> tuple[Node, Record]:
    response = await internal(node, "GET", f"users/{user}/sockets")
    ids = [socket["id"] for socket in response.json()["sockets"]]
    assert socket_id in ids, (socket_id, ids, cluster.logs())
    return node, response.json()["sockets"][ids.index(socket_id)]
