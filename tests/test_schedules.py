"""Schedules as pure time arithmetic: property tests across DST transitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shigoto import Cron, Daily, Every, Weekly
from shigoto.schedules import due

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Kolkata"]

# Instants around the 2026 transitions of those zones, and anywhere in the year.
TRANSITIONS = [
    datetime(2026, 3, 8, 6, 0, tzinfo=UTC),  # New York springs forward
    datetime(2026, 3, 29, 0, 30, tzinfo=UTC),  # Berlin springs forward
    datetime(2026, 4, 4, 15, 30, tzinfo=UTC),  # Sydney falls back
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),  # Sydney springs forward
    datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # Berlin falls back
    datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # New York falls back
]

instants = st.one_of(
    st.builds(
        lambda base, offset: base + timedelta(seconds=offset),
        st.sampled_from(TRANSITIONS),
        st.integers(-3 * 3600, 3 * 3600),
    ),
    st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
)


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.just("*"),
        st.integers(low, high).map(str),
        st.lists(st.integers(low, high), min_size=1, max_size=3, unique=True).map(
            lambda values: ",".join(map(str, sorted(values)))
        ),
        st.integers(2, max(2, (high - low) // 2)).map(lambda step: f"*/{step}"),
        st.tuples(st.integers(low, high), st.integers(low, high)).map(
            lambda pair: f"{min(pair)}-{max(pair)}"
        ),
    )


expressions = st.one_of(
    st.tuples(_field(0, 59), _field(0, 23), _field(1, 28), st.just("*"), _field(0, 6)).map(
        " ".join
    ),
    # Hours 1 to 3 every day: the hours DST skips or repeats in the zones above.
    st.tuples(_field(0, 59), st.sampled_from(["1", "2", "3", "1-3", "2,3"])).map(
        lambda mh: f"{mh[0]} {mh[1]} * * *"
    ),
    st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@yearly"]),
)


@settings(max_examples=300, deadline=None)
@example(expression="1 1 * * *", tz="America/New_York", start=datetime(2027, 11, 7, 6, tzinfo=UTC))
@given(expression=expressions, tz=st.sampled_from(ZONES), start=instants)
def test_cron_moments_match_the_library_across_dst(
    expression: str, tz: str, start: datetime
) -> None:
    cron = Cron(expression, tz=tz)
    fields = {
        "@hourly": "0 * * * *",
        "@daily": "0 0 * * *",
        "@weekly": "0 0 * * 0",
        "@monthly": "0 0 1 * *",
        "@yearly": "0 0 1 1 *",
    }.get(expression, expression)
    # The library's walk from `start`, less any time not after it (started in the second
    # pass of an hour repeated in autumn, it can yield the first pass's time).
    library = (
        found.astimezone(UTC)
        for found in CronSim(fields, start.astimezone(ZoneInfo(tz)))
        if found.astimezone(UTC) > start
    )
    moment = start
    for _ in range(5):
        ours = cron.after(moment)
        assert ours == next(library)
        assert ours > moment  # strictly later: never the same moment twice, DST or not
        assert cron.latest(ours) == ours
        before = cron.latest(ours - timedelta(microseconds=1))
        assert before is None or before <= moment  # no moment skipped in between
        moment = ours


@settings(max_examples=200, deadline=None)
@given(
    seconds=st.floats(0.1, 86_400 * 3, allow_nan=False),
    start=instants,
)
def test_every_moments_are_multiples_of_the_interval(seconds: float, start: datetime) -> None:
    every = Every(seconds)
    after, latest = every.after(start), every.latest(start)
    assert latest is not None and latest <= start < after
    assert after - latest == every.interval
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert (after - epoch) % every.interval == timedelta(0)


@settings(max_examples=200, deadline=None)
@given(
    expression=expressions,
    tz=st.sampled_from(ZONES),
    now=instants,
    outage=st.integers(0, 6 * 3600),
    window=st.integers(0, 3 * 3600),
)
@example(
    expression="1 1 * * *",
    tz="America/New_York",
    now=datetime(2027, 11, 7, 6, 0, tzinfo=UTC),
    outage=0,
    window=0,
)
def test_catch_up_fires_exactly_the_missed_moments_the_window_allows(
    expression: str, tz: str, now: datetime, outage: int, window: int
) -> None:
    cron = Cron(expression, tz=tz)
    since = now - timedelta(seconds=outage)
    moments = due(cron, since=since, now=now, policy="window", window=window)
    assert moments == sorted(set(moments))
    missed = list(cron.between(since, now))
    reach = now - timedelta(seconds=max(window, 5))
    assert moments == [m for m in missed if m > reach][-10_000:]
    assert due(cron, since=since, now=now, policy="latest") == missed[-1:]


def test_daily_and_weekly_are_cron_entries() -> None:
    assert Daily(3, 30, tz="Europe/Berlin") == Cron("30 3 * * *", tz="Europe/Berlin")
    assert Weekly("monday", 9) == Cron("0 9 * * 1")
    assert Weekly(6, 0) == Cron("0 0 * * 0")  # Sunday
    spring = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    # 02:30 does not exist in Berlin on 29 March 2026: it fires as the clock jumps to 03:00.
    assert Daily(2, 30, tz="Europe/Berlin").after(spring) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
