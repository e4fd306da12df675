"""Reading jobs and queues: one job, a page of jobs, counts by queue and state, the
paused queues; and waiting for a job's end.

    job = await run_async(conn, get_job(q, 42))
    page = await run_async(conn, list_jobs(q, JobFilter(), limit=50, after=None))

None of these changes a job, but for `await_job`, which marks one as waited for so
that its end is announced.
"""

from __future__ import annotations

from shigoto.admin import JobFilter, JobPage, QueueStatus, Status
from shigoto.db.operations import Operation, Statement
from shigoto.db.queries import Queries
from shigoto.db.rows import job_from_row
from shigoto.job import Job, JobState


def get_job(q: Queries, job_id: int) -> Operation[Job | None]:
    result = yield Statement(q.sql("get_job"), {"id": job_id})
    return job_from_row(result.rows[0]) if result.rows else None


def list_jobs(q: Queries, where: JobFilter, *, limit: int, after: int | None) -> Operation[JobPage]:
    params = {**where.params(), "limit": limit, "before_id": after}
    result = yield Statement(q.sql("list_jobs"), params)
    jobs = [job_from_row(row) for row in result.rows]
    return JobPage(jobs, jobs[-1].id if len(jobs) == limit else None)


def status(q: Queries) -> Operation[Status]:
    result = yield Statement(q.sql("queue_status"))
    queues: dict[str, QueueStatus] = {}
    for row in result.rows:
        name = row["queue"]
        entry = queues.setdefault(name, QueueStatus(name))
        entry.counts[JobState(row["state"])] = row["count"]
        if row["oldest_available_age"] is not None:
            queues[name] = QueueStatus(name, entry.counts, max(0.0, row["oldest_available_age"]))
    return Status(queues)


def paused_queues(q: Queries) -> Operation[list[str]]:
    result = yield Statement(q.sql("paused_queues"))
    return [row["name"] for row in result.rows]


def await_job(q: Queries, job_id: int) -> Operation[Job | None]:
    """Mark a job as waited for (its end is then announced) and return it as it is now."""
    result = yield Statement(q.sql("await_job"), {"id": job_id})
    return job_from_row(result.rows[0]) if result.rows else None


def listen_finished(q: Queries) -> Operation[None]:
    yield Statement(q.sql("listen_finished"))
