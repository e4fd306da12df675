"""Admin changes to jobs and queues: cancel, retry, delete, pause and resume, one job
or every job a filter matches; and the signal that tells every node of a change.

    cancelled = await run_async(conn, change_job(q, "cancel", 42))
    count = await run_async(conn, retry_by(q, JobFilter(queues=["emails"])))

A job that was running when it was cancelled or paused is stopped by its node, told by
`signal`. The bulk calls work in short batches, each its own statement.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from shigoto.admin import JobFilter
from shigoto.db.operations import Operation, Statement
from shigoto.db.queries import Queries
from shigoto.job import JobState

BULK_BATCH = 5_000  # rows per statement of cancel_by, retry_by and delete_by
SIGNAL_IDS = 500  # ids per NOTIFY payload, well under PostgreSQL's 8,000-byte limit


# What an admin call can do to one job; a job that was running when it was cancelled or
# paused is then stopped by its node.
JobChange = Literal["cancel", "retry", "delete", "pause", "resume"]
STOPS_RUNNING: frozenset[JobChange] = frozenset({"cancel", "pause"})


def change_job(q: Queries, change: JobChange, job_id: int) -> Operation[bool]:
    """Run `<change>_job.sql` on one job; whether it changed it (the job exists, in a
    state that allows it). A change that stops a running job tells its node (the query
    returns the job's previous state)."""
    result = yield Statement(q.sql(f"{change}_job"), {"id": job_id})
    if (
        change in STOPS_RUNNING
        and result.rows
        and result.rows[0]["previous_state"] == JobState.EXECUTING
    ):
        yield from signal(q, {"action": change, "ids": [job_id]})
    return bool(result.rows)


def cancel_by(q: Queries, where: JobFilter) -> Operation[int]:
    """Cancel in batches of BULK_BATCH, each its own short transaction; returns the count."""
    total = 0
    while True:
        result = yield Statement(q.sql("cancel_jobs"), {**where.params(), "limit": BULK_BATCH})
        running: list[int] = result.rows[0]["executing"]
        for start in range(0, len(running), SIGNAL_IDS):
            ids = running[start : start + SIGNAL_IDS]
            yield from signal(q, {"action": "cancel", "ids": ids})
        count = int(result.rows[0]["count"])
        total += count
        if count < BULK_BATCH:
            return total


def retry_by(q: Queries, where: JobFilter) -> Operation[int]:
    return (yield from _in_batches(q, "retry_jobs", where))


def delete_by(q: Queries, where: JobFilter) -> Operation[int]:
    return (yield from _in_batches(q, "delete_jobs", where))


def _in_batches(q: Queries, query: str, where: JobFilter) -> Operation[int]:
    """Run a batched bulk statement until a batch comes back short; the total count."""
    total = 0
    while True:
        result = yield Statement(q.sql(query), {**where.params(), "limit": BULK_BATCH})
        total += result.rowcount
        if result.rowcount < BULK_BATCH:
            return total


def set_queue_paused(q: Queries, queue: str, paused: bool) -> Operation[None]:
    yield Statement(q.sql("set_queue_paused"), {"queue": queue, "paused": paused})


def signal(q: Queries, message: dict[str, Any]) -> Operation[None]:
    """Tell every node something (their notifiers dispatch it); see `runtime.notifier`."""
    yield Statement(q.sql("notify_control"), {"payload": json.dumps(message)})
