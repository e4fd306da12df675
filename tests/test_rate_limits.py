"""The rate-limit algorithms against their bounds: whatever the arrivals, no span of one
window admits more than the algorithm allows, a denial's wait is honest, and a steady
stream of demand is served at the limit. (No database: the algorithms are plain objects
fed with the time; the gates that use them are tested with nodes.)"""

from __future__ import annotations

from bisect import bisect_left
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shigoto import ConfigurationError
from shigoto.features.resilience import CircuitBreaker, LoadShedding, RateLimit
from shigoto.features.resilience.rate_limits import limiter_for

EXACT = ["gcra", "token_bucket", "leaky_bucket"]

limits = st.integers(1, 20)
windows_ms = st.integers(10, 2_000)
bursts = st.one_of(st.none(), st.integers(1, 10))


def arrivals(window_ms: int) -> st.SearchStrategy[list[int]]:
    """Sorted arrival times in milliseconds, over a few windows, bunched or spread."""
    return st.lists(st.integers(0, 6 * window_ms), min_size=1, max_size=300).map(sorted)


def admitted(rate_limit: RateLimit, times_ms: list[int]) -> list[int]:
    limiter = limiter_for(rate_limit)
    return [t for t in times_ms if limiter.acquire(t / 1000) == 0.0]


def reference(rate_limit: RateLimit, times_ms: list[int]) -> list[int]:
    """What each algorithm's math admits, computed in exact fractions (seconds)."""
    limit, burst = rate_limit.limit, rate_limit.allowance
    window = Fraction(round(rate_limit.window * 1000), 1000)
    rate = limit / window
    passed = []
    level: Fraction | None = None
    last: Fraction | None = None
    tat: Fraction | None = None
    counts: dict[int, int] = {}
    for ms in times_ms:
        t = Fraction(ms, 1000)
        if rate_limit.algorithm == "token_bucket":
            level = Fraction(burst) if level is None else min(burst, level + (t - last) * rate)
            ok = level >= 1
            level -= 1 if ok else 0
        elif rate_limit.algorithm == "leaky_bucket":
            level = Fraction(0) if level is None else max(0, level - (t - last) * rate)
            ok = level + 1 <= burst
            level += 1 if ok else 0
        elif rate_limit.algorithm == "gcra":
            interval = window / limit
            tat = t if tat is None else tat
            ok = t >= tat - interval * (burst - 1)
            tat = max(tat, t) + interval if ok else tat
        else:  # the sliding window's estimate
            index = int(t // window)
            elapsed = t - index * window
            estimate = counts.get(index - 1, 0) * (window - elapsed) / window + counts.get(index, 0)
            ok = estimate + 1 <= limit
            counts[index] = counts.get(index, 0) + (1 if ok else 0)
        last = t
        if ok:
            passed.append(ms)
    return passed


def most_in_any_span(times: list[int], span: int) -> int:
    """The most of `times` in any half-open span [t, t + span)."""
    return max((bisect_left(times, t + span) - i for i, t in enumerate(times)), default=0)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXACT), limits, windows_ms, bursts, st.data())
def test_no_window_admits_more_than_limit_plus_burst(
    algorithm: str, limit: int, window_ms: int, burst: int | None, data: st.DataObject
) -> None:
    rate_limit = RateLimit(limit, window_ms / 1000, algorithm, burst)  # type: ignore[arg-type]
    times = data.draw(arrivals(window_ms))
    passed = admitted(rate_limit, times)
    assert passed == reference(rate_limit, times)
    # Tokens (or room) for fewer than `limit + burst` starts can come within one window.
    assert most_in_any_span(passed, window_ms) <= limit + rate_limit.allowance - 1


@settings(max_examples=300, deadline=None)
@given(limits, windows_ms, st.data())
def test_the_sliding_window_keeps_each_fixed_window_within_its_limit(
    limit: int, window_ms: int, data: st.DataObject
) -> None:
    times = data.draw(arrivals(window_ms))
    rate_limit = RateLimit(limit, window_ms / 1000, "sliding_window")
    passed = admitted(rate_limit, times)
    assert passed == reference(rate_limit, times)
    per_window: dict[int, int] = {}
    for t in passed:
        per_window[t // window_ms] = per_window.get(t // window_ms, 0) + 1
    assert max(per_window.values(), default=0) <= limit
    assert most_in_any_span(passed, window_ms) <= 2 * limit


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(EXACT), limits, windows_ms, bursts, st.data())
def test_a_denial_says_truly_when_the_next_start_is_admitted(
    algorithm: str, limit: int, window_ms: int, burst: int | None, data: st.DataObject
) -> None:
    limiter = limiter_for(RateLimit(limit, window_ms / 1000, algorithm, burst))  # type: ignore[arg-type]
    for t in data.draw(arrivals(window_ms)):
        wait = limiter.acquire(t / 1000)
        if wait:
            assert wait > 0
            # Not a moment before (a nanosecond early is still denied) ...
            assert limiter.acquire(t / 1000 + wait - 1e-9) > 0
            # ... and then, admitted.
            assert limiter.acquire(t / 1000 + wait) == 0.0
            return


@pytest.mark.parametrize("algorithm", [*EXACT, "sliding_window"])
def test_steady_demand_is_served_at_the_limit(algorithm: str) -> None:
    """A start asked for every millisecond for 10 s, at 20 per second: about 200 pass."""
    passed = admitted(RateLimit(20, 1.0, algorithm), list(range(10_000)))  # type: ignore[arg-type]
    burst = 1 if algorithm == "gcra" else 20
    assert 190 <= len(passed) <= 200 + burst


def test_gcra_spaces_starts_evenly() -> None:
    passed = admitted(RateLimit(10, 1.0, "gcra"), list(range(0, 2_000, 10)))
    assert passed == list(range(0, 2_000, 100))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RateLimit(0), "limit: must be from 1"),
        (lambda: RateLimit(10, window=0), "window: must be more than 0"),
        (lambda: RateLimit(10, window=-1), "window: must be more than 0"),
        (lambda: RateLimit(10, window=float("nan")), "window: expected seconds"),
        (lambda: RateLimit(10, algorithm="fixed"), "algorithm must be one of"),  # type: ignore[arg-type]
        (lambda: RateLimit(10, burst=0), "burst: must be from 1"),
        (lambda: RateLimit(10, scope="fleet"), "scope must be"),  # type: ignore[arg-type]
        (lambda: RateLimit(True), "limit: expected a whole number"),  # type: ignore[arg-type]
        (lambda: CircuitBreaker(failure_threshold=0), "failure_threshold"),
        (lambda: CircuitBreaker(failure_threshold=1.5), "failure_threshold"),
        (lambda: CircuitBreaker(window_size=4, minimum_calls=5), "minimum_calls"),
        (lambda: CircuitBreaker(wait=0), "wait: must be more than 0"),
        (lambda: LoadShedding(max_in_flight=0), "max_in_flight"),
        (lambda: LoadShedding(thresholds=(0.9, 0.8)), "three fractions"),  # type: ignore[arg-type]
    ],
)
def test_bad_options_are_refused_with_what_is_wrong(make: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()  # type: ignore[operator]
