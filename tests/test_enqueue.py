"""Inserting jobs: one, many, scheduled, by name, and inside the caller's transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from shigoto import (
    ConfigurationError,
    InvalidJobError,
    Job,
    JobState,
    Shigoto,
    UnknownWorkerError,
    Worker,
)


@pytest.fixture
def send_email(app: Shigoto):
    @app.worker(queue="emails", max_attempts=5, priority=2, tags=["email"])
    async def send_email(to: str, subject: str = "", n: int = 0) -> None: ...

    return send_email


async def test_insert_returns_the_stored_row(app: Shigoto, send_email) -> None:
    job = await app.insert(send_email.new({"to": "a@b.c", "subject": "Hi"}))

    assert job == await app.get_job(job.id)
    assert job.state is JobState.AVAILABLE
    assert job.worker == f"{__name__}.send_email.<locals>.send_email"
    assert job.args == {"to": "a@b.c", "subject": "Hi"}
    assert (job.queue, job.max_attempts, job.priority, job.tags) == ("emails", 5, 2, ["email"])
    assert job.attempt == 0 and job.errors == [] and job.result is None
    assert job.inserted_at.tzinfo is UTC and job.scheduled_at <= datetime.now(UTC)


async def test_options_override_worker_defaults(app: Shigoto, send_email) -> None:
    job = await send_email.enqueue(
        {"to": "x"},
        queue="urgent",
        priority=-5,
        max_attempts=1,
        tags=["vip", "vip", "b"],
        meta={"trace": "abc"},
        partition_key="tenant-1",
        origin="signup-view",
    )
    stored = await app.get_job(job.id)
    assert stored == job  # what insert returns is what is stored
    assert stored is not None
    assert (stored.queue, stored.priority, stored.max_attempts) == ("urgent", -5, 1)
    assert stored.tags == ["vip", "b"]
    assert stored.meta == {"trace": "abc"}
    assert (stored.partition_key, stored.origin) == ("tenant-1", "signup-view")


async def test_scheduled_jobs_wait_in_scheduled_state(app: Shigoto, send_email) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    by_time = await send_email.enqueue({"to": "x"}, scheduled_at=at)
    by_delay = await send_email.enqueue({"to": "x"}, scheduled_in=timedelta(minutes=5))
    in_the_past = await send_email.enqueue({"to": "x"}, scheduled_at=at - timedelta(days=1))

    assert by_time.state is JobState.SCHEDULED and by_time.scheduled_at == at
    assert by_delay.state is JobState.SCHEDULED
    assert (
        timedelta(minutes=4) < by_delay.scheduled_at - by_delay.inserted_at <= timedelta(minutes=5)
    )
    assert in_the_past.state is JobState.AVAILABLE
    for job in (by_time, by_delay, in_the_past):  # the state it returns is the stored one
        assert await app.get_job(job.id) == job


async def test_scheduled_at_in_another_zone_is_stored_as_the_same_instant(
    app: Shigoto, send_email
) -> None:
    tokyo = datetime(2030, 1, 1, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    job = await send_email.enqueue({"to": "x"}, scheduled_at=tokyo)
    assert job.scheduled_at == datetime(2030, 1, 1, 0, 0, tzinfo=UTC)


async def test_insert_all_keeps_order_and_values(app: Shigoto, send_email, count_jobs) -> None:
    specs = [
        send_email.new({"to": f"user{i}@x", "n": i}, priority=i % 3, tags=["t"] * (i % 2))
        for i in range(500)
    ]
    specs.append(send_email.new({"to": "later"}, scheduled_in=600))

    jobs = await app.insert_all(specs)

    assert [j.args for j in jobs] == [s.args for s in specs]
    assert [j.id for j in jobs] == sorted(j.id for j in jobs)
    assert jobs[-1].state is JobState.SCHEDULED and jobs[0].state is JobState.AVAILABLE
    assert await count_jobs() == 501
    for job in (jobs[0], jobs[1], jobs[-1]):
        assert await app.get_job(job.id) == job  # what insert_all returns is what is stored


async def test_insert_all_of_nothing_writes_nothing(app: Shigoto, count_jobs) -> None:
    assert await app.insert_all([]) == []
    assert await count_jobs() == 0


async def test_insert_all_twenty_thousand_in_one_call(app: Shigoto, send_email) -> None:
    jobs = await app.insert_all(send_email.new({"to": f"{i}"}) for i in range(20_000))
    assert len(jobs) == 20_000
    status = await app.status()
    assert status.count(JobState.AVAILABLE, queue="emails") == 20_000


async def test_class_worker_enqueue(app: Shigoto) -> None:
    @app.worker
    class ApiSync(Worker):
        queue = "api"
        max_attempts = 7

        async def perform(self, job: Job) -> object:
            return None

    job = await ApiSync.enqueue({"endpoint": "/users"})
    assert (job.worker, job.queue, job.max_attempts) == (
        f"{__name__}.test_class_worker_enqueue.<locals>.ApiSync",
        "api",
        7,
    )


async def test_enqueue_by_name(app: Shigoto, send_email) -> None:
    job = await app.enqueue(send_email.name, {"to": "x"}, priority=9)
    assert (job.worker, job.queue, job.priority) == (send_email.name, "emails", 9)


async def test_enqueue_by_unknown_name_writes_nothing(app: Shigoto, count_jobs) -> None:
    with pytest.raises(UnknownWorkerError, match=r"worker: .*'nope.missing'"):
        await app.enqueue("nope.missing", {})
    with pytest.raises(UnknownWorkerError):
        app.new_job("nope.missing")
    assert await count_jobs() == 0


async def test_insert_with_conn_commits_with_the_callers_transaction(
    app: Shigoto, send_email, dsn: str
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            job = await app.insert(send_email.new({"to": "x"}), conn=conn)
            # Not visible to anyone else until the caller commits.
            assert await app.get_job(job.id) is None
        assert await app.get_job(job.id) == job


async def test_insert_with_conn_rolls_back_with_the_callers_transaction(
    app: Shigoto, send_email, dsn: str, count_jobs
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                job = await app.insert(send_email.new({"to": "x"}), conn=conn)
                jobs = await app.insert_all([send_email.new({"to": "y"})] * 3, conn=conn)
                raise RuntimeError("the view failed")
    assert await app.get_job(job.id) is None
    assert all([await app.get_job(j.id) is None for j in jobs])
    assert await count_jobs() == 0


async def test_sync_connection_is_refused_by_the_async_api(
    app: Shigoto, send_email, dsn: str, count_jobs
) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(ConfigurationError, match=r"app\.sync"):
        await app.insert(send_email.new({"to": "x"}), conn=conn)
    assert await count_jobs() == 0


async def test_insert_notifies_once_per_statement_and_queue(
    app: Shigoto, send_email, dsn: str, schema: str
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{schema}.jobs_inserted"')
        await app.insert_all(
            [send_email.new({"to": "x"}) for _ in range(50)]
            + [send_email.new({"to": "x"}, queue="other")]
            + [send_email.new({"to": "x"}, queue="later", scheduled_in=60)]
        )
        # Notifications arrive in commit order: a later sentinel insert marks the end.
        await send_email.enqueue({"to": "x"}, queue="sentinel")
        received = []
        async for notification in listener.notifies(timeout=10):
            received.append(notification.payload)
            if notification.payload == "sentinel":
                break
    assert sorted(received) == ["emails", "other", "sentinel"]


async def test_hostile_strings_are_stored_as_data(app: Shigoto, count_jobs) -> None:
    @app.worker(queue="emails")
    async def anything(**args: object) -> None: ...

    hostile = "x'); DROP TABLE jobs; --"
    job = await anything.enqueue(
        {hostile: hostile}, queue=hostile, tags=[hostile, "%s", "%(queue)s"], meta={"q": hostile}
    )
    stored = await app.get_job(job.id)
    assert stored is not None
    assert stored.queue == hostile and stored.args == {hostile: hostile}
    assert stored.tags == [hostile, "%s", "%(queue)s"]
    page = await app.list_jobs(queue=hostile, tags=["%s"])
    assert [j.id for j in page.jobs] == [job.id]
    assert await app.cancel_by(queue=hostile) == 1
    assert await count_jobs() == 1


async def test_app_connection_shares_the_callers_transaction(
    app: Shigoto, send_email, count_jobs
) -> None:
    with pytest.raises(RuntimeError):
        async with app.connection() as conn, conn.transaction():
            await send_email.enqueue({"to": "x"}, conn=conn)
            raise RuntimeError("rolled back")
    async with app.connection() as conn, conn.transaction():
        kept = await send_email.enqueue({"to": "y"}, conn=conn)
    assert await count_jobs() == 1
    assert (await app.get_job(kept.id)) == kept


async def test_insert_many_shares_the_template_and_keeps_order(app: Shigoto, send_email) -> None:
    template = send_email.new({"subject": "Hi"}, priority=7, meta={"campaign": "nov"})
    ids = await app.insert_many(template, [{"to": f"user{i}@x"} for i in range(300)])

    assert len(ids) == 300 and ids == sorted(ids)
    jobs = [await app.get_job(job_id) for job_id in (ids[0], ids[150], ids[-1])]
    assert [j.args for j in jobs if j] == [
        {"subject": "Hi", "to": "user0@x"},  # the template's args are each job's defaults
        {"subject": "Hi", "to": "user150@x"},
        {"subject": "Hi", "to": "user299@x"},
    ]
    for job in jobs:
        assert job is not None and job.state is JobState.AVAILABLE
        assert (job.queue, job.priority, job.max_attempts, job.tags, job.meta) == (
            "emails",
            7,
            5,
            ["email"],
            {"campaign": "nov"},
        )


async def test_insert_many_of_scheduled_unique_and_nothing(
    app: Shigoto, send_email, count_jobs
) -> None:
    later = await send_email.enqueue_many([{"to": "a"}, {"to": "b"}], scheduled_in=600)
    assert [(await app.get_job(i)).state for i in later] == [JobState.SCHEDULED] * 2  # type: ignore[union-attr]
    # A unique template takes insert_all's way: one job per key, the existing one's id again.
    unique = send_email.new(unique=True)
    first = await app.insert_many(unique, [{"to": "x"}, {"to": "y"}])
    again = await app.insert_many(unique, [{"to": "y"}, {"to": "z"}])
    assert again[0] == first[1] and again[1] not in first
    assert await app.insert_many(unique, []) == []
    assert await count_jobs() == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([{"to": "a"}, ["not", "a", "dict"]], r"args\[1\]: must be a JSON object"),
        ([{"to": {1, 2}}], r"args\[0\]\[.to.\]"),
        ({"to": "a"}, "expected a list of JSON objects"),
    ],
)
async def test_insert_many_refuses_bad_args_and_writes_nothing(
    app: Shigoto, send_email, count_jobs, args: object, message: str
) -> None:
    with pytest.raises(InvalidJobError, match=message):
        await app.insert_many(send_email.new(), args)  # type: ignore[arg-type]
    assert await count_jobs() == 0


async def test_insert_many_from_sync_code(app: Shigoto, send_email) -> None:
    ids = app.sync.insert_many(send_email.new(priority=1), [{"to": "a"}, {"to": "b"}])
    assert [(await app.get_job(i)).args for i in ids] == [{"to": "a"}, {"to": "b"}]  # type: ignore[union-attr]
