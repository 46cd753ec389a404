"""``hub nginx-config``: an nginx configuration for several hub nodes behind one address.

nginx's ``map`` and ``upstream`` blocks must name every node, so the configuration is rendered
from the node list and from the hub's own settings (heartbeat, payload limit, path), read as
``hub serve`` reads them: the timeouts and the body limit then match what the nodes do.
``nginx/hub.conf`` in the repository is this renderer's output for two nodes; the comments in it
explain each choice.

Session affinity rests on the node id: a node started with ``--node-id n1`` (``HUB_NODE_ID``)
begins every Engine.IO session id with ``n1.``, and nginx sends a request whose ``sid`` starts
with ``n1.`` to that node. Handshakes (no ``sid`` yet) are balanced over all nodes.
"""

from __future__ import annotations

import math
import re

import attrs

from hub.app.config import Config, ConfigError
from hub.server.server import NODE_ID

__all__ = ["BALANCING", "Node", "parse_listen", "parse_nodes", "render"]

BALANCING = ("least_conn", "ip_hash")
"""How handshakes are spread over the nodes."""

TIMEOUT_MARGIN = 15
"""Seconds added to pingInterval + pingTimeout for nginx's read and send timeouts."""

_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


@attrs.frozen
class Node:
    """One hub node: its id (the prefix of its session ids) and its ``host:port``."""

    id: str
    address: str


def parse_nodes(text: str) -> list[Node]:
    """Parse ``"127.0.0.1:3001,127.0.0.1:3002"`` or ``"a=10.0.0.5:3000,b=10.0.0.6:3000"``.

    Nodes without an id are named ``n1``, ``n2``... in order (start each with that
    ``--node-id``).

    Raises:
        ConfigError: no node, a malformed id or address, or an id or address given twice.
    """
    nodes: list[Node] = []
    for index, item in enumerate(filter(None, (part.strip() for part in text.split(","))), 1):
        node_id, _, address = item.rpartition("=")
        node_id = node_id.strip() or f"n{index}"
        address = address.strip()
        if re.fullmatch(NODE_ID, node_id) is None:
            raise ConfigError(f"node id {node_id!r}: use 1 to 32 of A-Z a-z 0-9 _ -")
        match = _ADDRESS.fullmatch(address)
        if match is None or not 0 < int(match[1]) < 65536:
            raise ConfigError(f"node address {address!r}: expected host:port")
        nodes.append(Node(node_id, address))
    if not nodes:
        raise ConfigError("--nodes names no node (expected host:port,host:port...)")
    for field in ("id", "address"):
        values = [getattr(node, field) for node in nodes]
        twice = sorted({value for value in values if values.count(value) > 1})
        if twice:
            raise ConfigError(f"node {field} given twice: {', '.join(twice)}")
    return nodes


def parse_listen(text: str) -> str:
    """``"8080"``, ``"127.0.0.1:8080"`` or ``"[::]:80"``, checked, as nginx's ``listen`` takes it.

    Raises:
        ConfigError: it is none of these.
    """
    text = text.strip()
    port = text if text.isdigit() else None
    if port is None and (match := _ADDRESS.fullmatch(text)) is not None:
        port = match[1]
    if port is None or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen {text!r}: expected a port or host:port")
    return text


def _seconds(value: float) -> int:
    return math.ceil(value)


