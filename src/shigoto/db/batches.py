"""Batches in the store: a batch inserted with its jobs, and read back with its counts.

    batch = await run_async(conn, insert_batch(q, specs, meta={}, on_complete=None,
                                               on_discard=None), transaction=True)

What a batch is and how it closes: `shigoto.features.batches`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from psycopg.types.json import Jsonb

from shigoto.db.inserting import insert_all
from shigoto.db.operations import Operation, Statement
from shigoto.db.queries import Queries
from shigoto.features.batches import Batch
from shigoto.job import JobSpec


def insert_batch(
    q: Queries,
    specs: Sequence[JobSpec],
    *,
    meta: dict[str, Any],
    on_complete: dict[str, Any] | None,
    on_discard: dict[str, Any] | None,
) -> Operation[Batch]:
    """A batch and its jobs (run it in a transaction). A unique job that returned an
    existing one (a conflict) does not join the batch."""
    jobs = yield from insert_all(q, specs)
    members = [job for job in jobs if not job.conflict]
    result = yield Statement(
        q.sql("insert_batch"),
        {
            "total": len(members),
            "meta": Jsonb(meta),
            "on_complete": None if on_complete is None else Jsonb(on_complete),
            "on_discard": None if on_discard is None else Jsonb(on_discard),
        },
    )
    batch_id = result.rows[0]["id"]
    yield Statement(q.sql("set_batch"), {"batch": batch_id, "ids": [j.id for j in members]})
    batch = yield from get_batch(q, batch_id)
    assert batch is not None
    jobs = [job if job.conflict else dataclasses.replace(job, batch_id=batch_id) for job in jobs]
    return dataclasses.replace(batch, jobs=jobs)


def get_batch(q: Queries, batch_id: int) -> Operation[Batch | None]:
    result = yield Statement(q.sql("get_batch"), {"id": batch_id})
    return Batch.from_row(result.rows[0]) if result.rows else None
