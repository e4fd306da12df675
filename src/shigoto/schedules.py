"""When recurring jobs fire: `Cron`, `Every`, `Daily` and `Weekly`.

    from shigoto import Cron, Daily, Every, Weekly

    Cron("0 3 * * *", tz="Europe/Berlin")   # 03:00 Berlin time, DST handled
    Daily(3, 30)                            # the same as Cron("30 3 * * *")
    Weekly("monday", 9)                     # Cron("0 9 * * 1")
    Every(30)                               # every 30 seconds (or Every(timedelta(...)))

A schedule only answers "what is the next moment after this one?" (`after`). Cron
expressions are parsed and evaluated by `cronsim`, which follows Debian's cron, DST
included: a moment that falls in the hour skipped in spring fires when the clock jumps, one
in the hour repeated in autumn fires once. `Every` moments are multiples of the interval
since the Unix epoch, so every node computes the same moments.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from shigoto import _validate as check
from shigoto.outcomes import InvalidJobError, InvalidScheduleError

# The nicknames Vixie cron accepts, spelled out (cronsim takes five fields only).
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_CATCH_UP = 3600.0  # every missed moment of the last 60 minutes, as Shigoto
GRACE = 5.0  # how late a moment may fire and still count as on time (policy "none")
MAX_MOMENTS = 10_000  # moments fired at once at most (the latest ones): catch-up is bounded


def _zone(tz: str) -> ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise InvalidScheduleError(f"tz: expected an IANA time zone name, got {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidScheduleError(f"tz: unknown time zone {tz!r}") from None


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise InvalidScheduleError("moments must be timezone-aware datetimes")
    return moment


class Schedule:
    """A recurring moment. `kind`, `expression` and `tz` are what the database stores."""

    kind: str
    expression: str
    tz: str

    def after(self, moment: datetime) -> datetime:
        """The first moment strictly after `moment`, in UTC."""
        raise NotImplementedError

    def latest(self, moment: datetime) -> datetime | None:
        """The last moment at or before `moment` (None if there is none)."""
        raise NotImplementedError

    def between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Every moment in (start, end], oldest first."""
        moment = self.after(start)
        while moment <= end:
            yield moment
            moment = self.after(moment)

    @staticmethod
    def restore(kind: str, expression: str, tz: str = "UTC") -> Schedule:
        """The schedule stored as (kind, expression, tz)."""
        if kind == "every":
            return Every(timedelta(microseconds=int(expression)))
        if kind == "cron":
            return Cron(expression, tz=tz)
        raise InvalidScheduleError(f"unknown schedule kind {kind!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self.kind, self.expression, self.tz) == (other.kind, other.expression, other.tz)

    def __hash__(self) -> int:
        return hash((self.kind, self.expression, self.tz))


class Cron(Schedule):
    """A five-field cron expression (or @hourly, @daily, @weekly, @monthly, @yearly), read
    in the time zone `tz` (default UTC). Out-of-range values are errors, never clamped;
    day-of-month and day-of-week combine with cron's OR rule."""

    kind = "cron"

    def __init__(self, expression: str, tz: str = "UTC") -> None:
        if not isinstance(expression, str):
            raise InvalidScheduleError(f"cron: expected a string, got {expression!r}")
        expression = " ".join(expression.split())
        fields = NICKNAMES.get(expression.lower(), expression)
        self._zone = _zone(tz)
        try:
            CronSim(fields, datetime(2000, 1, 1, tzinfo=self._zone))
        except CronSimError as error:
            raise InvalidScheduleError(f"cron {expression!r}: {error}") from None
        self.expression = expression
        self.tz = tz
        self._fields = fields

    def after(self, moment: datetime) -> datetime:
        moment = _aware(moment)
        for found in CronSim(self._fields, moment.astimezone(self._zone)):
            # Started in the second pass of an hour repeated in autumn, cronsim may give the
            # first pass's time, which is earlier: skip to one truly after.
            if found.astimezone(UTC) > moment:
                return found.astimezone(UTC)
        # cronsim looks 50 years ahead and stops: "0 0 30 2 *" never comes.
        raise InvalidScheduleError(f"cron {self.expression!r} never fires")

    def latest(self, moment: datetime) -> datetime | None:
        # Walked forwards from ever further back, so that it agrees with `after` exactly:
        # cronsim's reverse walk can skip a moment in the hour repeated in autumn.
        moment = _aware(moment)
        lookback = timedelta(hours=1)
        while lookback < timedelta(days=366 * 30):
            found = None
            for candidate in self.between(moment - lookback, moment):
                found = candidate
            if found is not None:
                return found
            lookback *= 2
        return None

    def __repr__(self) -> str:
        return f"Cron({self.expression!r}, tz={self.tz!r})"


class Daily(Cron):
    """Every day at hour:minute in `tz`: `Daily(3, 30)` is `Cron("30 3 * * *")`."""

    def __init__(self, hour: int, minute: int = 0, tz: str = "UTC") -> None:
        _check_clock(hour, minute)
        super().__init__(f"{minute} {hour} * * *", tz)


class Weekly(Cron):
    """Every week on `weekday` (0 = Monday ... 6 = Sunday, or its English name) at
    hour:minute in `tz`: `Weekly("monday", 9)` is `Cron("0 9 * * 1")`."""

    def __init__(self, weekday: int | str, hour: int = 0, minute: int = 0, tz: str = "UTC") -> None:
        if isinstance(weekday, str) and weekday.lower() in WEEKDAYS:
            weekday = WEEKDAYS.index(weekday.lower())
        if isinstance(weekday, bool) or not isinstance(weekday, int) or not 0 <= weekday <= 6:
            raise InvalidScheduleError(
                "weekday: expected 0 (Monday) to 6 (Sunday) or a day's name, "
                f"got {check.shown(weekday)}"
            )
        _check_clock(hour, minute)
        super().__init__(f"{minute} {hour} * * {(weekday + 1) % 7}", tz)


class Every(Schedule):
    """Every `interval` (seconds or a timedelta; sub-second intervals work). Moments are
    multiples of the interval since the Unix epoch: `Every(60)` fires at each whole minute.
    An interval is the same length in every time zone, so `Every` takes none."""

    kind = "every"
    tz = "UTC"

    def __init__(self, interval: float | timedelta) -> None:
        seconds = _duration(interval, "every")
        if isinstance(interval, timedelta):
            micros = interval // timedelta(microseconds=1)
        else:
            micros = round(seconds * 1_000_000)
        if micros < 100_000:
            raise InvalidScheduleError(
                f"every: the interval must be at least 0.1 s, got {check.shown(interval)}"
            )
        self.interval = timedelta(microseconds=micros)
        self.expression = str(micros)

    @property
    def interval_seconds(self) -> float:
        return self.interval.total_seconds()

    def after(self, moment: datetime) -> datetime:
        elapsed = _aware(moment) - _EPOCH
        return _EPOCH + (elapsed // self.interval + 1) * self.interval

    def latest(self, moment: datetime) -> datetime | None:
        elapsed = _aware(moment) - _EPOCH
        return _EPOCH + (elapsed // self.interval) * self.interval

    def __repr__(self) -> str:
        return f"Every({self.interval.total_seconds()!r})"


def _check_clock(hour: object, minute: object) -> None:
    for value, name, top in ((hour, "hour", 23), (minute, "minute", 59)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise InvalidScheduleError(f"{name}: expected 0 to {top}, got {check.shown(value)}")


def _duration(value: object, field: str) -> float:
    """Seconds as `check.seconds` takes them (finite, at most 100 years), for a schedule."""
    try:
        return check.seconds(value, field)
    except InvalidJobError as error:
        raise InvalidScheduleError(str(error)) from None


def catch_up_policy(value: object) -> tuple[str, float]:
    """(policy, window seconds) for a `catch_up=` option: a window (seconds or timedelta;
    every missed moment that recent), "latest" (only the latest missed moment) or "none"."""
    if value == "latest":
        return "latest", 0.0
    if value is None or value == "none":
        return "none", 0.0
    if isinstance(value, timedelta | int | float) and not isinstance(value, bool):
        return "window", _duration(value, "catch_up")
    raise InvalidScheduleError(
        "catch_up: expected a window (seconds or timedelta), 'latest' or 'none', "
        f"got {check.shown(value)}"
    )


def due(
    schedule: Schedule,
    *,
    since: datetime,
    now: datetime,
    policy: str = "window",
    window: float = DEFAULT_CATCH_UP,
) -> list[datetime]:
    """The moments to fire now: those in (since, now] the catch-up policy keeps, oldest first.

    `since` is the last moment fired (or when the schedule was made). A moment up to GRACE
    seconds old is on time under every policy; older ones are "missed".
    """
    if policy == "latest":
        latest = schedule.latest(now)
        return [latest] if latest is not None and latest > since else []
    reach = GRACE if policy == "none" else max(window, GRACE)
    start = max(since, now - timedelta(seconds=reach))
    if start >= now:
        return []
    # A window of many moments: the latest MAX_MOMENTS of it, found without walking it all.
    if isinstance(schedule, Every):
        first = schedule.after(start)
        count = (now - first) // schedule.interval + 1 if first <= now else 0
        if count > MAX_MOMENTS:
            start = now - schedule.interval * MAX_MOMENTS
    moments = []
    for moment in schedule.between(start, now):
        moments.append(moment)
        if len(moments) > MAX_MOMENTS:
            del moments[0]
    return moments


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as stored: what `app.schedules()` returns and `shigoto cron list` shows.

    `options` are the job options of each firing (queue, priority, max_attempts, tags, meta,
    partition_key); `last_fired_at` is the latest moment fired, `next_fire_at` the next one.
    """

    name: str
    schedule: Schedule
    worker: str
    args: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    catch_up_policy: str = "window"
    catch_up_window: float = DEFAULT_CATCH_UP
    paused: bool = False
    last_fired_at: datetime | None = None
    next_fire_at: datetime | None = None
    inserted_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ScheduleInfo:
        return cls(
            name=row["name"],
            schedule=Schedule.restore(row["kind"], row["expression"], row["timezone"]),
            worker=row["worker"],
            args=row["args"],
            options=row["options"],
            catch_up_policy=row["catch_up_policy"],
            catch_up_window=float(row.get("catch_up_seconds") or 0.0)
            if "catch_up_seconds" in row
            else row["catch_up"].total_seconds(),
            paused=row["paused"],
            last_fired_at=_utc(row["last_fired_at"]),
            next_fire_at=_utc(row["next_fire_at"]),
            inserted_at=_utc(row["inserted_at"]),
        )


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)
