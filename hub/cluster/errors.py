"""The errors of cluster-wide operations.

::

    ClusterError              a cluster-wide operation did not reach every node
    ├── ClusterUnavailable    Redis cannot be reached (or the cluster is not running)
    └── ClusterTimeout        some nodes did not answer within the request timeout

The local part of an operation is always done before the error is raised: the sockets of this
node have had the event, joined the rooms or been disconnected. ``partial`` holds what was
gathered (the count reached so far, the sockets or answers that came in).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ClusterError", "ClusterTimeout", "ClusterUnavailable"]


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
