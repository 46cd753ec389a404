"""Several hub nodes sharing rooms through Redis, wire-compatible with Node's socket.io cluster.

::

    import hub
    from hub.cluster import RedisCluster

    cluster = RedisCluster("redis://127.0.0.1:6379")
    server = hub.Server(cluster=cluster)

A broadcast on any node reaches the room's sockets on every node; ``server.to(...).everywhere``
acts on every node's sockets and says what it reached; ``cluster.server_side_emit`` and
``cluster.on`` carry events between nodes; ``cluster.status`` says whether Redis is reachable.
Messages use the format of Node's ``@socket.io/redis-adapter`` 8 and ``@socket.io/redis-emitter``
5 (:mod:`hub.cluster.wire`), so Node services and Node socket.io nodes join the same cluster.
"""

from hub.cluster.errors import (
    ClusterError,
    ClusterIncomplete,
    ClusterTimeout,
    ClusterUnavailable,
)
from hub.cluster.health import ClusterStatus
from hub.cluster.link import ClusterNamespace
from hub.cluster.operator import ClusterOperator
from hub.cluster.redis import RedisCluster, ServerEventHandler
from hub.cluster.remote import RemoteSocket

__all__ = [
    "ClusterError",
    "ClusterIncomplete",
    "ClusterNamespace",
    "ClusterOperator",
    "ClusterStatus",
    "ClusterTimeout",
    "ClusterUnavailable",
    "RedisCluster",
    "RemoteSocket",
    "ServerEventHandler",
]
