"""Per-unit rate limits, keyed by the serial in the path, never by client address: a whole branch office sits behind
one NAT, and one unit's retries must not lock out its neighbours. A moving window in memory (the `limits` library):
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
        """Count one `name` request of this unit; 429 with Retry-After (seconds) when it is over its rate."""
        item = self._items[name]
        if self._limiter.hit(item, name, serial):
            return
        reset = self._limiter.get_window_stats(item, name, serial).reset_time
        retry = max(1, math.ceil(reset - time.time()))
        raise ApiError(
            429,
            "rate_limited",
            f"too many {name} requests for this unit: at most {item.amount} per {item.get_expiry()} s",
            headers={"Retry-After": str(retry)},
        )