def render(
    nodes: list[Node],
    config: Config,
    *,
    listen: str = "8080",
    balancing: str = "least_conn",
    http_only: bool = False,
    access_log: str | None = None,
) -> str:
    """The nginx configuration for ``nodes``, from the hub settings in ``config``.

    Args:
        nodes: the hub nodes (:func:`parse_nodes`).
        config: the nodes' settings: ``path``, ``ping_interval``, ``ping_timeout``,
            ``max_payload`` are used.
        listen: nginx's ``listen`` value.
        balancing: ``least_conn`` or ``ip_hash`` for handshakes.
        http_only: only what goes in nginx's ``http {}`` block (a file for
            ``/etc/nginx/conf.d/``), instead of a whole configuration to run with ``nginx -p DIR
            -c FILE``.
        access_log: where the access log goes (default: ``access.log`` under the prefix, or
            ``/var/log/nginx/hub-access.log`` with ``http_only``).

    Raises:
        ValueError: ``balancing`` is not one of :data:`BALANCING`.
    """
    if balancing not in BALANCING:
        raise ValueError(f"balancing must be one of {BALANCING}, not {balancing!r}")
    if access_log is None:
        access_log = "/var/log/nginx/hub-access.log" if http_only else "access.log"
    heartbeat = config.ping_interval + config.ping_timeout
    width = max(len(node.id) for node in nodes)
    timeout = _seconds(heartbeat + TIMEOUT_MARGIN)
    http = _HTTP.format(
        sid_routes="\n".join(
            f"    ~^{node.id}\\.{' ' * (width + 1 - len(node.id))}hub_node_{node.id};"
            for node in nodes
        ),
        balancing=_BALANCING_TEXT[balancing],
        all_nodes="\n".join(
            f"    server {node.address} max_fails=1 fail_timeout=10s;  # {node.id}"
            for node in nodes
        ),
        one_node="\n".join(
            f"upstream hub_node_{node.id} {{\n    server {node.address};\n    keepalive 16;\n}}"
            for node in nodes
        ),
        listen=listen,
        path=config.path,
        ping_interval=f"{config.ping_interval:g}",
        ping_timeout=f"{config.ping_timeout:g}",
        heartbeat=f"{heartbeat:g}",
        timeout=timeout,
        margin=TIMEOUT_MARGIN,
        max_payload=config.max_payload,
        max_body=config.max_payload + 1024,
        access_log=access_log,
    )
    header = _HEADER.format(
        nodes=", ".join(f"{node.id}={node.address}" for node in nodes), listen=listen
    )
    if http_only:
        return header + _CONF_D + http
    body = "".join(f"    {line}".rstrip() + "\n" for line in http.splitlines())
    return header + _MAIN.format(http=body)


_HEADER = """\
# nginx in front of hub nodes ({nodes}), on {listen}.
# Rendered by `hub nginx-config` (hub/app/nginx.py) from the node list and the hub's settings
# (HUB_PING_INTERVAL, HUB_PING_TIMEOUT, HUB_MAX_PAYLOAD, HUB_PATH); render it again when they
# change. Each node must run with the id this file gives it: `hub serve --node-id n1 ...`.
"""

_CONF_D = """\
#
# This is the http-context part only: put it in /etc/nginx/conf.d/ (Debian's nginx.conf includes
# that folder inside `http {}`); `nginx -t && nginx -s reload`.

"""

_MAIN = """\
#
# A whole configuration; its relative paths (pid, logs, temporary files) are under the prefix:
#   nginx -p /path/to/a/writable/dir -c /absolute/path/to/this/file -g 'daemon off;'

worker_processes auto;
pid nginx.pid;
error_log error.log warn;

events {{
    # Every client holds two connections here for as long as it is connected (its own and the
    # one to its node): 8192 per worker is about 4,000 clients per worker. Raise it together
    # with the open-file limit (`ulimit -n`, worker_rlimit_nofile) for more.
    worker_connections 8192;
}}

http {{
    # Temporary files under the prefix, so that nginx runs as any user. Bodies and responses
    # are passed through unbuffered below; these are only used if that is changed.
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

{http}}}
"""

_BALANCING_TEXT = {
    "least_conn": (
        "    # WebSockets and long-polls are long-lived: a new session goes to the node with the\n"
        "    # fewest open connections.\n"
        "    least_conn;"
    ),
    "ip_hash": (
        "    # By the client's address: a client keeps its node across sessions while its\n"
        "    # address does not change. This also keeps the sessions of nodes that put no id in\n"
        "    # their session ids (a Node socket.io server in the same cluster) on one node,\n"
        "    # as socket.io's own documentation suggests; it fails for clients whose address\n"
        "    # changes (mobile networks, some corporate proxies) and piles a NAT onto one node.\n"
        "    ip_hash;"
    ),
}

