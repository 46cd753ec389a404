"""The client's address behind a reverse proxy (nginx), believed only when a trusted proxy says it.

A proxy passes the address it accepted the connection from in ``X-Forwarded-For`` (appended to
what earlier hops wrote, ``client, proxy1, proxy2``) and often in ``X-Real-IP``. Anyone can send
these headers, so they are read only when the TCP peer is one of the configured proxies, and
then from the right: each trusted hop vouches for the address to its left, and the first address
that is not a trusted proxy is the client (the algorithm of nginx's ``real_ip_recursive`` and
Express's ``trust proxy``). A client that sends its own ``X-Forwarded-For: 10.0.0.1`` through nginx
arrives as ``10.0.0.1, <its real address>``, and the real one is what is taken.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["IPNetwork", "client_address", "trusted_networks"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(proxies: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Parse proxy addresses and networks (``"127.0.0.1"``, ``"10.0.0.0/8"``, ``"::1"``).

    Raises:
        ValueError: one of them is neither an IP address nor a network.
    """
    networks: list[IPNetwork] = []
    for proxy in proxies:
        try:
            networks.append(ipaddress.ip_network(proxy.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {proxy!r}") from None
    return tuple(networks)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # "::ffff:127.0.0.1" from a dual-stack socket
    return ip


def _trusted(address: str, networks: Sequence[IPNetwork]) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip in network for network in networks)


def client_address(peer: str, headers: Mapping[str, str], trusted: Sequence[IPNetwork]) -> str:
    """The address of the client behind ``peer``.

    Args:
        peer: the TCP peer's address.
        headers: the request's headers (lower-case names, repeated ones joined with ``", "``).
        trusted: the proxies whose forwarding headers are believed (:func:`trusted_networks`).

    Returns:
        ``peer`` itself unless it is a trusted proxy; otherwise the right-most address of
        ``X-Forwarded-For`` (or ``X-Real-IP`` without it) that is not a trusted proxy. A hop
        that is not an IP address stops the walk: the last address known good is returned.
    """
    if not trusted or not _trusted(peer, trusted):
        return peer
    forwarded = headers.get("x-forwarded-for")
    if forwarded is None:
        forwarded = headers.get("x-real-ip", "")
    address = peer
    for hop in reversed(forwarded.split(",")):
        ip = _ip(hop)
        if ip is None:
            break
        address = str(ip)
        if not _trusted(address, trusted):
            break
    return address
