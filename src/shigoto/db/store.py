"""The job store: every operation on jobs, as `Operation`s the app runs async or sync.

job = await run_async(conn, insert(q, spec))
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from shigoto import _json
from shigoto.admin import JobFilter, JobPage, QueueStatus, Status
from shigoto.db.operations import Operation, Statement
from shigoto.db.queries import Queries
from shigoto.features import dependencies
from shigoto.features.batches import Batch
from shigoto.job import JOB_COLUMNS, STATE_OF, Job, JobSpec, JobState
from shigoto.outcomes import InvalidJobError

DELETE_BATCH = 5_000
BULK_BATCH = 5_000  # rows per statement of cancel_by, retry_by and delete_by
SIGNAL_IDS = 500  # ids per NOTIFY payload, well under PostgreSQL's 8,000-byte limit
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


def _spec_params(spec: JobSpec) -> dict[str, Any]:
    """A spec's values for insert_job.sql, insert_unique_job.sql and insert_many.sql:
    empty args, meta and tags as NULL (the statements put in the empty value), JSON as
    text; both cheaper to send than psycopg's adaptation of a dict or an empty list."""
    return {
        "queue": spec.queue,
        "worker": spec.worker,
        "args": _json.dumps(spec.args) if spec.args else None,
        "meta": _json.dumps(spec.meta) if spec.meta else None,
        "tags": spec.tags or None,
        "priority": spec.priority,
        "max_attempts": spec.max_attempts,
        "scheduled_at": spec.scheduled_at,
        "partition_key": spec.partition_key,
        "origin": spec.origin,
        "depends_on": [i for i in spec.depends_on if isinstance(i, int)] if spec.depends_on else [],
        "on_dependency_failure": spec.on_dependency_failure,
    }


def insert(q: Queries, spec: JobSpec) -> Operation[Job]:
    """Insert one job; a unique one (run it in a transaction) may return an existing job
    marked `conflict=True` instead."""
    named: list[int] = []
    if spec.depends_on:  # (most jobs have none: nothing to check, no statement more)
        if any(not isinstance(item, int) for item in spec.depends_on):
            raise InvalidJobError(
                "depends_on", "jobs of the same call (specs, Refs) can be named in insert_all only"
            )
        named = [i for i in spec.depends_on if isinstance(i, int)]
        yield from _check_exist(q, named)
    if spec.unique is not None:
        key = spec.unique.key_for(spec)
        yield Statement(q.sql("lock_unique_key"), {"unique_key": key})
        job = yield from _insert_unique(q, spec, key)
    elif named:
        # The bulk statement with one job: it decides whether the job waits.
        document = _job_document(spec, named, waits=False)
        result = yield Statement(
            q.sql("insert_jobs"), {"jobs": _json.dumps([document])}, tuples=True
        )
        job = _job_from_spec(spec, result.rows[0], named)
    else:
        result = yield Statement(q.sql("insert_job"), _spec_params(spec), True)  # tuples
        job = _inserted_job(spec, *result.rows[0])
    if named:
        yield from _mark_dependencies(q, named)
    return job


def _inserted_job(spec: JobSpec, job_id: int, inserted_at: datetime) -> Job:
    """The job insert_job.sql inserted. Its state and scheduled_at follow from the spec and
    inserted_at, which is the statement's now(): scheduled if its time is later, else
    available, as the statement decided."""
    if inserted_at.tzinfo is not UTC:
        inserted_at = inserted_at.astimezone(UTC)
    when = spec.scheduled_at or inserted_at
    # (Positional, and the states read once: keywords, and reading a member off an enum
    # class, cost more than the rest of this function.)
    state = _SCHEDULED if when > inserted_at else _AVAILABLE
    return Job.from_spec(spec, job_id, state, inserted_at, when)


_SCHEDULED, _AVAILABLE = JobState.SCHEDULED, JobState.AVAILABLE


def _mark_dependencies(q: Queries, ids: Sequence[int]) -> Operation[None]:
    """Flag jobs others depend on, so their finishing releases those at once."""
    if ids:
        yield Statement(q.sql("mark_dependencies"), {"ids": sorted(set(ids))})


def _check_exist(q: Queries, ids: list[int]) -> Operation[None]:
    """Dependencies must name existing jobs."""
    if not ids:
        return
    result = yield Statement(q.sql("missing_jobs"), {"ids": ids})
    missing = result.rows[0]["missing"]
    if missing:
        raise InvalidJobError(
            "depends_on", f"no job with id {', '.join(map(str, sorted(missing)))}"
        )


