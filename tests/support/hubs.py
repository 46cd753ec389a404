"""The hub application served on loopback in a test's nursery, and what tests read of it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Self

import attrs
import trio
import trio_websocket
from interop.harness import STEP_TIMEOUT

from hub.app.auth import mint_token
from hub.app.config import Config
from hub.app.hub import Hub, HubAddresses
from hub.app.store import AccessStore

__all__ = ["HEARTBEAT_1S", "RunningHub", "hub_settings", "websocket_handshake"]

HEARTBEAT_1S = {"ping_interval": 1, "ping_timeout": 1}
"""Settings of a hub whose clients must notice a dead peer within seconds."""


def hub_settings(secret: str, emit_token: str, *more: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~hub.app.config.Config` fields of a hub under test, ``more`` over these.

    Free ports, ``secret`` for HS256 tokens, ``emit_token`` for the internal API, and
    connection state recovery off: events then arrive with exactly their arguments (with it on,
    each replayable event carries its offset last).
    """
    settings: dict[str, Any] = {
        "port": 0,
        "jwt_secret": secret,
        "emit_token": emit_token,
        "recovery_seconds": 0,
    }
    for fields in more:
        settings.update(fields)
    return settings


@attrs.frozen
class RunningHub:
    """A :class:`~hub.app.hub.Hub` serving on loopback, and where it listens."""

    hub: Hub
    addresses: HubAddresses

    @classmethod
    async def start(
        cls,
        nursery: trio.Nursery,
        store: AccessStore,
        settings: Mapping[str, Any],
        *,
        prepare: Callable[[Hub], object] | None = None,
        **fields: Any,
    ) -> Self:
        """Serve a hub of ``settings`` (:class:`~hub.app.config.Config`'s fields; port 0 for a
        free one) and ``store`` in ``nursery``, until the nursery is cancelled.

        ``prepare`` runs on the hub before it serves (to install tools, replace its token
        settings); ``fields`` are those a subclass adds.
        """
        hub = Hub(Config(**settings).check(), store)
        if prepare is not None:
            prepare(hub)
        addresses: HubAddresses = await nursery.start(hub.serve)
        return cls(hub, addresses, **fields)

    @property
    def url(self) -> str:
        return self.addresses.url

    def token(self, user: str, expires_in: float = 3600.0) -> str:
        """A token of ``user`` (email ``<user>@example.test``) that this hub accepts."""
        return mint_token(user, self.hub.auth, email=f"{user}@example.test", expires_in=expires_in)


async def websocket_handshake(url: str, origin: str, sid: str | None = None) -> int:
    """The status of a WebSocket handshake to the hub at ``url`` with ``Origin`` (101: accepted,
    and a new session's open packet read), to open a session or to upgrade session ``sid``."""
    target = url.replace("http://", "ws://", 1) + "/socket.io/?EIO=4&transport=websocket"
    if sid is not None:
        target += f"&sid={sid}"
    with trio.fail_after(STEP_TIMEOUT):
        try:
            async with trio_websocket.open_websocket_url(
                target, extra_headers=[(b"origin", origin.encode())]
            ) as ws:
                if sid is None:
                    assert str(await ws.get_message()).startswith("0{")
                return 101
        except trio_websocket.ConnectionRejected as exc:
            return exc.status_code
