"""Unique jobs: one job per key, enforced by the database under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from shigoto import InvalidJobError, JobSpec, JobState, Shigoto, Unique
from shigoto.outcomes import ConfigurationError


async def _rows(db, schema: str, worker: str) -> int:
    cur = await db.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE worker = %s").format(sql.Identifier(schema, "jobs")),
        [worker],
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_twenty_connections_inserting_one_unique_job_make_one_row(
    app: Shigoto, dsn: str, schema: str, db
) -> None:
    spec = JobSpec.build("sync.account", {"account": 42}, unique=Unique())
    connections = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(20)]
    try:
        start = asyncio.Event()

        async def insert(conn: psycopg.AsyncConnection) -> tuple[int, bool]:
            await start.wait()  # all at once
            job = await app.insert(spec, conn=conn)
            return job.id, job.conflict

        tasks = [asyncio.create_task(insert(conn)) for conn in connections]
        await asyncio.sleep(0.05)
        start.set()
        results = await asyncio.gather(*tasks)
    finally:
        for conn in connections:
            await conn.close()
    assert await _rows(db, schema, "sync.account") == 1
    assert len({job_id for job_id, _ in results}) == 1
    assert sorted(conflict for _, conflict in results) == [False] + [True] * 19


async def test_a_conflict_returns_the_existing_job_untouched(app: Shigoto) -> None:
    first = await app.insert(JobSpec.build("w", {"a": 1}, priority=1, unique=True))
    again = await app.insert(JobSpec.build("w", {"a": 1}, priority=9, unique=True))
    other = await app.insert(JobSpec.build("w", {"a": 2}, unique=True))
    assert not first.conflict and again.conflict and not other.conflict
    assert again.id == first.id and again.priority == 1  # nothing replaced by default
    assert other.id != first.id
    stored = await app.get_job(first.id)
    # A SHA-256 hash, never the args themselves.
    assert stored is not None and stored.unique_key is not None
    assert len(stored.unique_key) == 64 and '"a"' not in stored.unique_key


async def test_replace_copies_the_named_fields_onto_the_existing_job(app: Shigoto) -> None:
    unique = Unique(keys=["worker"], replace=["priority", "args"])
    first = await app.insert(JobSpec.build("w", {"v": 1}, priority=1, unique=unique))
    again = await app.insert(JobSpec.build("w", {"v": 2}, priority=7, unique=unique))
    assert again.conflict and again.id == first.id
    assert again.priority == 7 and again.args == {"v": 2}
    assert again.max_attempts == first.max_attempts  # not named: kept


async def test_debounce_pushes_the_existing_jobs_start(app: Shigoto) -> None:
    unique = Unique(debounce=30)
    first = await app.insert(JobSpec.build("w", {}, unique=unique))
    assert first.state is JobState.AVAILABLE
    before = datetime.now(UTC)
    again = await app.insert(JobSpec.build("w", {}, unique=unique))
    assert again.conflict and again.id == first.id
    assert again.state is JobState.SCHEDULED
    assert before + timedelta(seconds=29) < again.scheduled_at < before + timedelta(seconds=32)


async def test_keys_may_name_single_args(app: Shigoto) -> None:
    unique = Unique(keys=["worker", "args.user"])
    first = await app.insert(JobSpec.build("w", {"user": 1, "at": "09:00"}, unique=unique))
    same_user = await app.insert(JobSpec.build("w", {"user": 1, "at": "10:00"}, unique=unique))
    other_user = await app.insert(JobSpec.build("w", {"user": 2, "at": "09:00"}, unique=unique))
    assert same_user.conflict and same_user.id == first.id
    assert not other_user.conflict


async def test_states_and_period_bound_the_conflict(app: Shigoto, db, schema: str) -> None:
    job = await app.insert(JobSpec.build("w", {}, unique=True))
    await app.cancel(job.id)
    after_cancel = await app.insert(JobSpec.build("w", {}, unique=True))
    assert not after_cancel.conflict  # a cancelled job is not in the default states

    with_final = Unique(states=["available", "cancelled"], period=60)
    assert (await app.insert(JobSpec.build("w", {}, unique=with_final))).conflict
    # Older than the period: no conflict any more.
    await db.execute(
        sql.SQL("UPDATE {} SET inserted_at = now() - interval '2 minutes'").format(
            sql.Identifier(schema, "jobs")
        )
    )
    assert not (await app.insert(JobSpec.build("w", {}, unique=with_final))).conflict


async def test_insert_all_honours_uniqueness_within_and_across_calls(
    app: Shigoto, db, schema: str
) -> None:
    jobs = await app.insert_all(
        [
            JobSpec.build("w", {"k": 1}, unique=True),
            JobSpec.build("plain", {}),
            JobSpec.build("w", {"k": 1}, unique=True),
            JobSpec.build("w", {"k": 2}, unique=True),
        ]
    )
    assert [job.conflict for job in jobs] == [False, False, True, False]
    assert jobs[2].id == jobs[0].id and jobs[1].worker == "plain"
    again = await app.insert_all([JobSpec.build("w", {"k": 2}, unique=True)])
    assert again[0].conflict and again[0].id == jobs[3].id
    assert await _rows(db, schema, "w") == 2


async def test_a_workers_uniqueness_is_its_default(app: Shigoto, db, schema: str) -> None:
    @app.worker(name="digest", unique=Unique(keys=["worker"]))
    async def digest(day: str) -> None: ...

    first = await digest.enqueue({"day": "mon"})
    assert (await digest.enqueue({"day": "tue"})).id == first.id
    assert not (await digest.enqueue({"day": "wed"}, unique=False)).conflict
    assert await _rows(db, schema, "digest") == 2


def test_bad_unique_options_are_refused() -> None:
    with pytest.raises(InvalidJobError, match=r"unique\.keys"):
        Unique(keys=["colour"])
    with pytest.raises(InvalidJobError, match=r"unique\.states"):
        Unique(states=["lost"])
    with pytest.raises(InvalidJobError, match=r"unique\.replace"):
        Unique(replace=["worker"])
    with pytest.raises(InvalidJobError, match=r"unique\.period"):
        Unique(period=-1)
    with pytest.raises(InvalidJobError, match="unique"):
        JobSpec.build("w", {}, unique="yes")  # type: ignore[arg-type]
    app = Shigoto(dsn="postgresql://x")
    with pytest.raises(ConfigurationError, match="unique"):
        app.worker(name="w", unique=42)(lambda: None)
