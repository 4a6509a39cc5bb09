"""Per-unit rate limits, keyed by the serial in the path, never by client address: a whole branch office sits behind
one NAT, and one unit's retries must not lock out its neighbours. Only requests that proved they are the unit's count
against its rate; refused ones (a bad token, a bad signature) count per serial *and* client address, so nobody can
spend a unit's allowance for it. A moving window in memory (the `limits` library):
each of uvicorn's worker processes keeps its own, so with --workers N a unit gets up to N times the rate."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from oemkit.serve.errors import ApiError


def parse_rate(text: str) -> RateLimitItem:
    """ "10/minute", "100 per hour", …; ValueError with the accepted form otherwise."""
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"not a rate: {text!r} (write N/second, N/minute or N/hour)") from None


class UnitLimits:
    def __init__(self, **rates: str) -> None:
        self._items = {name: parse_rate(rate) for name, rate in rates.items()}
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, name: str, serial: str) -> None:
        """Count one `name` request of this unit; 429 with Retry-After (seconds) when it is over its rate. Only for
        requests that proved they are the unit's (a verified signature): others must not spend the unit's budget."""
        item = self._items[name]
        if not self._limiter.hit(item, name, serial):
            self._refuse(item, f"too many {name} requests for this unit", name, serial)

    def refused_before(self, name: str, serial: str, client: str) -> None:
        """429 if this client address's refused `name` requests for this unit are over the rate: whoever keeps
        sending bad tokens or signatures for a serial waits, without costing the unit itself anything (the box
        comes from another address, or, behind the same NAT, is only slowed after that address kept failing)."""
        item = self._items[name]
        if not self._limiter.test(item, f"{name}-refused", serial, client):
            self._refuse(item, f"too many refused {name} requests for this unit from {client}",
                         f"{name}-refused", serial, client)  # fmt: skip

    def refused(self, name: str, serial: str, client: str) -> None:
        """Count one refused `name` request (bad token, bad signature) of this client address for this unit."""
        self._limiter.hit(self._items[name], f"{name}-refused", serial, client)

    def _refuse(self, item: RateLimitItem, what: str, *key: str) -> None:
        reset = self._limiter.get_window_stats(item, *key).reset_time
        retry = max(1, math.ceil(reset - time.time()))
        raise ApiError(
            429,
            "rate_limited",
            f"{what}: at most {item.amount} per {item.get_expiry()} s",
            headers={"Retry-After": str(retry)},
        )
