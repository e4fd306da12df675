"""The runtime's figures: drain throughput (one node, then two node processes) and idle
wake-up latency (insert to start).

    python -m bench run [--jobs 20000] [--latency-jobs 200] [--dsn ...]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from psycopg import sql

from bench.common import fresh_app
from shigoto import JobSpec, Shigoto

ROOT = Path(__file__).parent.parent


def _node_process(dsn: str, schema: str, concurrency: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SHIGOTO_DSN": dsn,
        "SHIGOTO_SCHEMA": schema,
        "SHIGOTO_QUEUES": f"default={concurrency}",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bench.node"], env=env, cwd=ROOT, stderr=subprocess.DEVNULL
    )


async def _wait_nodes(app: Shigoto, count: int) -> None:
    """Until `count` nodes have registered (their listeners are up a moment later)."""
    while True:
        async with app.connection() as conn:
            nodes = sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(app.config.schema, "nodes")
            )
            cur = await conn.execute(nodes)
            row = await cur.fetchone()
        if row and row[0] >= count:
            await asyncio.sleep(0.5)
            return
        await asyncio.sleep(0.05)


async def _wait_completed(app: Shigoto) -> None:
    """Until no job is left unfinished; a cheap query (partial indexes), so that watching
    does not slow down what is watched."""
    unfinished = sql.SQL(
        "SELECT count(*) FROM {} "
        "WHERE state IN ('available', 'executing', 'scheduled', 'retryable')"
    ).format(sql.Identifier(app.config.schema, "jobs"))
    async with app.connection() as conn:
        while True:
            row = await (await conn.execute(unfinished)).fetchone()
            if row is not None and row[0] == 0:
                return
            await asyncio.sleep(0.02)


async def drain(dsn: str, jobs: int, nodes: int, concurrency: int = 10) -> dict[str, Any]:
    """Insert `jobs` no-op jobs with `nodes` node processes idle, time until all complete."""
    async with fresh_app(dsn) as app:
        processes = [_node_process(dsn, app.config.schema, concurrency) for _ in range(nodes)]
        try:
            await _wait_nodes(app, nodes)
            await app.insert_all([JobSpec.build("bench.noop", {"n": i}) for i in range(jobs)])
            began = time.perf_counter()
            await _wait_completed(app)
            seconds = time.perf_counter() - began
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait()
    return {
        "nodes": nodes,
        "concurrency": concurrency,
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "jobs_per_second": round(jobs / seconds),
    }


async def latency(dsn: str, jobs: int, gap: float = 0.02) -> dict[str, Any]:
    """An idle node; jobs inserted one by one `gap` apart; insert-to-start in ms."""
    async with fresh_app(dsn) as app:
        process = _node_process(dsn, app.config.schema, 10)
        try:
            await _wait_nodes(app, 1)
            inserted = []
            for i in range(jobs):
                inserted.append(await app.insert(JobSpec.build("bench.noop", {"n": i})))
                await asyncio.sleep(gap)
            await _wait_completed(app)
            delays = []
            for job in inserted:
                done = await app.get_job(job.id)
                assert done is not None
                delays.append((done.result - job.inserted_at.timestamp()) * 1000)
        finally:
            process.terminate()
            process.wait()
    cuts = statistics.quantiles(delays, n=100)
    return {
        "jobs": jobs,
        "gap_ms": gap * 1000,
        "p50_ms": round(statistics.median(delays), 2),
        "p95_ms": round(cuts[94], 2),
        "p99_ms": round(cuts[98], 2),
        "max_ms": round(max(delays), 2),
    }


async def run(dsn: str, jobs: int = 20_000, latency_jobs: int = 200) -> dict[str, Any]:
    return {
        "drain_one_node": await drain(dsn, jobs, nodes=1),
        "drain_two_nodes": await drain(dsn, jobs, nodes=2),
        "idle_latency": await latency(dsn, latency_jobs),
    }
