"""The circuit breaker as a state machine, on a clock the test moves: it opens at its
threshold, waits, lets its probes through, and closes or opens again by their outcome.
(No database: the gate that uses it is tested with nodes.)"""

from __future__ import annotations

import pytest

from shigoto.features.resilience import CircuitBreaker
from shigoto.features.resilience.breaker import Breaker


def test_it_opens_once_enough_runs_failed_often_enough() -> None:
    breaker = Breaker(CircuitBreaker(window_size=10, failure_threshold=0.5, minimum_calls=4))
    for failed in (True, True, True):  # fewer than minimum_calls: no verdict yet
        assert breaker.record(failed=failed, now=0) is None
    assert breaker.allow(0) == 0.0
    assert breaker.record(failed=False, now=1) == "open"  # 3 of 4 failed
    assert breaker.state == "open"


def test_it_stays_closed_below_the_threshold_over_its_window() -> None:
    breaker = Breaker(CircuitBreaker(window_size=4, failure_threshold=0.5, minimum_calls=4))
    # One failure in each four runs, forever: never half of the last four.
    for n in range(40):
        assert breaker.record(failed=n % 4 == 0, now=n) is None
    assert breaker.state == "closed"


def test_old_outcomes_leave_the_window() -> None:
    breaker = Breaker(CircuitBreaker(window_size=4, failure_threshold=0.75, minimum_calls=4))
    for failed in (True, True, False, False, False, False):
        breaker.record(failed=failed, now=0)
    # Two failures went out of the window: three more are needed, not one.
    assert breaker.record(failed=True, now=1) is None
    assert breaker.record(failed=True, now=1) is None
    assert breaker.record(failed=True, now=1) == "open"


def test_open_half_open_closed() -> None:
    options = CircuitBreaker(window_size=5, minimum_calls=5, wait=30.0, half_open_requests=3)
    breaker = Breaker(options)
    for _ in range(5):
        breaker.record(failed=True, now=100.0)
    assert breaker.state == "open"
    assert breaker.allow(110.0) == pytest.approx(20.0)  # nothing runs for `wait` seconds
    assert breaker.record(failed=False, now=111.0) is None  # a run from before: ignored
    assert [breaker.allow(130.0) for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]  # three probes
    assert breaker.state == "half_open"
    assert breaker.record(failed=False, now=131.0) is None
    assert breaker.record(failed=False, now=131.5) is None
    assert breaker.record(failed=False, now=132.0) == "closed"
    assert breaker.allow(132.0) == 0.0
    # Closed anew, it judges only what came after: four failures are not five.
    for _ in range(4):
        assert breaker.record(failed=True, now=133.0) is None


def test_a_failed_probe_opens_it_again_for_another_wait() -> None:
    breaker = Breaker(CircuitBreaker(window_size=5, minimum_calls=5, wait=10.0))
    for _ in range(5):
        breaker.record(failed=True, now=0.0)
    assert breaker.allow(10.0) == 0.0
    assert breaker.record(failed=False, now=10.5) is None
    assert breaker.record(failed=True, now=11.0) == "open"
    assert breaker.allow(20.0) == pytest.approx(1.0)  # ten seconds from the failed probe
    assert breaker.allow(21.0) == 0.0