def _insert_unique(q: Queries, spec: JobSpec, key: str) -> Operation[Job]:
    """Under the key's lock: the new job, or the existing one as a conflict."""
    assert spec.unique is not None
    params = {
        **_spec_params(spec),
        "unique_key": key,
        "states": list(spec.unique.states),
        "period": spec.unique.period,
        "replace": list(spec.unique.replace),
        "debounce": spec.unique.debounce,
    }
    result = yield Statement(q.sql("insert_unique_job"), params)
    row = result.rows[0]
    job = job_from_row(row)
    return dataclasses.replace(job, conflict=True) if row["conflict"] else job


def insert_all(q: Queries, specs: Sequence[JobSpec]) -> Operation[list[Job]]:
    """Insert every spec; jobs come back in the order given. Plain jobs go in one
    statement; unique ones one by one, their keys locked first, in a fixed order so that
    two such calls cannot deadlock; dependencies on jobs of the same call are linked last.
    Run it in a transaction when any spec is unique or names a job of the call."""
    if not specs:
        return []
    deps = dependencies.plan(specs)
    yield from _check_exist(q, deps.named_ids)
    keys = {i: s.unique.key_for(s) for i, s in enumerate(specs) if s.unique is not None}
    for key in sorted(set(keys.values())):
        yield Statement(q.sql("lock_unique_key"), {"unique_key": key})
    plain_specs = [(i, s) for i, s in enumerate(specs) if s.unique is None]
    plain = iter((yield from _insert_plain(q, plain_specs, deps)))
    jobs = []
    for i, spec in enumerate(specs):
        jobs.append((yield from _insert_unique(q, spec, keys[i])) if i in keys else next(plain))
    local_ids = [jobs[j].id for js in deps.local for j in js]
    yield from _mark_dependencies(q, [*deps.named_ids, *local_ids])
    if deps.has_local:
        links = [(jobs[i].id, jobs[j].id) for i, js in enumerate(deps.local) for j in js]
        yield Statement(
            q.sql("link_dependencies"),
            {"ids": [a for a, _ in links], "dependencies": [b for _, b in links]},
        )
        jobs = [
            dataclasses.replace(job, depends_on=[*job.depends_on, *(jobs[j].id for j in js)])
            if js
            else job
            for job, js in zip(jobs, deps.local, strict=True)
        ]
    return jobs


def insert_many(q: Queries, template: JobSpec, args: list[dict[str, Any]]) -> Operation[list[int]]:
    """Insert one job per args, all otherwise as `template` (no unique key, no
    dependencies: app.insert_many sends those through insert_all); their ids, in order."""
    if not args:
        return []
    params = {**_spec_params(template), "args": _json.dumps(args)}  # each job's own args
    result = yield Statement(q.sql("insert_many"), params, tuples=True)
    # Ids are drawn in the array's order, so sorting them restores the caller's order.
    return sorted(row[0] for row in result.rows)


def _insert_plain(
    q: Queries, specs: Sequence[tuple[int, JobSpec]], deps: dependencies.Plan
) -> Operation[list[Job]]:
    if not specs:
        return []
    documents = [_job_document(spec, deps.existing[i], bool(deps.local[i])) for i, spec in specs]
    result = yield Statement(q.sql("insert_jobs"), {"jobs": _json.dumps(documents)}, tuples=True)
    # Ids are drawn in the array's order, so sorting by id restores the caller's order.
    rows = sorted(result.rows)  # (by id, the first column)
    return [
        _job_from_spec(spec, row, deps.existing[i])
        for (i, spec), row in zip(specs, rows, strict=True)
    ]


def _job_document(spec: JobSpec, depends_on: list[int], waits: bool) -> dict[str, Any]:
    """A job for insert_jobs.sql, with the jobs it depends on: existing ones by id, and
    whether it also waits for jobs of the same call (`waits`). What is empty or unset is
    left out (the statement fills in the column's default): a shorter document to write,
    send and parse, which is most of a bulk insert's cost."""
    document: dict[str, Any] = {
        "queue": spec.queue,
        "worker": spec.worker,
        "priority": spec.priority,
        "max_attempts": spec.max_attempts,
    }
    if spec.args:
        document["args"] = spec.args
    if spec.meta:
        document["meta"] = spec.meta
    if spec.tags:
        document["tags"] = spec.tags
    if spec.scheduled_at is not None:
        document["scheduled_at"] = spec.scheduled_at.isoformat()
    if spec.partition_key is not None:
        document["partition_key"] = spec.partition_key
    if spec.origin is not None:
        document["origin"] = spec.origin
    if spec.depends_on:
        document["depends_on"] = depends_on
        document["waits"] = waits
        document["on_dependency_failure"] = spec.on_dependency_failure
    return document


