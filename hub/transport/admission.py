"""Who may open a new Engine.IO session: a cap on open sessions and a rate per client address.

Both are checked at the handshake only (a request without ``sid``): the sessions already open
are never cut by them. Over the cap the answer is ``503`` (the stock client retries with
backoff, behind a proxy perhaps on another node); over the rate, ``429`` with ``Retry-After``.
"""

from __future__ import annotations

import math

import attrs

__all__ = ["Admission", "AdmissionOptions"]


@attrs.frozen
class AdmissionOptions:
    """Limits on new sessions; 0 turns one off.

    Attributes:
        max_connections: the most sessions open at once.
        per_ip_rate: new sessions per second allowed from one client address, on average...
        per_ip_burst: ...with up to this many at once.
    """

    max_connections: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    per_ip_rate: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    per_ip_burst: int = attrs.field(default=20, validator=attrs.validators.ge(1))


class Admission:
    """The per-address token buckets (a bucket is forgotten once full again)."""

    MAX_TRACKED = 100_000  # addresses kept at most; past it, the full buckets are dropped

    def __init__(self, options: AdmissionOptions) -> None:
        self.options = options
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def refuse(self, address: str, open_sessions: int, now: float) -> tuple[int, str, int] | None:
        """Why a handshake from ``address`` is refused: ``(status, message, retry_after)``,
        or None when it may go on (and then it is counted)."""
        options = self.options
        if options.max_connections and open_sessions >= options.max_connections:
            return 503, "Too many connections", 1
        if not options.per_ip_rate:
            return None
        rate, burst = options.per_ip_rate, float(options.per_ip_burst)
        tokens, at = self._buckets.get(address, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[address] = (tokens, now)
            return 429, "Too many connection attempts", max(1, math.ceil((1.0 - tokens) / rate))
        self._buckets[address] = (tokens - 1.0, now)
        if len(self._buckets) > self.MAX_TRACKED:
            self._forget_full(now)
        return None

    def _forget_full(self, now: float) -> None:
        rate, burst = self.options.per_ip_rate, self.options.per_ip_burst
        self._buckets = {
            address: (tokens, at)
            for address, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * rate < burst
        }
