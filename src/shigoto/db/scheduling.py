"""What scheduling asks of the database: leases, schedules and their firings.

elected = await run_async(conn, elect(q, role="leader", node=node_id, lease=15))
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from shigoto.db import inserting
from shigoto.db.operations import Operation, Statement
from shigoto.db.queries import Queries
from shigoto.job import Job, JobSpec
from shigoto.schedules import ScheduleInfo

FIRINGS_KEPT = 2 * 24 * 3600.0  # beyond every default window; longer windows extend it


def elect(q: Queries, *, role: str, node: str, lease: float) -> Operation[bool]:
    """Take or renew the lease on `role`; True while this node holds it."""
    result = yield Statement(q.sql("elect_leader"), {"name": role, "node": node, "lease": lease})
    return bool(result.rows)


def resign(q: Queries, *, role: str, node: str) -> Operation[None]:
    yield Statement(q.sql("resign_leader"), {"name": role, "node": node})


def save(q: Queries, entry: ScheduleInfo) -> Operation[ScheduleInfo]:
    """Create or redefine a schedule; its firing history stays."""
    params = {
        "name": entry.name,
        "kind": entry.schedule.kind,
        "expression": entry.schedule.expression,
        "timezone": entry.schedule.tz,
        "worker": entry.worker,
        "args": Jsonb(entry.args),
        "options": Jsonb(entry.options),
        "catch_up": entry.catch_up_window,
        "catch_up_policy": entry.catch_up_policy,
        "next_fire_at": entry.next_fire_at,
    }
    result = yield Statement(q.sql("save_schedule"), params)
    return ScheduleInfo.from_row(result.rows[0])


def delete(q: Queries, name: str) -> Operation[bool]:
    result = yield Statement(q.sql("delete_schedule"), {"name": name})
    return bool(result.rows)


def list_all(q: Queries) -> Operation[tuple[datetime | None, list[ScheduleInfo]]]:
    """Every schedule, and the database's clock (None when there is no schedule)."""
    result = yield Statement(q.sql("list_schedules"))
    now = result.rows[0]["db_now"] if result.rows else None
    return now, [ScheduleInfo.from_row(row) for row in result.rows]


def fire(
    q: Queries,
    entry: ScheduleInfo,
    moments: Sequence[datetime],
    *,
    last: datetime,
    next_at: datetime | None,
) -> Operation[list[Job]]:
    """Insert one job per moment not fired yet (run it in a transaction), then record the
    schedule's last and next moments. Returns the jobs inserted."""
    jobs: list[Job] = []
    if moments:
        recorded = yield Statement(
            q.sql("record_firings"), {"name": entry.name, "moments": list(moments)}
        )
        fresh = sorted(row["fire_at"] for row in recorded.rows)
        specs = [_spec(entry, moment) for moment in fresh]
        jobs = (yield from inserting.insert_all(q, specs)) if specs else []
    params: dict[str, Any] = {
        "name": entry.name,
        "moments": [job.scheduled_at for job in jobs],
        "job_ids": [job.id for job in jobs],
        "last": last,
        "next": next_at,
    }
    yield Statement(q.sql("mark_fired"), params)
    return jobs


def prune_firings(q: Queries, keep: float) -> Operation[None]:
    yield Statement(q.sql("prune_firings"), {"keep": max(keep, FIRINGS_KEPT)})


def _spec(entry: ScheduleInfo, moment: datetime) -> JobSpec:
    options = {"origin": f"schedule:{entry.name}", **entry.options}
    return JobSpec.build(entry.worker, entry.args, scheduled_at=moment, **options)
