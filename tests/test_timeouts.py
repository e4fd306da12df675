"""Timeouts: each job is stopped at its own deadline; a plain function's deadline counts
from when its thread starts it."""

from __future__ import annotations

import asyncio
import time

from shigoto import JobState, Shigoto
from tests.conftest import FAST, final


async def test_each_job_is_stopped_at_its_own_timeout(fast_app: Shigoto) -> None:
    """Jobs with different timeouts side by side: each is stopped at its own deadline,
    whatever order they started in; a plain function past its deadline fails with the
    same entry once it returns (a thread cannot be interrupted); a TimeoutError a job
    raises itself is its own failure, not a timeout."""

    @fast_app.worker(name="patient", timeout=30, max_attempts=1)
    async def patient() -> str:
        await asyncio.sleep(0.8)
        return "done"

    @fast_app.worker(name="hasty", timeout=0.3, max_attempts=1)
    async def hasty() -> None:
        await asyncio.sleep(30)

    @fast_app.worker(name="blocking", timeout=0.3, max_attempts=1)
    def blocking() -> None:
        time.sleep(3)

    @fast_app.worker(name="own_timeout", timeout=30, max_attempts=1)
    async def own_timeout() -> None:
        raise TimeoutError("upstream took too long")

    jobs = [await w.enqueue() for w in (patient, hasty, blocking, own_timeout)]
    await fast_app.start()
    finished = [await final(fast_app, job.id) for job in jobs]
    done, stopped, given_up, failed = finished

    assert (done.state, done.result) == (JobState.COMPLETED, "done")
    for job in (stopped, given_up):
        assert job.state is JobState.DISCARDED
        assert (job.errors[-1]["error"], job.errors[-1]["message"]) == (
            "TimeoutError",
            "timed out after 0.3s",
        )
    ran_for = (stopped.discarded_at - stopped.attempted_at).total_seconds()  # type: ignore[operator]
    assert 0.25 < ran_for < 2  # at its deadline: not the patient job's
    ran_for = (given_up.discarded_at - given_up.attempted_at).total_seconds()  # type: ignore[operator]
    assert ran_for >= 2.9  # when its thread returned: it held its job until then
    assert (failed.errors[-1]["error"], failed.errors[-1]["message"]) == (
        "TimeoutError",
        "upstream took too long",
    )


async def test_a_sync_job_waiting_for_a_thread_does_not_time_out(dsn: str, schema: str) -> None:
    """A plain function's timeout counts from when a thread starts it: a job queued behind
    a busy thread (one thread, two slots) runs in full, not failed before it started."""
    app = Shigoto(dsn=dsn, schema=schema, sync_threads=1, **FAST)  # type: ignore[arg-type]
    ran: list[str] = []

    @app.worker(name="long", timeout=30)
    def long() -> None:
        time.sleep(1.0)
        ran.append("long")

    @app.worker(name="short", timeout=0.5, max_attempts=1)
    def short() -> None:
        time.sleep(0.1)
        ran.append("short")

    await app.migrate()
    first = await long.enqueue()
    second = await short.enqueue()
    try:
        await app.start(queues={"default": 2})
        done = [await final(app, job.id) for job in (first, second)]
    finally:
        await app.stop(timeout=0)
        await app.close()
    assert [(job.state, job.errors) for job in done] == [(JobState.COMPLETED, [])] * 2
    assert ran == ["long", "short"]
