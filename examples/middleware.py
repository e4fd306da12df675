"""Middleware: code around every job (the app's) or a worker's jobs (its own).

    python examples/middleware.py      # SHIGOTO_DSN, or the embedded PostgreSQL

Three layers: the app's timing middleware (outermost), a feature flag that short-circuits
with a `Snooze`, and a worker's cache that answers without running the job at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from shigoto import Job, Shigoto, Snooze

app = Shigoto(schema="example_middleware")
timings: dict[int, float] = {}
PAUSED_FEATURES = {"reports"}
CACHE = {"GET /rates": {"eur": 1.08}}


@app.middleware
async def timing(job: Job, call_next: Callable[[], Awaitable[object]]) -> object:
    """Outermost: sees every job, and how long the rest of its chain took."""
    started = time.perf_counter()
    try:
        return await call_next()
    finally:
        timings[job.id] = time.perf_counter() - started


@app.middleware
async def feature_flags(job: Job, call_next: Callable[[], Awaitable[object]]) -> object:
    """A paused feature's jobs wait: a Snooze reschedules them, no attempt used."""
    if job.meta.get("feature") in PAUSED_FEATURES:
        raise Snooze(3600)
    return await call_next()


def cached(job: Job, call_next: Callable[[], Any]) -> object:
    """A sync middleware: it may answer for the job (the job completes with its answer)."""
    hit = CACHE.get(job.args["request"])
    return hit if hit is not None else call_next()


@app.worker(name="api.fetch", middleware=[cached])
async def fetch(request: str) -> dict[str, object]:
    await asyncio.sleep(0.01)  # the slow call the cache saves
    return {"fetched": request}


@app.worker(name="reports.build")
async def build_report(name: str) -> str:
    return f"report {name}"


async def main() -> None:
    await app.migrate()
    jobs = [
        await fetch.enqueue({"request": "GET /rates"}),
        await fetch.enqueue({"request": "GET /users"}),
        await build_report.enqueue({"name": "q3"}, meta={"feature": "reports"}),
    ]
    print(await app.drain_queue())  # runs them here, through the same chain a node uses
    for job in jobs:
        done = await app.get_job(job.id)
        assert done is not None
        took = f"{timings[job.id] * 1000:.1f} ms"
        print(f"{done.worker:14} {done.state:10} {took:>8}  result={done.result}")
    async with app.connection() as conn:  # leave nothing behind
        await conn.execute("DROP SCHEMA example_middleware CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
