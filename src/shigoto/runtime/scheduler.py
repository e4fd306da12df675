"""Fires cron entries and recurring schedules: on the leader only, once per moment.

Each pass reads every schedule with the database's clock, works out the moments due since
the schedule last fired (bounded by its catch-up policy, see `schedules.due`) and, in one
transaction per schedule, records those moments as firings and inserts a job for each
moment recorded. A firing is recorded once, ever (a primary key), so even two nodes that
both believe they lead cannot insert a moment twice. The pass sleeps until the next moment
of any schedule (at most `tick` seconds, to see new schedules).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from shigoto.db import scheduling
from shigoto.db.queries import Queries
from shigoto.job import Job
from shigoto.outcomes import ShigotoError
from shigoto.runtime._component import Periodic
from shigoto.runtime.leader import Leader
from shigoto.runtime.retrying import TRANSIENT, Backoff
from shigoto.schedules import ScheduleInfo, due

logger = logging.getLogger("shigoto.scheduler")

PRUNE_EVERY = 600.0  # seconds between prunings of old firings


class Scheduler:
    def __init__(
        self,
        db: Callable[..., Awaitable[Any]],
        queries: Queries,
        leader: Leader,
        *,
        tick: float = 1.0,
        on_fired: Callable[[ScheduleInfo, Job], None] = lambda entry, job: None,
    ) -> None:
        self._on_fired = on_fired
        self._db = db
        self._q = queries
        self._leader = leader
        self._tick = tick
        self._pruned_at: datetime | None = None
        self._loop = Periodic(
            self._fire_step,
            interval=tick,
            logger=logger,
            failed="scheduling failed",
            only_if=lambda: leader.is_leader,
            backoff=Backoff(),
        )

    async def run(self) -> None:
        """A pass now, then one at the next moment due (every `tick` seconds at most)
        while leading; with backoff while the database is away."""
        await self._loop.run()

    async def _fire_step(self) -> float:
        return max(await self.fire_due(), 0.01)  # a moment just past: no busy loop

    async def fire_due(self) -> float:
        """One pass: fire what is due; returns the seconds until the next moment."""
        now, entries = await self._db(scheduling.list_all(self._q))
        if now is None:
            return self._tick
        wait = self._tick
        for entry in entries:
            if entry.paused:
                continue
            try:
                next_at = await self._fire(entry, now)
            except TRANSIENT:
                raise
            except (ShigotoError, ValueError) as error:  # a bad entry must not stop the rest
                logger.error("schedule %s cannot fire: %s", entry.name, error)
                continue
            if next_at is not None:
                wait = min(wait, (next_at - now).total_seconds())
        if self._pruned_at is None or now - self._pruned_at > timedelta(seconds=PRUNE_EVERY):
            longest = max((e.catch_up_window for e in entries), default=0.0)
            await self._db(scheduling.prune_firings(self._q, keep=2 * longest))
            self._pruned_at = now
        return wait

    async def _fire(self, entry: ScheduleInfo, now: datetime) -> datetime | None:
        since = entry.last_fired_at or entry.inserted_at or now
        moments = due(
            entry.schedule,
            since=since,
            now=now,
            policy=entry.catch_up_policy,
            window=entry.catch_up_window,
        )
        next_at = entry.schedule.after(now)
        last = entry.schedule.latest(now) or since
        if not moments and entry.next_fire_at == next_at:
            return next_at
        skipped = _skipped(entry, since, moments)
        if skipped:
            logger.warning(
                "schedule %s: %d missed moment(s) skipped by its catch-up policy (%s)",
                entry.name,
                skipped,
                entry.catch_up_policy,
            )
        jobs = await self._db(
            scheduling.fire(self._q, entry, moments, last=max(last, since), next_at=next_at),
            transaction=True,
        )
        for job in jobs:
            logger.info("schedule %s fired job %s for %s", entry.name, job.id, job.scheduled_at)
            self._on_fired(entry, job)
        return next_at


def _skipped(entry: ScheduleInfo, since: datetime, moments: list[datetime]) -> int:
    """How many moments between `since` and the first one fired the policy dropped (a
    count for the log, bounded so that a year of downtime does not take a year to count)."""
    if not moments:
        return 0
    count = 0
    for _ in entry.schedule.between(since, moments[0] - timedelta(microseconds=1)):
        count += 1
        if count >= 100_000:
            break
    return count
