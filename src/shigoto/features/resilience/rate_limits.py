"""The four rate-limit algorithms, as plain objects fed with the time.

    limiter = limiter_for(RateLimit(limit=10, window=1.0))
    wait = limiter.acquire(time.monotonic())   # 0.0: admitted; else seconds until it may be

All count in whole nanoseconds and exact integers (a token is `window` nanosecond-units,
refilled at `limit` units a nanosecond), so that no rounding ever admits one start too
many. In any span of `window` seconds they admit at most:

- `gcra` (generic cell rate algorithm): one start every `window / limit` seconds, with
  `burst - 1` of them allowed early, so at most `limit + burst` (`burst` defaults to 1);
- `token_bucket`: a bucket of `burst` tokens (default `limit`) refilled at `limit` per
  window: at most `limit + burst`;
- `leaky_bucket`: a meter of capacity `burst` (default `limit`) draining at `limit` per
  window, the mirror of the token bucket: at most `limit + burst`;
- `sliding_window`: at most `limit` in each fixed window (aligned to multiples of
  `window`), admitted while the previous window's count, weighted by how much of it the
  sliding window still covers, plus the current one's stays within `limit`; a sliding
  span across two fixed windows may see up to `2 * limit` in the worst case (all of one
  window's starts at its end, all of the next one's at its start).
"""

from __future__ import annotations

from typing import Protocol

from shigoto.features.resilience.options import RateLimit

NANOS = 1_000_000_000


def _nanos(seconds: float) -> int:
    return round(seconds * NANOS)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Limiter(Protocol):
    def acquire(self, now: float) -> float:
        """Admit one start at `now` (monotonic seconds): 0.0, or, denied, the seconds
        until one could be admitted."""
        ...


class TokenBucket:
    def __init__(self, limit: int, window: float, burst: int) -> None:
        self._rate = limit  # units a nanosecond
        self._token = _nanos(window)  # units a token
        self._capacity = burst * self._token
        self._level = self._capacity  # full at first
        self._last: int | None = None

    def acquire(self, now: float) -> float:
        at = _nanos(now)
        if self._last is not None and at > self._last:
            self._level = min(self._capacity, self._level + (at - self._last) * self._rate)
        self._last = at if self._last is None else max(self._last, at)
        if self._level >= self._token:
            self._level -= self._token
            return 0.0
        return _ceil_div(self._token - self._level, self._rate) / NANOS


class LeakyBucket:
    def __init__(self, limit: int, window: float, burst: int) -> None:
        self._rate = limit
        self._drop = _nanos(window)
        self._capacity = burst * self._drop
        self._water = 0
        self._last: int | None = None

    def acquire(self, now: float) -> float:
        at = _nanos(now)
        if self._last is not None and at > self._last:
            self._water = max(0, self._water - (at - self._last) * self._rate)
        self._last = at if self._last is None else max(self._last, at)
        if self._water + self._drop <= self._capacity:
            self._water += self._drop
            return 0.0
        return _ceil_div(self._water + self._drop - self._capacity, self._rate) / NANOS


class Gcra:
    """Times are kept in nanoseconds times `limit`, so that the emission interval
    (`window / limit`) is a whole number of them."""

    def __init__(self, limit: int, window: float, burst: int) -> None:
        self._limit = limit
        self._interval = _nanos(window)  # window / limit, in units of 1/limit ns
        self._tolerance = self._interval * (burst - 1)
        self._tat: int | None = None  # the theoretical arrival time of the next start

    def acquire(self, now: float) -> float:
        at = _nanos(now) * self._limit
        tat = at if self._tat is None else self._tat
        if at >= tat - self._tolerance:
            self._tat = max(tat, at) + self._interval
            return 0.0
        return _ceil_div(tat - self._tolerance - at, self._limit) / NANOS


class SlidingWindow:
    def __init__(self, limit: int, window: float) -> None:
        self._limit = limit
        self._window = _nanos(window)
        self._start: int | None = None  # the current fixed window's start
        self._current = 0
        self._previous = 0

    def acquire(self, now: float) -> float:
        at = _nanos(now)
        start = at - at % self._window
        if self._start is None or start > self._start:
            adjacent = self._start is not None and start == self._start + self._window
            self._previous = self._current if adjacent else 0
            self._current = 0
            self._start = start
        elif start < self._start:  # a clock read late: count it in the current window
            at, start = self._start, self._start
        elapsed = at - start
        w, n = self._window, self._limit
        # previous * (w - elapsed) / w + current + 1 <= limit, in integers
        if self._previous * (w - elapsed) + (self._current + 1) * w <= n * w:
            self._current += 1
            return 0.0
        if self._current + 1 > n or self._previous == 0:
            return (w - elapsed) / NANOS  # not before the next window
        # When the previous window's weight has fallen enough for one more start.
        needed = w - _ceil_div((n - self._current - 1) * w, self._previous)
        return max(needed - elapsed, 1) / NANOS


def limiter_for(rate_limit: RateLimit) -> Limiter:
    """A fresh limiter for `rate_limit`'s algorithm."""
    limit, window, burst = rate_limit.limit, rate_limit.window, rate_limit.allowance
    if rate_limit.algorithm == "token_bucket":
        return TokenBucket(limit, window, burst)
    if rate_limit.algorithm == "leaky_bucket":
        return LeakyBucket(limit, window, burst)
    if rate_limit.algorithm == "sliding_window":
        return SlidingWindow(limit, window)
    return Gcra(limit, window, burst)
