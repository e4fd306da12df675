"""The workers the chaos harness tortures (`shigoto worker bench.chaos_app:app`).

Configured from SHIGOTO_* variables. Every run writes `start` and then `ok`, `error` or
`interrupted` to `<schema>.ledger` (each in its own transaction), so the harness can
prove afterwards what ran, where, how often and whether runs overlapped.

Besides the mix, a few hostile jobs (`hostile_jobs`) come at set moments of the run: one
that returns a result no database can store, one that blocks its node's event loop for
longer than `rescue_after`, and bursts of jobs that hold pooled connections for longer
than a node may go without a heartbeat. `EXPECTED` says how each kind of job must end.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg import sql

from shigoto import JobSpec, Shigoto, Snooze, current_job

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

# How each kind of job must end: the final states it may reach. A job that ends in any
# other state breaches the run, and so does a poison job whose failures do not say that
# its result could not be stored.
EXPECTED: dict[str, tuple[str, ...]] = {
    "chaos.fast": ("completed",),
    "chaos.flaky": ("completed", "discarded"),  # 30% of runs fail: five in a row may
    "chaos.slow": ("completed",),
    "chaos.snooze": ("completed",),
    "chaos.cpu": ("completed",),
    "chaos.timeout": ("completed",),  # its first run times out, the next ones do not
    "chaos.poison": ("discarded",),  # every run fails: its result cannot be stored
    "chaos.block": ("completed",),
    "chaos.hold": ("completed",),
}
POISON_KINDS = ("unencodable", "huge_int", "nul_string", "oversize")
POISON_ATTEMPTS = 2
BLOCK_SECONDS = 6.0  # longer than the chaos nodes' rescue_after (4 s)
HOLD_SECONDS = 4.0  # longer than a node may go without a heartbeat (rescue_after - 1 s)


ATTEMPTS = 5  # enough that the run's faults alone (a rescue, a fence, a cut) never exhaust them


def _soon(attempt: int, error: BaseException) -> float:
    # The faults are under test, not the backoff: the default one (attempt⁴ s plus up to
    # 30 s) would stretch the wait for the last retries by minutes.
    return 0.5 * attempt


def build(name: str, args: dict[str, Any] | None = None, **options: Any) -> JobSpec:
    """A job for the worker `name`, with that worker's defaults (queue, attempts)."""
    return app.workers.get(name).new(args or {}, **options)


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


@app.worker(name="chaos.fast", max_attempts=ATTEMPTS, backoff=_soon)
async def fast() -> None:
    await _ledgered(lambda: asyncio.sleep(0))


@app.worker(name="chaos.slow", queue="slow", max_attempts=ATTEMPTS, backoff=_soon)
async def slow(seconds: float) -> None:
    await _ledgered(lambda: asyncio.sleep(seconds))


@app.worker(name="chaos.flaky", max_attempts=5, backoff=lambda attempt, error: 0.2 * attempt)
async def flaky() -> None:
    job = current_job()

    async def body() -> None:
        if random.Random(f"{job.id}:{job.attempt}").random() < 0.3:
            raise RuntimeError(f"flaky failure on attempt {job.attempt}")

    await _ledgered(body)


@app.worker(name="chaos.snooze", max_attempts=ATTEMPTS, backoff=_soon)
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


def _poison(kind: str) -> object:
    """A result the acker cannot write, of the kind asked for."""
    if kind == "unencodable":
        return {"value": object()}
    if kind == "huge_int":
        return 10**5000  # JSON has no limit, PostgreSQL's numeric and Python's str() do
    if kind == "nul_string":
        return {"text": "a\x00b"}  # JSON has it, jsonb refuses it
    limit = getattr(app.config, "max_result_bytes", 1_000_000)
    return "x" * (limit + 1)


@app.worker(name="chaos.poison", max_attempts=POISON_ATTEMPTS, backoff=lambda a, e: 0.2)
async def poison(kind: str) -> object:
    # `returned`, not `ok`: the run did its work, but must end as a failure.
    await _record("start")
    value = _poison(kind)
    await _record("returned")
    return value


@app.worker(name="chaos.block", max_attempts=ATTEMPTS, backoff=_soon)
async def block() -> None:
    async def body() -> None:
        time.sleep(BLOCK_SECONDS)  # the mistake on purpose: the node's loop stops

    await _ledgered(body)


@app.worker(name="chaos.hold", queue="hold", max_attempts=ATTEMPTS, backoff=_soon)
async def hold() -> None:
    """Holds a pooled connection (its ledger entries go through it too)."""
    job = current_job()
    table = sql.Identifier(app.config.schema, "ledger")
    entry = sql.SQL(
        "INSERT INTO {} (job_id, node, pid, attempt, event) VALUES (%s, %s, %s, %s, %s)"
    ).format(table)
    who = [job.id, job.attempted_by or "?", os.getpid(), job.attempt]
    async with app.connection() as conn:
        await conn.execute(entry, [*who, "start"])
        await asyncio.sleep(HOLD_SECONDS)
        await conn.execute(entry, [*who, "ok"])


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


@app.worker(name="chaos.cpu", queue="cpu", max_attempts=ATTEMPTS, backoff=_soon)
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


def hostile_jobs(seconds: float, rng: random.Random) -> list[tuple[str, dict[str, Any], float]]:
    """The hostile jobs of a run `seconds` long, as (worker, args, scheduled_in): three of
    each poison kind and four loop blockers at random moments, and three bursts of 16
    connection holders (twice a node's `pool_max_size`)."""
    jobs: list[tuple[str, dict[str, Any], float]] = []
    for kind in POISON_KINDS * 3:
        jobs.append(("chaos.poison", {"kind": kind}, round(rng.uniform(0.05, 0.8) * seconds, 2)))
    for _ in range(4):
        jobs.append(("chaos.block", {}, round(rng.uniform(0.1, 0.8) * seconds, 2)))
    for share in (0.25, 0.5, 0.7):
        jobs += [("chaos.hold", {}, round(share * seconds, 2))] * 16
    return jobs
