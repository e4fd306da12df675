"""The sync facade (`app.sync`): the same calls for Django/Flask views and scripts."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from shigoto import ConfigurationError, JobSpec, JobState, Shigoto
from tests.conftest import wait_until


@pytest.fixture
def report(app: Shigoto):
    @app.worker(name="report", queue="reports")
    def report(month: str) -> None: ...

    return report


async def test_sync_calls_share_the_store(app: Shigoto, report, count_jobs) -> None:
    sync = app.sync
    one = sync.insert(report.new({"month": "01"}))
    many = sync.insert_all([report.new({"month": f"{m:02}"}) for m in range(2, 5)])
    by_name = sync.enqueue("report", {"month": "05"}, priority=3)

    assert await count_jobs() == 5
    assert await app.get_job(one.id) == sync.get_job(one.id) == one
    assert [j.args["month"] for j in many] == ["02", "03", "04"]
    assert by_name.priority == 3 and by_name.queue == "reports"
    assert [j.id for j in sync.list_jobs(queue="reports", limit=2).jobs] == [
        by_name.id,
        many[-1].id,
    ]
    assert sync.cancel(one.id) and sync.get_job(one.id).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert sync.retry(one.id)
    assert sync.cancel_by(queue="reports") == 5
    assert sync.retry_by(queue="reports", states=["cancelled"]) == 5
    assert sync.status().count("available", "reports") == 5
    assert sync.delete(one.id) and sync.get_job(one.id) is None


async def test_sync_insert_commits_and_rolls_back_with_the_callers_transaction(
    app: Shigoto, report, dsn: str, count_jobs
) -> None:
    with psycopg.connect(dsn) as conn:
        kept = app.sync.insert(report.new({"month": "01"}), conn=conn)
        conn.commit()
        with pytest.raises(RuntimeError), conn.transaction():
            lost = app.sync.insert(report.new({"month": "02"}), conn=conn)
            app.sync.insert_all([report.new({"month": "03"})] * 2, conn=conn)
            raise RuntimeError("the view failed")
    assert app.sync.get_job(kept.id) is not None
    assert app.sync.get_job(lost.id) is None
    assert await count_jobs() == 1


async def test_async_connection_is_refused_by_the_sync_facade(
    app: Shigoto, report, dsn: str, count_jobs
) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        with pytest.raises(ConfigurationError, match=r"conn: expected a psycopg\.Connection"):
            app.sync.insert(report.new({"month": "01"}), conn=conn)
    assert await count_jobs() == 0


async def test_the_sync_facade_waits_for_jobs_and_makes_batches(fast_app: Shigoto) -> None:
    @fast_app.worker(name="double")
    async def double(n: int) -> int:
        return 2 * n

    batch = await asyncio.to_thread(
        fast_app.sync.batch, [double.new({"n": n}) for n in range(3)], meta={"from": "a view"}
    )
    assert batch.total == 3
    await fast_app.start()
    done = [await asyncio.to_thread(fast_app.sync.wait_for, job.id, 10) for job in batch.jobs]
    assert [job.result for job in done] == [0, 2, 4]

    async def closed() -> object:
        found = await asyncio.to_thread(fast_app.sync.get_batch, batch.id)
        return found if found is not None and found.state == "finished" else None

    final = await wait_until(closed)
    assert final.completed == 3  # type: ignore[attr-defined]
    stuck = await fast_app.insert(JobSpec.build("nobody.runs.this"))
    with pytest.raises(TimeoutError):
        await asyncio.to_thread(fast_app.sync.wait_for, stuck.id, 0.3)