def _job_from_spec(spec: JobSpec, row: tuple[Any, ...], depends_on: list[int]) -> Job:
    """The job just inserted, from its spec and the columns the database filled in
    (insert_jobs.sql's row: id, state, inserted_at, scheduled_at)."""
    job_id, state, inserted_at, scheduled_at = row
    return Job.from_spec(
        spec,
        depends_on=depends_on,
        id=job_id,
        state=STATE_OF[state],
        inserted_at=inserted_at if inserted_at.tzinfo is UTC else inserted_at.astimezone(UTC),
        scheduled_at=scheduled_at if scheduled_at.tzinfo is UTC else scheduled_at.astimezone(UTC),
    )


def get_job(q: Queries, job_id: int) -> Operation[Job | None]:
    result = yield Statement(q.sql("get_job"), {"id": job_id})
    return job_from_row(result.rows[0]) if result.rows else None


def list_jobs(q: Queries, where: JobFilter, *, limit: int, after: int | None) -> Operation[JobPage]:
    params = {**where.params(), "limit": limit, "before_id": after}
    result = yield Statement(q.sql("list_jobs"), params)
    jobs = [job_from_row(row) for row in result.rows]
    return JobPage(jobs, jobs[-1].id if len(jobs) == limit else None)


def cancel(q: Queries, job_id: int) -> Operation[bool]:
    result = yield Statement(q.sql("cancel_job"), {"id": job_id})
    if result.rows and result.rows[0]["previous_state"] == JobState.EXECUTING:
        yield from signal(q, {"action": "cancel", "ids": [job_id]})
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


def signal(q: Queries, message: dict[str, Any]) -> Operation[None]:
    """Tell every node something (their notifiers dispatch it); see `runtime.notifier`."""
    yield Statement(q.sql("notify_control"), {"payload": json.dumps(message)})


def retry(q: Queries, job_id: int) -> Operation[bool]:
    result = yield Statement(q.sql("retry_job"), {"id": job_id})
    return bool(result.rows)


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


def delete(q: Queries, job_id: int) -> Operation[bool]:
    result = yield Statement(q.sql("delete_job"), {"id": job_id})
    return bool(result.rows)


def delete_finished(q: Queries, older_than: timedelta, queues: list[str] | None) -> Operation[int]:
    """Delete jobs that finished at least `older_than` ago, in batches; returns the count."""
    total = 0
    while True:
        params = {"older_than": older_than, "queues": queues, "limit": DELETE_BATCH}
        result = yield Statement(q.sql("delete_finished_jobs"), params)
        total += result.rowcount
        if result.rowcount < DELETE_BATCH:
            return total


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


def pause_job(q: Queries, job_id: int) -> Operation[bool]:
    result = yield Statement(q.sql("pause_job"), {"id": job_id})
    if result.rows and result.rows[0]["previous_state"] == JobState.EXECUTING:
        yield from signal(q, {"action": "pause", "ids": [job_id]})
    return bool(result.rows)


def resume_job(q: Queries, job_id: int) -> Operation[bool]:
    result = yield Statement(q.sql("resume_job"), {"id": job_id})
    return bool(result.rows)


def set_queue_paused(q: Queries, queue: str, paused: bool) -> Operation[None]:
    yield Statement(q.sql("set_queue_paused"), {"queue": queue, "paused": paused})


def paused_queues(q: Queries) -> Operation[list[str]]:
    result = yield Statement(q.sql("paused_queues"))
    return [row["name"] for row in result.rows]


def await_job(q: Queries, job_id: int) -> Operation[Job | None]:
    """Mark a job as waited for (its end is then announced) and return it as it is now."""
    result = yield Statement(q.sql("await_job"), {"id": job_id})
    return job_from_row(result.rows[0]) if result.rows else None


def listen_finished(q: Queries) -> Operation[None]:
    yield Statement(q.sql("listen_finished"))


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
