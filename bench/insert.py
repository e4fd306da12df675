"""Insert throughput: one bulk `insert_all` of 20,000 jobs, then 2,000 single inserts.

python -m bench insert [--bulk 20000] [--single 2000] [--dsn ...]
"""

from __future__ import annotations

from typing import Any

from bench.common import fresh_app, stopwatch


async def run(dsn: str, bulk: int = 20_000, single: int = 2_000) -> dict[str, Any]:
    async with fresh_app(dsn) as app:

        @app.worker(name="bench.noop")
        async def noop(n: int) -> None: ...

        specs = [noop.new({"n": i}) for i in range(bulk)]
        with stopwatch() as bulk_time:
            await app.insert_all(specs)

        with stopwatch() as single_time:
            for i in range(single):
                await noop.enqueue({"n": i})  # autocommit: each in its own transaction

    return {
        "bulk_jobs": bulk,
        "bulk_seconds": round(bulk_time["seconds"], 3),
        "bulk_jobs_per_second": round(bulk / bulk_time["seconds"]),
        "single_jobs": single,
        "single_seconds": round(single_time["seconds"], 3),
        "single_jobs_per_second": round(single / single_time["seconds"]),
    }
