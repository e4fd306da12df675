"""A circuit breaker for one worker on one node, as a plain object fed with the time.

    breaker = Breaker(CircuitBreaker())
    wait = breaker.allow(time.monotonic())     # 0.0: run it; else seconds to wait
    ...
    breaker.record(failed=True, now=time.monotonic())   # each run's end, but snoozes

Closed, it counts the outcomes of the last `window_size` runs; once at least
`minimum_calls` of them are known and the share of failures reaches `failure_threshold`,
it opens: nothing runs for `wait` seconds. Then it is half-open: `half_open_requests`
runs go through as probes (others wait for their verdict); if they all succeed it
closes (and forgets the old outcomes), if one fails it opens again. Only real failures
count: a snooze, a cancel or a gate's denial is not an outcome of the called system.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from shigoto.features.resilience.options import CircuitBreaker

State = Literal["closed", "open", "half_open"]
PROBE_WAIT = 1.0  # seconds a run waits while the probes are out, at most


class Breaker:
    def __init__(self, options: CircuitBreaker) -> None:
        self.options = options
        self.state: State = "closed"
        self._outcomes: deque[bool] = deque(maxlen=options.window_size)  # True: failed
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0  # probe runs let through while half-open
        self._passed = 0  # of which succeeded

    def allow(self, now: float) -> float:
        """Whether a run may start at `now`: 0.0, or the seconds to wait first."""
        if self.state == "open":
            reopens = self._opened_at + self.options.wait
            if now < reopens:
                return reopens - now
            self.state, self._probes, self._passed = "half_open", 0, 0
        if self.state == "half_open":
            if self._probes >= self.options.half_open_requests:
                return min(PROBE_WAIT, self.options.wait)
            self._probes += 1
        return 0.0

    def record(self, *, failed: bool, now: float) -> State | None:
        """A run's outcome; returns the state it moved to, if it moved."""
        if self.state == "open":
            return None  # a run started before it opened: nothing new about the system
        if self.state == "half_open":
            if failed:
                return self._open(now)
            self._passed += 1
            if self._passed >= self.options.half_open_requests:
                self.state = "closed"
                self._outcomes.clear()
                self._failures = 0
                return "closed"
            return None
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._failures -= 1  # the oldest outcome leaves the window
        self._outcomes.append(failed)
        self._failures += failed
        known = len(self._outcomes)
        if (
            known >= self.options.minimum_calls
            and self._failures >= self.options.failure_threshold * known
        ):
            return self._open(now)
        return None

    def _open(self, now: float) -> State:
        self.state = "open"
        self._opened_at = now
        return "open"
