"""Running a job: plain functions in threads with their context, progress stored while
the job runs, a cancel that interrupts it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from shigoto import Job, JobState, Shigoto, Worker, current_job, report_progress
from tests.conftest import final, wait_until


async def test_sync_workers_run_in_threads_with_their_context(fast_app: Shigoto) -> None:
    loop_thread = threading.get_ident()

    @fast_app.worker(name="blocking")
    def blocking(n: int) -> dict[str, Any]:
        time.sleep(0.05)  # would stall every other job if it ran on the event loop
        report_progress(40)
        return {"n": n, "id": current_job().id, "thread": threading.get_ident()}

    @fast_app.worker(name="klass")
    class Klass(Worker):
        def perform(self, job: Job) -> object:
            return {"args": job.args, "thread": threading.get_ident()}

    jobs = [await blocking.enqueue({"n": i}) for i in range(4)] + [await Klass.enqueue({"x": 1})]
    await fast_app.start(queues={"default": 4})
    results = [(await final(fast_app, job.id)).result for job in jobs]
    assert [r["n"] for r in results[:4]] == [0, 1, 2, 3]
    assert [r["id"] for r in results[:4]] == [j.id for j in jobs[:4]]
    assert results[4]["args"] == {"x": 1}
    assert loop_thread not in {r["thread"] for r in results}


async def test_report_progress_is_stored_while_running(fast_app: Shigoto) -> None:
    proceed = asyncio.Event()

    @fast_app.worker(name="progress")
    async def progress() -> None:
        report_progress(30)
        await proceed.wait()

    job = await progress.enqueue()
    await fast_app.start()

    async def stored() -> float | None:
        current = await fast_app.get_job(job.id)
        return current.progress if current and current.progress == 30 else None

    await wait_until(stored)
    proceed.set()
    assert (await final(fast_app, job.id)).progress == 100


async def test_cancelling_a_running_job_interrupts_it(fast_app: Shigoto) -> None:
    started = asyncio.Event()
    interrupted = asyncio.Event()

    @fast_app.worker(name="long")
    async def long() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    job = await long.enqueue()
    await fast_app.start()
    await started.wait()
    assert await fast_app.cancel(job.id)
    await asyncio.wait_for(interrupted.wait(), 5)
    await fast_app.stop()
    final = await fast_app.get_job(job.id)
    assert final is not None and final.state is JobState.CANCELLED
