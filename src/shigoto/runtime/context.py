"""The running job, as seen from inside a worker: `current_job()` and `report_progress()`.

    from shigoto import current_job, report_progress

    @app.worker
    async def import_file(path: str) -> None:
        job = current_job()                 # the Job row being run (id, attempt, meta...)
        for i, chunk in enumerate(chunks):
            ...
            report_progress(100 * (i + 1) / len(chunks))

Both work in async workers and in plain-function workers (which run in threads). An async
worker reads what its dependencies returned with `await dependency_results()`.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shigoto.job import Job
from shigoto.outcomes import InvalidJobError, ShigotoError


@dataclass(slots=True)
class JobRun:
    """One execution of a job on this node, and why it was stopped, if it was."""

    job: Job
    report: Callable[[Job, float], None] = field(default=lambda job, percent: None)
    # Reads the results of jobs by id (the node's database access), for dependency_results.
    results: Callable[[list[int]], Awaitable[dict[int, Any]]] | None = None
    stop_reason: str | None = None  # "shutdown", "cancelled", "fenced", "paused", "job-paused"
    # The job has run (its outcome is known); what is left is writing it and calling the
    # hooks, which a cancel must not cut short.
    performed: bool = False
    error: BaseException | None = None  # what made the run fail, if it failed
    duration: float | None = None  # seconds its worker ran (set once it has run)


_current: contextvars.ContextVar[JobRun] = contextvars.ContextVar("shigoto_current_job")


class NotInJobError(ShigotoError, LookupError):
    """`current_job()` or `report_progress()` was called outside a running job."""


def current_run() -> JobRun:
    try:
        return _current.get()
    except LookupError:
        raise NotInJobError(
            "current_job: no job is running here; call it from inside a worker"
        ) from None


def running() -> JobRun | None:
    """The calling code's run, or None outside a job (never raises: for log filters)."""
    return _current.get(None)


def current_job() -> Job:
    """The job being run by the calling worker code."""
    return current_run().job


def report_progress(percent: float) -> None:
    """Record how far the running job is (0-100); written to `jobs.progress` in batches."""
    if (
        isinstance(percent, bool)
        or not isinstance(percent, int | float)
        or not math.isfinite(percent)
        or not 0 <= percent <= 100
    ):
        raise InvalidJobError("progress", f"must be a number from 0 to 100, got {percent!r}")
    run = current_run()
    run.report(run.job, float(percent))


async def dependency_results() -> dict[int, Any]:
    """What the running job's dependencies returned, by job id: `None` for
    one that did not complete (a job made with on_dependency_failure="run")."""
    run = current_run()
    ids = list(run.job.depends_on)
    if not ids:
        return {}
    if run.results is None:
        raise NotInJobError("dependency_results: this job runs without database access")
    found = await run.results(ids)
    return {job_id: found.get(job_id) for job_id in ids}


def enter(run: JobRun) -> contextvars.Token[JobRun]:
    return _current.set(run)


def leave(token: contextvars.Token[JobRun]) -> None:
    _current.reset(token)
