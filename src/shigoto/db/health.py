"""What a health check asks of the database: job counts, and jobs left on dead nodes.

counts, stale = await run_async(conn, snapshot(q, node_timeout=30.0))
"""

from __future__ import annotations

from dataclasses import dataclass

from shigoto.admin import Status
from shigoto.db import reading
from shigoto.db.operations import Operation, Statement
from shigoto.db.queries import Queries


@dataclass(frozen=True, slots=True)
class StaleJobs:
    """Jobs executing on a dead node (no row in `nodes`, or a heartbeat older than
    `node_timeout`): how many, the oldest claim's age in seconds, and the first ids."""

    count: int = 0
    oldest_age: float | None = None
    sample: tuple[int, ...] = ()


def stale_jobs(q: Queries, *, node_timeout: float) -> Operation[StaleJobs]:
    result = yield Statement(q.sql("stale_jobs"), {"node_timeout": node_timeout})
    row = result.rows[0]
    age = row["oldest_age"]
    return StaleJobs(row["stale"], None if age is None else max(0.0, age), tuple(row["sample"]))


def snapshot(q: Queries, *, node_timeout: float) -> Operation[tuple[Status, StaleJobs]]:
    """Job counts by queue and state, and the stale jobs, on one connection."""
    status = yield from reading.status(q)
    stale = yield from stale_jobs(q, node_timeout=node_timeout)
    return status, stale
