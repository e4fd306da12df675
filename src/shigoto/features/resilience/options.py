"""The resilience options of a worker and of an app, checked when they are made.

    RateLimit(limit=10, window=1.0)                      # 10 starts a second, per node
    RateLimit(limit=100, window=60, algorithm="token_bucket", burst=20, scope="global")
    CircuitBreaker(window_size=20, failure_threshold=0.5, wait=30.0, half_open_requests=3)
    LoadShedding(target=0.005, interval=0.1, max_in_flight=1000)

A bad value is a `ConfigurationError` naming the option and what is wrong with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from shigoto.errors import ConfigurationError

Algorithm = Literal["token_bucket", "sliding_window", "gcra", "leaky_bucket"]
ALGORITHMS: tuple[Algorithm, ...] = ("token_bucket", "sliding_window", "gcra", "leaky_bucket")
Scope = Literal["node", "global"]
MAX_LIMIT = 1_000_000_000
MAX_WINDOW = 366 * 24 * 3600.0  # a year


def _count(value: object, what: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{what}: expected a whole number, got {value!r}")
    if not low <= value <= MAX_LIMIT:
        raise ConfigurationError(f"{what}: must be from {low} to {MAX_LIMIT:,}, got {value:,}")
    return value


def _duration(value: object, what: str, *, allow_zero: bool = False) -> float:
    raw = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ConfigurationError(
            f"{what}: expected seconds (a number or a timedelta), got {value!r}"
        )
    if raw < 0 or (raw == 0 and not allow_zero) or raw > MAX_WINDOW:
        bound = "not negative" if allow_zero else "more than 0"
        raise ConfigurationError(f"{what}: must be {bound} and at most a year, got {raw!r}")
    return float(raw)


def _fraction(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigurationError(f"{what}: expected a fraction in (0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `limit` starts of the worker's jobs per `window` seconds.

    `algorithm`: "gcra" (the default: smooth, with `burst` starts allowed at once),
    "token_bucket" (a bucket of `burst` tokens refilled at `limit` per window),
    "leaky_bucket" (a meter of capacity `burst` that drains at `limit` per window) or
    "sliding_window" (fixed windows blended into a sliding estimate). `burst` defaults to
    1 for GCRA and to `limit` for the others. `scope`: "node" (each node counts its own
    starts) or "global" (every node's together, kept in PostgreSQL).
    """

    limit: int
    window: float = 1.0
    algorithm: Algorithm = "gcra"
    burst: int | None = None
    scope: Scope = "node"

    def __post_init__(self) -> None:
        object.__setattr__(self, "limit", _count(self.limit, "rate_limit: limit"))
        object.__setattr__(self, "window", _duration(self.window, "rate_limit: window"))
        if self.algorithm not in ALGORITHMS:
            raise ConfigurationError(
                f"rate_limit: algorithm must be one of {', '.join(ALGORITHMS)}; "
                f"got {self.algorithm!r}"
            )
        if self.burst is not None:
            object.__setattr__(self, "burst", _count(self.burst, "rate_limit: burst"))
        if self.scope not in ("node", "global"):
            raise ConfigurationError(
                f"rate_limit: scope must be 'node' or 'global', got {self.scope!r}"
            )

    @property
    def allowance(self) -> int:
        """The burst in effect: as given, else 1 for GCRA and `limit` for the others."""
        if self.burst is not None:
            return self.burst
        return 1 if self.algorithm == "gcra" else self.limit


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Stop running a worker's jobs for `wait` seconds once, of its last `window_size`
    runs on a node (and at least `minimum_calls` of them), the share that failed reached
    `failure_threshold`; then let `half_open_requests` probe runs through: all succeed,
    it closes; one fails, it opens again."""

    window_size: int = 20
    failure_threshold: float = 0.5
    wait: float = 30.0
    half_open_requests: int = 3
    minimum_calls: int = 5

    def __post_init__(self) -> None:
        size = _count(self.window_size, "circuit_breaker: window_size")
        object.__setattr__(self, "window_size", size)
        threshold = _fraction(self.failure_threshold, "circuit_breaker: failure_threshold")
        object.__setattr__(self, "failure_threshold", threshold)
        object.__setattr__(self, "wait", _duration(self.wait, "circuit_breaker: wait"))
        probes = _count(self.half_open_requests, "circuit_breaker: half_open_requests")
        object.__setattr__(self, "half_open_requests", probes)
        minimum = _count(self.minimum_calls, "circuit_breaker: minimum_calls")
        if minimum > size:
            raise ConfigurationError(
                f"circuit_breaker: minimum_calls ({minimum}) cannot be more than "
                f"window_size ({size})"
            )
        object.__setattr__(self, "minimum_calls", minimum)


@dataclass(frozen=True, slots=True)
class LoadShedding:
    """Shed (snooze) low-priority jobs while a node is overloaded: while jobs wait longer
    than `target` seconds in their queue for at least `interval` seconds (CoDel), or while
    the node runs `max_in_flight` jobs. Priority 10 and above is never shed; below, the
    lower the priority, the sooner (at `thresholds` of `max_in_flight`: 90%, 80%, 70%)."""

    target: float = 0.005
    interval: float = 0.1
    max_in_flight: int = 1000
    thresholds: tuple[float, float, float] = (0.9, 0.8, 0.7)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", _duration(self.target, "load_shedding: target"))
        interval = _duration(self.interval, "load_shedding: interval")
        object.__setattr__(self, "interval", interval)
        cap = _count(self.max_in_flight, "load_shedding: max_in_flight")
        object.__setattr__(self, "max_in_flight", cap)
        levels = tuple(self.thresholds)
        if len(levels) != 3:
            raise ConfigurationError(
                f"load_shedding: thresholds must be three fractions, got {self.thresholds!r}"
            )
        checked = tuple(_fraction(t, "load_shedding: thresholds") for t in levels)
        object.__setattr__(self, "thresholds", checked)
