"""Batches: jobs inserted as a group, with callbacks when the group is done.

    batch = await app.batch(
        [resize.new({"image": name}) for name in names],
        on_complete=notify_user,          # inserted once every job has finished
        on_discard=alert_ops,             # inserted too when any job was discarded
        meta={"album": 7},
    )
    batch.id, batch.total                 # the jobs are in batch.jobs

A batch's jobs and its total are written in one transaction before any of them can run.
Completed, discarded and cancelled jobs all count as finished. When the last one
finishes, whichever node notices closes the batch and inserts its callbacks — once, even
when the last two jobs finish on two nodes at the same instant. A callback job receives
the summary as its one argument: `batch={"id", "total", "completed", "discarded",
"cancelled", "meta"}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shigoto.job import Job


@dataclass(frozen=True)
class Batch:
    """A batch and its counts (live while it runs, final once `state` is "finished")."""

    id: int
    state: str
    total: int
    completed: int
    discarded: int
    cancelled: int
    meta: dict[str, Any]
    inserted_at: datetime
    finished_at: datetime | None = None
    jobs: list[Job] = field(default_factory=list)  # filled by `app.batch` only

    @property
    def finished(self) -> int:
        return self.completed + self.discarded + self.cancelled

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Batch:
        return cls(
            id=row["id"],
            state=row["state"],
            total=row["total_jobs"],
            completed=row["completed_jobs"],
            discarded=row["discarded_jobs"],
            cancelled=row["cancelled_jobs"],
            meta=row["meta"],
            inserted_at=row["inserted_at"].astimezone(UTC),
            finished_at=None if row["finished_at"] is None else row["finished_at"].astimezone(UTC),
        )