_HTTP = """\
# -- WebSocket --------------------------------------------------------------------------------
# Upgrade and Connection are hop-by-hop headers: a proxy does not pass them on, so they are set
# again for the node. A plain request gets an empty Connection header, which lets nginx keep
# its connections to the nodes open between requests (`keepalive` in the upstreams below).
map $http_upgrade $hub_connection {{
    default upgrade;
    ""      "";
}}

# -- Session affinity -------------------------------------------------------------------------
# An Engine.IO session lives in the memory of the node that opened it: every long-polling
# request of the session and its WebSocket upgrade must reach that node, or the node answers
# 400 "Session ID unknown". Each node begins its session ids with its id and a dot ("n1.xxxx"),
# and the sid query parameter says where a request belongs. A request without sid is a
# handshake, balanced over all nodes; a sid of no known node goes there too, and its node
# answers 400 "Session ID unknown".
map $arg_sid $hub_upstream {{
    default hub_nodes;
{sid_routes}
}}

# Handshakes (new sessions). A node that refuses connections is skipped (the handshake is tried
# on the next one) and left out for 10 s. The zone shares the connection counts and the failures
# between nginx's workers; without it each worker would balance and fail over on its own.
upstream hub_nodes {{
    zone hub_nodes 64k;
{balancing}
{all_nodes}
    keepalive 32;
}}

# One upstream per node, for the requests of its sessions.
{one_node}

# The access log leaves the query string out (a client may carry its token there) but keeps
# the transport, the session and the node that answered.
log_format hub '$remote_addr [$time_local] "$request_method $uri" $status $body_bytes_sent '
               'transport=$arg_transport sid=$arg_sid node=$upstream_addr time=$request_time';

server {{
    listen {listen};
    access_log {access_log} hub;

    # Only the Socket.IO endpoint is served. The internal API (/internal/: emits, disconnects)
    # is for the platform's backends on the private network, never through here: better, start
    # the nodes with --internal-port so that it is not on the public port at all.
    location /internal/ {{
        return 404;
    }}
    location / {{
        return 404;
    }}

    location {path} {{
        proxy_pass http://$hub_upstream;
        proxy_http_version 1.1;  # WebSocket upgrades and keep-alive need HTTP/1.1
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $hub_connection;
        proxy_set_header Host $host;

        # The client's address. X-Forwarded-For gets it appended to what the client sent;
        # nodes believe it only from the proxies in HUB_TRUSTED_PROXIES (--trusted-proxies, the
        # address nginx connects from) and take the right-most address that is not one of them,
        # so a client cannot choose its own.
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;

        # Heartbeat: pingInterval {ping_interval} s + pingTimeout {ping_timeout} s = {heartbeat} s.
        # A healthy session is never silent longer than pingInterval in either direction (a
        # long-poll is answered at the latest with the next ping; on a WebSocket the node pings
        # and the client answers), so these only end connections that the hub itself would have
        # given up on, {margin} s after it.
        proxy_read_timeout {timeout}s;
        proxy_send_timeout {timeout}s;
        send_timeout {timeout}s;
        # A node that does not accept within 5 s is down: the handshake moves to the next.
        proxy_connect_timeout 5s;

        # A long-poll's answer and a POST's body go through as they come, never held back.
        proxy_buffering off;
        proxy_request_buffering off;

        # A polling POST carries at most maxPayload ({max_payload}) bytes. 1 KiB more is let
        # through, as the nodes' own listener does, so that the node answers an oversize
        # payload with Engine.IO's error (413) and closes the session. (WebSocket messages
        # are limited by the nodes, not here.)
        client_max_body_size {max_body};

        # The node of a session is gone (stopped, crashed, removed): answer as a node answers
        # an unknown session. The stock client then opens a new session, which a handshake
        # puts on a node that is up (WebSocket clients see their connection close and do the
        # same). The new socket is in its user's room at once; project and batch rooms are
        # joined again by the client, as after any reconnection.
        error_page 502 504 = @hub_session_lost;
    }}

    location @hub_session_lost {{
        if ($arg_sid = "") {{
            return 502;  # a handshake, and no node is up
        }}
        default_type application/json;
        return 400 '{{"code":1,"message":"Session ID unknown"}}';
    }}
}}
"""
