"""When things go wrong: hooks that hear of every failed run, a result refused on the node,
and an insert that fails fast, saying whether it may have run, when the database cannot
serve it.

    python examples/robustness.py          # SHIGOTO_DSN, or the embedded PostgreSQL

What holds, and why: docs/guarantees.md.
"""

from __future__ import annotations

import asyncio
import logging

from shigoto import DatabaseUnavailable, Job, JobSpec, JobState, PoolExhausted, Shigoto, current_job

# Results over 1,000 bytes (as JSON) are refused on the node (the default is 1 MiB).
app = Shigoto(schema="example_robustness", max_result_bytes=1_000)
stopped: list[str] = []


@app.on_job_stopped
def record(job: Job, will_retry: bool) -> None:
    """Called once each run's outcome is written: every run that ends its job, and every
    failed run (`will_retry` True when it will run again)."""
    why = job.errors[-1]["message"] if job.state is not JobState.COMPLETED else ""
    stopped.append(f"{job.worker} {job.state} will_retry={will_retry} {why}".rstrip())


@app.worker(name="reports.build", max_attempts=2, backoff=lambda attempt, error: 0)
async def build_report(rows: int) -> str:
    return "x" * rows  # 5,000 characters: over max_result_bytes, so never stored


@app.worker(name="crm.sync", backoff=lambda attempt, error: 0)
async def sync_crm(account: int) -> str:
    if current_job().attempt == 1:
        raise ConnectionError("the CRM did not answer")  # the first run fails
    return f"synced account {account}"


async def enqueue(client: Shigoto, spec: JobSpec) -> Job | None:
    """Insert as a web request would: the job, or None and a word on why."""
    try:
        return await client.insert(spec)
    except PoolExhausted as error:  # the server answers; every pooled connection is in use
        print("  busy, nothing sent (answer 503):", error)
    except DatabaseUnavailable as error:
        if error.may_have_run:  # the connection broke with the insert on its way
            print("  may have committed; retry only if twice is harmless:", error)
        else:  # no connection in time: nothing was sent, a retry is safe
            print("  unavailable, nothing sent (answer 503):", error)
    return None


async def main() -> None:
    await app.migrate()
    async with app:  # a node
        jobs = [
            await enqueue(app, build_report.new({"rows": 5_000})),
            await enqueue(app, sync_crm.new({"account": 7})),
        ]
        for job in jobs:
            assert job is not None
            done = await app.wait_for(job.id, timeout=30)
            print(f"job {done.id} ({done.worker}) ended {done.state} after {done.attempt} run(s)")
        for _ in range(100):  # hooks run beside the node: give the last ones a moment
            if len(stopped) == 4:
                break
            await asyncio.sleep(0.05)
    print("on_job_stopped heard:", *stopped, sep="\n  ")
    assert len(stopped) == 4, stopped

    print("an insert while every connection is held (a job or request holding one):")
    # connect_timeout: how long a call waits for a connection (5 s by default).
    busy = Shigoto(schema="example_robustness", pool_max_size=1, connect_timeout=1)
    async with busy.connection():  # the pool's one connection, held
        assert await enqueue(busy, sync_crm.new({"account": 8})) is None
    await busy.close()

    print("an insert while the server cannot be reached:")
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # its warning per attempt
    down = Shigoto(dsn="postgresql://127.0.0.1:1/nowhere", connect_timeout=1)
    assert await enqueue(down, sync_crm.new({"account": 9})) is None
    await down.close()

    async with app.connection() as conn:  # leave nothing behind: jobs, schedules, tables
        await conn.execute("DROP SCHEMA example_robustness CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
