"""What an endpoint's connections carried, kept as plain integers where it happens.

A metrics scrape reads these (``hub.app.metrics``); nothing on the delivery path calls a
metrics library. Counting a frame is one ``+=`` on an attribute of an object that every
connection of the listener shares: the cost of a delivery stays one attribute chain and one
``send()`` (DESIGN.md, point 2), plus this addition.
"""

from __future__ import annotations

__all__ = ["TransportStats"]


class TransportStats:
    """Totals since start, for one listener and its Engine.IO endpoint.

    Attributes:
        bytes_received: bytes read from the listener's connections (HTTP heads and bodies,
            WebSocket frames).
        bytes_sent: bytes the kernel took for the listener's connections (what is queued and
            later dropped, by a slow consumer's overflow or a close, is not counted).
        upgrades: Engine.IO sessions moved from long-polling to WebSocket.
    """

    __slots__ = ("bytes_received", "bytes_sent", "upgrades")

    def __init__(self) -> None:
        self.bytes_received = 0
        self.bytes_sent = 0
        self.upgrades = 0

    def __repr__(self) -> str:
        return (
            f"<TransportStats received={self.bytes_received} sent={self.bytes_sent}"
            f" upgrades={self.upgrades}>"
        )
