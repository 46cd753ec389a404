"""The errors of cluster-wide operations.

::

    ClusterError              a cluster-wide operation did not reach every node
    ├── ClusterUnavailable    Redis cannot be reached (or the cluster is not running)
    ├── ClusterTimeout        some nodes did not answer within the request timeout
    └── ClusterIncomplete     some nodes known to be in the cluster were not on Redis when the
                              request went out (reconnecting): they cannot have had it

The local part of an operation is always done before the error is raised: the sockets of this
node have had the event, joined the rooms or been disconnected. ``partial`` holds what was
gathered (the count reached so far, the sockets or answers that came in).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ClusterError", "ClusterIncomplete", "ClusterTimeout", "ClusterUnavailable"]


class ClusterError(Exception):
    """A cluster-wide operation did not reach every node.

    Attributes:
        message: what went wrong, one line.
        partial: what the operation gathered anyway (a count, a list), or None.
    """

    def __init__(self, message: str, partial: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.partial = partial


class ClusterUnavailable(ClusterError):
    """Redis cannot be reached now: only this node was reached."""


class ClusterTimeout(ClusterError):
    """Not every node answered within the request timeout."""


class ClusterIncomplete(ClusterError):
    """Every node subscribed to Redis answered, but some nodes this node knows by their
    heartbeats were not subscribed (reconnecting to Redis): they cannot have had the request.

    Attributes:
        missing: the uids of those nodes.
    """

    def __init__(
        self, message: str, partial: Any = None, missing: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(message, partial)
        self.missing = missing
