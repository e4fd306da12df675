"""Load shedding as a plain object on a clock the test moves: CoDel on queue waits, and
the share of `max_in_flight` each priority may use. (No database.)"""

from __future__ import annotations

import itertools
import math

import pytest

from shigoto.features.resilience import LoadShedding
from shigoto.features.resilience.shedding import CoDel, Shedder, level

TARGET, INTERVAL = 0.005, 0.1


def test_short_waits_are_never_dropped() -> None:
    codel = CoDel(TARGET, INTERVAL)
    assert not any(codel.should_drop(0.004, now=t / 1000) for t in range(10_000))


def test_a_long_wait_is_dropped_only_once_it_lasted_an_interval() -> None:
    codel = CoDel(TARGET, INTERVAL)
    assert not codel.should_drop(0.050, now=1.000)  # high, but only just
    assert not codel.should_drop(0.050, now=1.099)
    assert codel.should_drop(0.050, now=1.100) and codel.dropping


def test_drops_come_faster_while_the_wait_stays_high_and_stop_when_it_falls() -> None:
    codel = CoDel(TARGET, INTERVAL)
    drops = [t / 1000 for t in range(1000, 4000) if codel.should_drop(0.050, now=t / 1000)]
    gaps = [b - a for a, b in itertools.pairwise(drops)]
    # Each gap is interval / sqrt(count): shorter and shorter (to the millisecond).
    for count, gap in enumerate(gaps, start=1):
        assert gap == pytest.approx(INTERVAL / math.sqrt(count), abs=0.0011)
    assert not codel.should_drop(0.001, now=4.0) and not codel.dropping
    assert not codel.should_drop(0.050, now=4.001)  # high again: a new interval first


def test_levels_by_priority() -> None:
    assert [level(p) for p in (20, 10, 9, 5, 4, 0, -1)] == [0, 0, 1, 1, 2, 2, 3]


def test_high_priority_is_never_shed_and_the_rest_by_their_share() -> None:
    shedder = Shedder(LoadShedding(max_in_flight=100))

    def sheds(priority: int, running: int) -> bool:
        return shedder.sheds(priority=priority, waited=0.0, running=running, now=0.0)

    assert not sheds(10, 10_000)
    assert [sheds(5, n) for n in (89, 90)] == [False, True]
    assert [sheds(0, n) for n in (79, 80)] == [False, True]
    assert [sheds(-5, n) for n in (69, 70)] == [False, True]


def test_while_codel_drops_only_high_priority_runs() -> None:
    shedder = Shedder(LoadShedding(target=TARGET, interval=INTERVAL))
    shedder.sheds(priority=0, waited=1.0, running=0, now=0.0)
    assert not shedder.sheds(priority=10, waited=1.0, running=0, now=0.2)
    assert shedder.sheds(priority=0, waited=1.0, running=0, now=0.4)
