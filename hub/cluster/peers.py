"""The other hub nodes a node has heard from: who is in the cluster, even while off Redis.

``PUBSUB NUMSUB`` counts the connections subscribed to a channel now. A node that is reconnecting
to Redis (Redis restarted, the network cut for a moment) is not among them, so a request counted
that way alone would be answered as complete though that node never had it, and its sockets
missed the event. So each hub node also says that it is there, as ``@socket.io/cluster-adapter``
does (``ClusterAdapterWithHeartbeat``), on a channel that only hub nodes read
(:mod:`hub.cluster.wire`, "Extensions"):

- INITIAL_HEARTBEAT when it (re)connects to Redis; each node that reads it answers with a
  HEARTBEAT at once, so the newcomer knows the others without waiting;
- HEARTBEAT every ``heartbeat_interval`` seconds;
- ADAPTER_CLOSE when it stops: the others forget it at once.

Rules of the table (:class:`Peers`, one per namespace, sans-I/O: time is passed in as ``now``):

- A node is known from its first heartbeat until its goodbye, or until ``timeout`` seconds have
  passed without a word from it while this node was connected to Redis (it crashed, or left
  during an outage). While this node is off Redis it hears nobody, so when it is back every node
  it knows gets a full ``timeout`` again (:meth:`Peers.refresh`): a node that is slower to come
  back than this one is still counted, and a request it cannot have received is said incomplete.
- Node socket.io nodes (and hub nodes of versions before heartbeats) send none: they are never
  in the table, and are counted by ``PUBSUB NUMSUB`` alone, as Node's adapter counts.
"""

from __future__ import annotations

__all__ = ["Peers"]


class Peers:
    """The hub nodes heard from lately, by uid (this node excluded).

    Args:
        timeout: seconds without a word after which a node is forgotten.
    """

    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("the heartbeat timeout must be positive")
        self.timeout = timeout
        self._last_heard: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<Peers {sorted(self._last_heard)}>"

    def heard(self, uid: str, now: float) -> bool:
        """Node ``uid`` said it is there at ``now``; returns whether it was unknown."""
        new = uid not in self._last_heard
        self._last_heard[uid] = now
        return new

    def forget(self, uid: str) -> bool:
        """Node ``uid`` said goodbye; returns whether it was known."""
        return self._last_heard.pop(uid, None) is not None

    def refresh(self, now: float) -> None:
        """This node is back on Redis after hearing nobody for a while: each node it knows
        gets a full timeout from ``now`` to be heard again."""
        for uid in self._last_heard:
            self._last_heard[uid] = now

    def alive(self, now: float) -> frozenset[str]:
        """The nodes heard from within the timeout before ``now``; the others are forgotten."""
        stale = [uid for uid, at in self._last_heard.items() if now - at > self.timeout]
        for uid in stale:
            del self._last_heard[uid]
        return frozenset(self._last_heard)
