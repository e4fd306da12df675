"""The workers the chaos harness tortures (`shigoto worker bench.chaos_app:app`).

Configured from SHIGOTO_* variables. Every run writes `start` and then `ok`, `error` or
`interrupted` to `<schema>.ledger` (each in its own transaction), so the harness can
prove afterwards what ran, where, how often and whether runs overlapped.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg import sql

from shigoto import Shigoto, Snooze, current_job

app = Shigoto()

LEDGER = """
CREATE TABLE IF NOT EXISTS {} (
    job_id bigint NOT NULL,
    node text NOT NULL,
    pid integer NOT NULL,
    attempt integer NOT NULL,
    event text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""

WORKERS = {  # name -> share of the job mix
    "chaos.fast": 0.50,
    "chaos.flaky": 0.15,
    "chaos.slow": 0.10,
    "chaos.snooze": 0.10,
    "chaos.cpu": 0.10,
    "chaos.timeout": 0.05,
}
QUEUES = {"chaos.slow": "slow", "chaos.cpu": "cpu"}


async def _record(event: str) -> None:
    job = current_job()
    table = sql.Identifier(app.config.schema, "ledger")
    async with app.connection() as conn:
        await conn.execute(
            sql.SQL(
                "INSERT INTO {} (job_id, node, pid, attempt, event) VALUES (%s, %s, %s, %s, %s)"
            ).format(table),
            [job.id, job.attempted_by or "?", os.getpid(), job.attempt, event],
        )


async def _ledgered(body: Callable[[], Awaitable[Any]]) -> Any:
    """Run `body` between a `start` and an outcome entry in the ledger."""
    await _record("start")
    try:
        result = await body()
    except asyncio.CancelledError:
        try:  # best effort: the database may be the reason we are being stopped
            async with asyncio.timeout(1):
                await _record("interrupted")
        except Exception:
            pass
        raise
    except Exception:
        await _record("error")
        raise
    await _record("ok")
    return result


@app.worker(name="chaos.fast")
async def fast() -> None:
    await _ledgered(lambda: asyncio.sleep(0))


@app.worker(name="chaos.slow", queue="slow")
async def slow(seconds: float) -> None:
    await _ledgered(lambda: asyncio.sleep(seconds))


@app.worker(name="chaos.flaky", max_attempts=5, backoff=lambda attempt, error: 0.2 * attempt)
async def flaky() -> None:
    job = current_job()

    async def body() -> None:
        if random.Random(f"{job.id}:{job.attempt}").random() < 0.3:
            raise RuntimeError(f"flaky failure on attempt {job.attempt}")

    await _ledgered(body)


@app.worker(name="chaos.snooze")
async def snooze() -> object:
    job = current_job()
    if job.scheduled_at == job.inserted_at:
        return Snooze(0.5)  # once: the second time round scheduled_at has moved
    await _ledgered(lambda: asyncio.sleep(0))
    return None


@app.worker(name="chaos.timeout", timeout=0.3, max_attempts=4, backoff=lambda a, e: 0.2)
async def timeout() -> None:
    job = current_job()
    await _ledgered(lambda: asyncio.sleep(1.0 if job.attempt == 1 else 0))


def _record_sync(event: str) -> None:
    job = current_job()
    table = sql.Identifier(app.config.schema, "ledger")
    with app.sync.connection() as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (job_id, node, pid, attempt, event) VALUES (%s, %s, %s, %s, %s)"
            ).format(table),
            [job.id, job.attempted_by or "?", os.getpid(), job.attempt, event],
        )


@app.worker(name="chaos.cpu", queue="cpu")
def cpu() -> int:  # a plain function: runs in the node's thread pool
    _record_sync("start")
    try:
        total = sum(i * i for i in range(60_000))
    except Exception:
        _record_sync("error")
        raise
    _record_sync("ok")
    return total % 1000


def job_mix(count: int, rng: random.Random) -> list[tuple[str, dict[str, Any], str]]:
    """`count` jobs as (worker, args, queue), drawn from the mix."""
    names = list(WORKERS)
    weights = [WORKERS[n] for n in names]
    jobs = []
    for name in rng.choices(names, weights, k=count):
        args: dict[str, Any] = (
            {"seconds": round(rng.uniform(0.2, 1.0), 2)} if name == "chaos.slow" else {}
        )
        jobs.append((name, args, QUEUES.get(name, "default")))
    return jobs
