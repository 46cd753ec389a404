"""Joins whose access check is still in flight when the world changes.

The access store is the hub's dependency, not the thing under test: a store whose answers the
test releases by hand lets a revocation, or the client's departure, overtake a join.
"""

from __future__ import annotations

import json

import trio
from support.sio import RawSio
from support.wire import connect_ws, receive

from hub.app.auth import mint_token
from hub.app.config import Config
from hub.app.hub import Hub
from hub.app.store import User


class GatedStore:
    """Says yes to alice on project p until revoked; each answer waits for ``release``."""

    def __init__(self) -> None:
        self.asked = trio.Event()
        self.release = trio.Event()
        self.revoked = False
        self.calls = 0

    async def get_user(self, user_id: str) -> User | None:
        return User(user_id, None) if user_id == "alice" else None

    async def can_access_project(self, user_id: str, project_id: str) -> bool:
        self.calls += 1
        answer = not self.revoked  # decided when asked, answered later
        self.asked.set()
        await self.release.wait()
        return answer

    async def project_of_batch(self, batch_id: str) -> str | None:
        return "p"

    async def can_access_batch(self, user_id: str, batch_id: str) -> bool:
        return await self.can_access_project(user_id, "p")

    async def aclose(self) -> None:
        pass


async def _start(nursery: trio.Nursery, store: GatedStore) -> tuple[Hub, str, str]:
    config = Config(
        recovery_seconds=0,  # raw clients here expect CONNECT to carry only the sid
        port=0,
        jwt_secret="s" * 32,
        emit_token="e",
        ping_interval=5,
        token_warning=1,
    ).check()
    hub_ = Hub(config, store)
    addresses = await nursery.start(hub_.serve)
    token = mint_token("alice", hub_.auth, expires_in=60)
    return hub_, f"{addresses.public[0]}:{addresses.public[1]}", token


async def _connect(nursery: trio.Nursery, address: str, token: str) -> RawSio:
    ws = await connect_ws(nursery, address, "/socket.io/")
    opened = await receive(ws)
    assert isinstance(opened, str)
    client = RawSio(ws, json.loads(opened[1:]))
    await client.send("40" + json.dumps({"token": token}))
    assert (await client.receive_text()).startswith("40{")
    return client


async def test_a_revocation_during_the_access_check_wins(nursery: trio.Nursery) -> None:
    store = GatedStore()
    hub_, address, token = await _start(nursery, store)
    client = await _connect(nursery, address, token)
    await client.send('421["join-project",{"projectId":"p"}]')
    await store.asked.wait()  # the store said yes, the answer is on its way...
    store.revoked = True
    hub_.revoke_project("alice", "p")  # ... and access is revoked meanwhile
    store.release.set()
    answer = json.loads((await client.receive_text())[3:])
    assert answer == [
        {"ok": False, "error": {"code": "FORBIDDEN", "message": "no access to project p"}}
    ]
    assert store.calls == 2  # asked again after the revocation
    assert hub_.server.to("project:p").sockets() == []


async def test_a_socket_that_left_during_the_check_joins_nothing(nursery: trio.Nursery) -> None:
    store = GatedStore()
    hub_, address, token = await _start(nursery, store)
    client = await _connect(nursery, address, token)
    await client.send('421["join-project",{"projectId":"p"}]')
    await store.asked.wait()
    await client.aclose()
    with trio.fail_after(5):
        while hub_.connections:
            await trio.sleep(0.01)
    store.release.set()
    await trio.sleep(0.05)
    assert "project:p" not in hub_.server.main.adapter.rooms
