"""Per-unit rate limits, keyed by the serial in the path, never by client address: a whole branch office sits behind
one NAT, and one unit's retries must not lock out its neighbours. Only requests that proved they are the unit's count
against its rate; refused ones (a bad token, a bad signature) count per serial *and* client address, so nobody can
spend a unit's allowance for it. A moving window in memory: each of uvicorn's worker processes keeps its own, so with
--workers N a unit gets up to N times the rate.

The `limits` library parses the rates; the window is kept here. Its MemoryStorage expires entries from a timer thread
that walks every key, every 10 ms, while there is any traffic: with 10,000 units that thread alone kept a core busy and
cut the service to a tenth of its rate (docs/benchmarks.md, "Provisioning service"). Here a key holds at most its
rate's amount of timestamps, a request looks at its own key only, and keys whose window has passed are dropped in one
pass at most once per the longest window."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from limits import RateLimitItem, parse

from oemkit.serve.errors import ApiError


def parse_rate(text: str) -> RateLimitItem:
    """ "10/minute", "100 per hour", …; ValueError with the accepted form otherwise."""
    try:
        return parse(text)
    except ValueError:
        raise ValueError(f"not a rate: {text!r} (write N/second, N/minute or N/hour)") from None


class MovingWindow:
    """At most `item.amount` events in any `item.get_expiry()` seconds, per key: the moving window of the `limits`
    library's MovingWindowRateLimiter (hit, test, reset time; its keys, item.key_for), without its sweeping thread.
    Thread-safe."""

    def __init__(self) -> None:
        self._events: dict[str, deque[float]] = {}  # per key: the last `amount` event times, oldest first
        self._lock = threading.Lock()
        self._longest = 0.0
        self._next_sweep = 0.0

    def _window(self, item: RateLimitItem, key: str, now: float) -> deque[float] | None:
        # the key's events still inside the window (older ones dropped); then, at most once per the longest window,
        # every key whose window is empty goes, so the table holds only the keys seen within that time
        if now >= self._next_sweep:
            for other in [k for k, q in self._events.items() if not q or q[-1] <= now - self._longest]:
                del self._events[other]
            self._next_sweep = now + self._longest
        events = self._events.get(key)
        if events is not None:
            start = now - item.get_expiry()
            while events and events[0] <= start:
                events.popleft()
        return events

    def hit(self, item: RateLimitItem, *key: str) -> bool:
        """Count one event unless the key already had `amount` in the window (then False, and nothing counted)."""
        now = time.time()
        with self._lock:
            self._longest = max(self._longest, float(item.get_expiry()))
            name = item.key_for(*key)
            events = self._window(item, name, now)
            if len(events or ()) >= item.amount:  # an amount of 0 refuses everything, as in `limits`
                return False
            if events is None:
                events = self._events[name] = deque(maxlen=item.amount)
            events.append(now)
            return True

    def test(self, item: RateLimitItem, *key: str) -> bool:
        """Whether one more event would be counted now (nothing is)."""
        with self._lock:
            events = self._window(item, item.key_for(*key), time.time())
            return len(events or ()) < item.amount

    def reset_time(self, item: RateLimitItem, *key: str) -> float:
        """When the oldest event in the window leaves it (a whole window from now, for an empty one, as `limits`)."""
        now = time.time()
        with self._lock:
            events = self._window(item, item.key_for(*key), now)
            return (events[0] if events else now) + item.get_expiry()


class UnitLimits:
    def __init__(self, **rates: str) -> None:
        self._items = {name: parse_rate(rate) for name, rate in rates.items()}
        self._limiter = MovingWindow()

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
        retry = max(1, math.ceil(self._limiter.reset_time(item, *key) - time.time()))
        raise ApiError(
            429,
            "rate_limited",
            f"{what}: at most {item.amount} per {item.get_expiry()} s",
            headers={"Retry-After": str(retry)},
        )
