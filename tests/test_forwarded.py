"""The client's address behind proxies: X-Forwarded-For is believed only from trusted ones."""

from __future__ import annotations

import pytest

from hub.server import ServerOptions
from hub.server.forwarded import client_address, trusted_networks

PROXIES = trusted_networks(["127.0.0.1", "10.0.0.0/8", "::1"])

CASES = [
    # peer, headers, expected
    ("127.0.0.1", {}, "127.0.0.1"),  # a trusted peer that forwards nothing
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
    ("127.0.0.1", {"x-real-ip": "203.0.113.7"}, "203.0.113.7"),
    # nginx appends the address it saw; what the client wrote itself stays to the left
    ("127.0.0.1", {"x-forwarded-for": "6.6.6.6, 203.0.113.7"}, "203.0.113.7"),
    # X-Forwarded-For wins over X-Real-IP when both are there
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.7", "x-real-ip": "6.6.6.6"}, "203.0.113.7"),
    # a chain of trusted proxies is walked through
    ("127.0.0.1", {"x-forwarded-for": "6.6.6.6, 203.0.113.7, 10.1.2.3"}, "203.0.113.7"),
    # a peer that is no trusted proxy: its headers say nothing
    ("192.0.2.9", {"x-forwarded-for": "203.0.113.7"}, "192.0.2.9"),
    ("192.0.2.9", {"x-real-ip": "203.0.113.7"}, "192.0.2.9"),
    # a hop that is not an address ends the walk at the last good one
    ("127.0.0.1", {"x-forwarded-for": "unknown"}, "127.0.0.1"),
    ("127.0.0.1", {"x-forwarded-for": "203.0.113.7, junk, 10.0.0.2"}, "10.0.0.2"),
    ("127.0.0.1", {"x-forwarded-for": ""}, "127.0.0.1"),
    # IPv6, and IPv4 seen through a dual-stack socket
    ("::1", {"x-forwarded-for": "2001:db8::5"}, "2001:db8::5"),
    ("::ffff:127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, "203.0.113.7"),
    ("127.0.0.1", {"x-forwarded-for": "::ffff:203.0.113.7"}, "203.0.113.7"),
    # no peer address at all (an ASGI server that gives none)
    ("", {"x-forwarded-for": "203.0.113.7"}, ""),
]


@pytest.mark.parametrize(("peer", "headers", "expected"), CASES)
def test_client_address(peer: str, headers: dict[str, str], expected: str) -> None:
    assert client_address(peer, headers, PROXIES) == expected


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("127.0.0.1", {"x-forwarded-for": "203.0.113.7"}, ()) == "127.0.0.1"


def test_a_bad_proxy_or_node_id_is_refused() -> None:
    with pytest.raises(ValueError, match="'nginx'"):
        trusted_networks(["127.0.0.1", "nginx"])
    for node_id in ("", "n1.x", "n/1", "x" * 33):
        with pytest.raises(ValueError, match="node_id"):
            ServerOptions(node_id=node_id)
    assert ServerOptions(node_id="web-1_a").engine_options().sid_prefix == "web-1_a."
    assert ServerOptions().engine_options().sid_prefix == ""
