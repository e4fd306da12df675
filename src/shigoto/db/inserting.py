"""Inserting jobs: one, many of one worker, or a call's worth with unique keys and
dependencies, each in as few statements as it can.

    job = await run_async(conn, insert(q, spec))
    jobs = await run_async(conn, insert_all(q, specs), transaction=True)

A plain job is one statement; a job with dependencies is checked against the jobs it
names; a unique one is inserted under its key's lock (see `shigoto.features.unique`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from shigoto import _json
from shigoto.db.operations import Operation, Statement
from shigoto.db.queries import Queries
from shigoto.db.rows import job_from_row
from shigoto.features import dependencies
from shigoto.job import STATE_OF, Job, JobSpec, JobState
from shigoto.outcomes import InvalidJobError


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
