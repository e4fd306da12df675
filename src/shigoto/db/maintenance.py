"""Keeping `jobs` lean: deleting old finished jobs, pruning (archive, then delete), and
VACUUM when dead rows pile up.

    archived, deleted = await run_async(conn, prune(q, prune_after=86400, retention=604800))
    rows = await run_async(conn, dead_rows(q))

Deleting and pruning work in batches of short statements, each its own transaction, so
no statement holds many locks for long.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from shigoto.db.operations import Operation, Statement
from shigoto.db.queries import Queries

DELETE_BATCH = 5_000


def delete_finished(q: Queries, older_than: timedelta, queues: list[str] | None) -> Operation[int]:
    """Delete jobs that finished at least `older_than` ago, in batches; returns the count."""
    total = 0
    while True:
        params = {"older_than": older_than, "queues": queues, "limit": DELETE_BATCH}
        result = yield Statement(q.sql("delete_finished_jobs"), params)
        total += result.rowcount
        if result.rowcount < DELETE_BATCH:
            return total


PRUNE_BATCH = 5_000


def prune(
    q: Queries, *, prune_after: float, retention: float, batches: int | None = None
) -> Operation[tuple[int, int]]:
    """Archive jobs finished more than `prune_after` seconds ago and delete archived ones
    older than `retention`, in batches of PRUNE_BATCH rows, each its own short transaction
    (run it outside a transaction). At most `batches` batches of each; returns the counts."""
    archived = yield from _batches(q, "archive_jobs", prune_after, batches)
    deleted = yield from _batches(q, "delete_archived_jobs", retention, batches)
    return archived, deleted


def _batches(q: Queries, query: str, older_than: float, limit: int | None) -> Operation[int]:
    total, done = 0, 0
    while limit is None or done < limit:
        result = yield Statement(q.sql(query), {"older_than": older_than, "limit": PRUNE_BATCH})
        total += result.rowcount
        done += 1
        if result.rowcount < PRUNE_BATCH:
            break
    return total


@dataclasses.dataclass(frozen=True, slots=True)
class DeadRows:
    dead: int
    live: int
    may_vacuum: bool


def dead_rows(q: Queries) -> Operation[DeadRows]:
    """The dead and live row counts of `jobs` (PostgreSQL's statistics)."""
    result = yield Statement(q.sql("dead_rows"))
    row = result.rows[0]  # the table exists (its name is cast to regclass): one row
    return DeadRows(int(row["dead"]), int(row["live"]), bool(row["may_vacuum"]))


def vacuum(q: Queries) -> Operation[None]:
    """VACUUM `jobs` (outside a transaction)."""
    yield Statement(q.sql("vacuum_jobs"))


def prune_preview(
    q: Queries, *, prune_after: float, retention: float
) -> Operation[tuple[int, int]]:
    """What `prune` would archive and delete now."""
    params = {"prune_after": prune_after, "retention": retention}
    result = yield Statement(q.sql("prune_preview"), params)
    return int(result.rows[0]["to_archive"]), int(result.rows[0]["to_delete"])
