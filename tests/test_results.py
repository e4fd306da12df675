"""Results and waiting: a job's return value is stored; `wait_for` returns the finished job,
woken by a notification (never by polling), and only waited-for jobs cost a NOTIFY."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from shigoto import JobNotFoundError, JobSpec, JobState, Shigoto


async def test_wait_for_returns_the_finished_job_with_its_result(fast_app: Shigoto) -> None:
    @fast_app.worker(name="add")
    async def add(a: int, b: int) -> dict[str, int]:
        await asyncio.sleep(0.3)
        return {"sum": a + b}

    job = await fast_app.enqueue("add", {"a": 2, "b": 3})
    await fast_app.start()
    began = time.monotonic()
    done = await fast_app.wait_for(job.id, timeout=10)
    waited = time.monotonic() - began
    assert done.state is JobState.COMPLETED and done.result == {"sum": 5}
    # Woken by the notification: well before the 5-second safety look.
    assert waited < 2.0, waited


async def test_wait_for_sees_a_cancel_and_an_already_finished_job(fast_app: Shigoto) -> None:
    job = await fast_app.insert(JobSpec.build("nobody.runs.this"))
    waiter = asyncio.create_task(fast_app.wait_for(job.id, timeout=10))
    await asyncio.sleep(0.2)
    began = time.monotonic()
    assert await fast_app.cancel(job.id)
    cancelled = await waiter
    assert cancelled.state is JobState.CANCELLED and time.monotonic() - began < 2.0
    again = await fast_app.wait_for(job.id, timeout=1)  # finished already: at once
    assert again.state is JobState.CANCELLED


async def test_wait_for_times_out_and_knows_missing_jobs(app: Shigoto) -> None:
    job = await app.insert(JobSpec.build("nobody.runs.this"))
    with pytest.raises(TimeoutError):
        await app.wait_for(job.id, timeout=0.3)
    with pytest.raises(JobNotFoundError):
        await app.wait_for(10**12, timeout=1)


async def test_jobs_nobody_waits_for_send_no_notification(
    fast_app: Shigoto, dsn: str, schema: str
) -> None:
    @fast_app.worker(name="noop")
    async def noop() -> None: ...

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{schema}.jobs_finished"')
        waited_for = await fast_app.enqueue("noop")
        others = [await fast_app.enqueue("noop") for _ in range(20)]
        waiter = asyncio.create_task(fast_app.wait_for(waited_for.id, timeout=10))
        await asyncio.sleep(0.2)  # the waiter has marked its job
        await fast_app.start()
        await waiter
        for job in others:
            await fast_app.wait_for(job.id, timeout=10)  # marks each, but after it finished
        payloads = [note.payload async for note in listener.notifies(timeout=0.5)]
    assert payloads == [str(waited_for.id)]
