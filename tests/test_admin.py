"""Looking at jobs and managing them: get, list, cancel, retry, delete, status."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from psycopg import sql

from shigoto import InvalidJobError, Job, JobSpec, JobState, Shigoto


@pytest.fixture
def greet(app: Shigoto):
    @app.worker(name="greet", queue="greetings", tags=["hello"])
    async def greet(name: str = "", n: int = 0) -> None: ...

    return greet


@pytest.fixture
def force(db, schema: str):
    """Put a job in a state the runtime would, as the runtime would write it."""

    async def force(job: Job, state: JobState, **columns: object) -> None:
        stamps = {
            JobState.COMPLETED: "completed_at",
            JobState.DISCARDED: "discarded_at",
            JobState.CANCELLED: "cancelled_at",
            JobState.EXECUTING: "attempted_at",
        }
        values = {"state": state.value, **columns}
        if state in stamps:
            values.setdefault(stamps[state], datetime.now(UTC))
        if state is JobState.EXECUTING:
            values.setdefault("attempt", job.attempt + 1)
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in values
        )
        query = sql.SQL("UPDATE {}.jobs SET {} WHERE id = {}").format(
            sql.Identifier(schema), assignments, sql.Literal(job.id)
        )
        await db.execute(query, values)

    return force


async def test_get_job_of_unknown_id_is_none(app: Shigoto) -> None:
    assert await app.get_job(123456) is None


async def test_list_jobs_filters(app: Shigoto, greet, force) -> None:
    a = await greet.enqueue({"name": "a"})
    b = await greet.enqueue({"name": "b"}, queue="other", tags=["x", "y"])
    c = await greet.enqueue({"name": "c"}, tags=["x"])
    await force(c, JobState.COMPLETED)

    async def ids(**filters: object) -> list[int]:
        return [j.id for j in (await app.list_jobs(**filters)).jobs]  # type: ignore[arg-type]

    assert await ids() == [c.id, b.id, a.id]  # newest first
    assert await ids(state="completed") == [c.id]
    assert await ids(state=[JobState.AVAILABLE, "completed"]) == [c.id, b.id, a.id]
    assert await ids(queue="other") == [b.id]
    assert await ids(queue=["other", "greetings"]) == [c.id, b.id, a.id]
    assert await ids(worker="greet") == [c.id, b.id, a.id]
    assert await ids(worker="someone.else") == []
    assert await ids(tags=["x"]) == [c.id, b.id]
    assert await ids(tags=["x", "y"]) == [b.id]
    assert await ids(since=b.inserted_at) == [c.id, b.id]
    assert await ids(until=b.inserted_at) == [a.id]
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await ids(since=future) == []


async def test_list_jobs_keyset_pagination_visits_every_job_once(app: Shigoto, greet) -> None:
    inserted = await app.insert_all(greet.new({"name": str(i)}) for i in range(25))
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = await app.list_jobs(limit=10, after=cursor)
        pages += 1
        seen += [j.id for j in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted((j.id for j in inserted), reverse=True)
    assert pages == 3


async def test_cancel_unfinished_job(app: Shigoto, greet, force) -> None:
    waiting = await greet.enqueue({}, scheduled_in=3600)
    running = await greet.enqueue({})
    await force(running, JobState.EXECUTING)

    assert await app.cancel(waiting.id) is True
    assert await app.cancel(running.id) is True
    for job_id in (waiting.id, running.id):
        job = await app.get_job(job_id)
        assert job is not None and job.state is JobState.CANCELLED
        assert job.cancelled_at is not None


async def test_cancel_of_finished_or_missing_job_changes_nothing(
    app: Shigoto, greet, force
) -> None:
    done = await greet.enqueue({})
    await force(done, JobState.COMPLETED)
    before = await app.get_job(done.id)

    assert await app.cancel(done.id) is False
    assert await app.cancel(999_999) is False
    assert await app.get_job(done.id) == before


async def test_retry_allows_one_more_run_and_keeps_errors(app: Shigoto, greet, force) -> None:
    job = await greet.enqueue({}, max_attempts=2)
    errors = '[{"attempt": 1, "error": "boom"}, {"attempt": 2, "error": "boom"}]'
    await force(job, JobState.DISCARDED, attempt=2, errors=errors)

    assert await app.retry(job.id) is True

    retried = await app.get_job(job.id)
    assert retried is not None
    assert retried.state is JobState.AVAILABLE
    assert retried.max_attempts == 3  # attempt 2 of 2 was used: one more run allowed
    assert retried.discarded_at is None and retried.cancelled_at is None
    assert [e["attempt"] for e in retried.errors] == [1, 2]
    assert retried.scheduled_at >= job.scheduled_at


async def test_retry_of_cancelled_and_scheduled_jobs(app: Shigoto, greet) -> None:
    cancelled = await greet.enqueue({})
    await app.cancel(cancelled.id)
    scheduled = await greet.enqueue({}, scheduled_in=3600)

    assert await app.retry(cancelled.id) is True
    assert await app.retry(scheduled.id) is True
    for job_id in (cancelled.id, scheduled.id):
        job = await app.get_job(job_id)
        assert job is not None and job.state is JobState.AVAILABLE
        assert job.scheduled_at <= datetime.now(UTC)


async def test_retry_refuses_available_executing_and_missing_jobs(
    app: Shigoto, greet, force
) -> None:
    available = await greet.enqueue({})
    running = await greet.enqueue({})
    await force(running, JobState.EXECUTING)

    assert await app.retry(available.id) is False
    assert await app.retry(running.id) is False
    assert await app.retry(999_999) is False
    job = await app.get_job(running.id)
    assert job is not None and job.state is JobState.EXECUTING


async def test_cancel_by_and_retry_by_return_counts(app: Shigoto, greet, force) -> None:
    jobs = await app.insert_all(greet.new({"n": i}) for i in range(4))
    other = await greet.enqueue({}, queue="other")
    running = await greet.enqueue({})
    await force(running, JobState.EXECUTING)
    tagged = await greet.enqueue({}, tags=["vip"], queue="other")

    # Default states leave executing jobs alone.
    assert await app.cancel_by(queue="greetings") == 4
    assert await app.cancel_by(queue="greetings") == 0
    assert await app.cancel_by(tags=["vip"]) == 1
    assert (await app.get_job(other.id)).state is JobState.AVAILABLE  # type: ignore[union-attr]
    assert (await app.get_job(running.id)).state is JobState.EXECUTING  # type: ignore[union-attr]
    assert await app.cancel_by(worker="greet", states=["executing"]) == 1

    assert await app.retry_by(queue="greetings") == 5
    assert await app.retry_by(tags=["vip"], states=["cancelled"]) == 1
    states = {j.id: j.state for j in (await app.list_jobs()).jobs}
    assert all(states[j.id] is JobState.AVAILABLE for j in [*jobs, running, tagged])


async def test_delete_refuses_executing_jobs(app: Shigoto, greet, force) -> None:
    idle = await greet.enqueue({})
    running = await greet.enqueue({})
    await force(running, JobState.EXECUTING)

    assert await app.delete(idle.id) is True
    assert await app.delete(idle.id) is False
    assert await app.delete(running.id) is False
    assert await app.get_job(idle.id) is None
    assert await app.get_job(running.id) is not None


async def test_delete_finished_by_age_and_queue(app: Shigoto, greet, force) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    old_done = await greet.enqueue({})
    await force(old_done, JobState.COMPLETED, completed_at=old)
    old_discarded = await greet.enqueue({}, queue="other")
    await force(old_discarded, JobState.DISCARDED, discarded_at=old)
    fresh_done = await greet.enqueue({})
    await force(fresh_done, JobState.COMPLETED)
    pending = await greet.enqueue({})

    assert await app.delete_finished(older_than=timedelta(days=1), queue="other") == 1
    assert await app.delete_finished(older_than=86_400) == 1
    assert await app.get_job(fresh_done.id) is not None
    assert await app.delete_finished() == 1
    remaining = [j.id for j in (await app.list_jobs()).jobs]
    assert remaining == [pending.id]


async def test_status_counts_by_queue_and_state(app: Shigoto, greet, force) -> None:
    assert (await app.status()).queues == {}
    await app.insert_all(greet.new({}) for _ in range(3))
    await greet.enqueue({}, scheduled_in=600)
    done = await greet.enqueue({}, queue="other")
    await force(done, JobState.COMPLETED)
    await force(
        await greet.enqueue({}),
        JobState.AVAILABLE,
        scheduled_at=datetime.now(UTC) - timedelta(minutes=5),
    )

    status = await app.status()

    greetings = status.queues["greetings"]
    assert greetings.counts == {JobState.AVAILABLE: 4, JobState.SCHEDULED: 1}
    assert greetings.total == 5
    assert greetings.oldest_available_age is not None
    assert 299 <= greetings.oldest_available_age < 600
    assert status.queues["other"].counts == {JobState.COMPLETED: 1}
    assert status.queues["other"].oldest_available_age is None
    assert status.count("available") == 4
    assert status.count(JobState.COMPLETED, queue="greetings") == 0


async def test_cancel_by_tags_over_a_hundred_thousand_jobs_in_short_batches(
    app: Shigoto, db, schema: str
) -> None:
    tagged = [JobSpec.build("bulk", {"n": n}, tags=["import-42"]) for n in range(100_000)]
    await app.insert_all(tagged[:50_000])
    await app.insert_all(tagged[50_000:])
    await app.insert_all([JobSpec.build("bulk", {}, tags=["other"]) for _ in range(100)])

    # While it runs, single inserts go through: no statement holds the table for long.
    slowest = 0.0
    done = asyncio.Event()

    async def keep_inserting() -> None:
        nonlocal slowest
        while not done.is_set():
            began = time.monotonic()
            await app.insert(JobSpec.build("probe", {}))
            slowest = max(slowest, time.monotonic() - began)

    prober = asyncio.create_task(keep_inserting())
    count = await app.cancel_by(tags=["import-42"])
    done.set()
    await prober
    assert count == 100_000
    cur = await db.execute(
        sql.SQL("SELECT state, count(*) FROM {} WHERE worker = 'bulk' GROUP BY state").format(
            sql.Identifier(schema, "jobs")
        )
    )
    assert sorted(await cur.fetchall()) == [("available", 100), ("cancelled", 100_000)]
    assert slowest < 1.0, slowest


async def test_delete_by_and_retry_by_take_a_time_range(app: Shigoto, db, schema: str) -> None:
    old = await app.insert_all([JobSpec.build("w", {}) for _ in range(3)])
    await db.execute(
        sql.SQL("UPDATE {} SET inserted_at = now() - interval '2 days' WHERE id = ANY(%s)").format(
            sql.Identifier(schema, "jobs")
        ),
        [[job.id for job in old]],
    )
    new = await app.insert_all([JobSpec.build("w", {}) for _ in range(2)])
    day_ago = datetime.now(UTC) - timedelta(days=1)
    assert await app.cancel_by(worker="w", until=day_ago) == 3
    assert await app.retry_by(worker="w", since=day_ago) == 0  # the new ones are not finished
    assert await app.retry_by(worker="w", until=day_ago) == 3
    assert await app.cancel_by(worker="w") == 5
    assert await app.delete_by(worker="w", since=day_ago) == 2
    assert {j.id for j in (await app.list_jobs(worker="w")).jobs} == {j.id for j in old}
    assert [await app.get_job(j.id) for j in new] == [None, None]
    with pytest.raises(InvalidJobError, match="not allowed"):
        await app.delete_by(worker="w", states=["executing"])
