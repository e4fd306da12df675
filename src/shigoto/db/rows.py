"""Jobs from rows of `jobs`: every timestamp in UTC, the state as a `JobState`.

    job = job_from_row(result.rows[0])        # a dict row (with at least JOB_COLUMNS)
    job = job_from_values(row)                # a tuple row, the columns in JOB_COLUMNS order

Every operation that reads jobs builds them here, so a job reads the same whichever call
returned it and whatever the session's TimeZone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from shigoto.job import JOB_COLUMNS, STATE_OF, Job

_TIMESTAMPS = (
    "inserted_at",
    "scheduled_at",
    "attempted_at",
    "completed_at",
    "cancelled_at",
    "discarded_at",
    "heartbeat_at",
)


_TIMESTAMP_POSITIONS = tuple(JOB_COLUMNS.index(name) for name in _TIMESTAMPS)
_STATE_POSITION = JOB_COLUMNS.index("state")


def job_from_row(row: dict[str, Any]) -> Job:
    """A `Job` from a row of `jobs` (with at least JOB_COLUMNS); see `job_from_values`."""
    return job_from_values([row[name] for name in JOB_COLUMNS])


def job_from_values(values: Sequence[Any]) -> Job:
    """A `Job` from the values of JOB_COLUMNS in order, every timestamp in UTC whatever the
    session's TimeZone. The claim's rows come this way: no dict per row, which a busy node
    would build ten thousand times a second."""
    fields = list(values)
    for i in _TIMESTAMP_POSITIONS:
        value = fields[i]
        if value is not None and value.tzinfo is not UTC:
            fields[i] = value.astimezone(UTC)
    fields[_STATE_POSITION] = STATE_OF[fields[_STATE_POSITION]]
    return Job(*fields)
