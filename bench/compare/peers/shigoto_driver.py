"""The shigoto driver for `python -m bench compare` (see ../PROTOCOL.md).

Settings: the defaults (LISTEN/NOTIFY wake-ups, claims sized to free slots, batched
outcome writes, prepared statements on), and `prefetch` where a step asks for it (W3's
third drain: docs/performance.md recommends it for many short jobs), and for W3's fourth
drain, `observed`: a handler on every event and a middleware on every job; one queue `default`
with the given concurrency; the `fast` extra installed (orjson, uvloop), which
docs/performance.md recommends, and every command run as `shigoto worker` runs a node: on
uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

import psycopg

from shigoto import JobSpec, Shigoto
from shigoto.cli import run_on_fastest_loop

WORKER = "bench.noop"


def make_app(dsn: str, concurrency: int = 10, prefetch: int = 0, observed: int = 0) -> Shigoto:
    app = Shigoto(dsn=dsn, queues={"default": concurrency}, prefetch=prefetch)
    if observed:
        # Every event heard (a cheap sync handler on "*") and a middleware on every job:
        # what the event bus and the pipeline cost a node that uses them.
        heard = [0]

        def count(event: object) -> None:
            heard[0] += 1

        app.bus.subscribe("*", count)

        @app.middleware
        async def passthrough(job: object, call_next: Any) -> object:
            return await call_next()

    @app.worker(name=WORKER)
    async def noop(k: int | None = None) -> None:
        if k is not None:
            print(json.dumps({"k": k, "t": time.time()}), flush=True)

    return app


def spec(k: int | None = None) -> JobSpec:
    return JobSpec.build(WORKER, {} if k is None else {"k": k})


# -- commands ------------------------------------------------------------------------------


async def setup(dsn: str) -> dict[str, Any]:
    app = make_app(dsn)
    await app.migrate()
    await app.close()
    return {}


async def bulk_insert(dsn: str, jobs: int) -> dict[str, Any]:
    app = make_app(dsn)
    async with app.connection():  # the pool is open before timing, as for the peers
        pass
    began = time.perf_counter()  # building the jobs counts, as it does for the peers
    # insert_many: the bulk API for jobs that differ only in their args (ids come back,
    # as they do from pgqueuer's); insert_all, which returns Jobs, is in docs/performance.md.
    await app.insert_many(spec(), [{} for _ in range(jobs)])
    seconds = time.perf_counter() - began
    await app.close()
    return {"jobs": jobs, "seconds": round(seconds, 4), "jobs_per_second": round(jobs / seconds)}


async def single_insert(dsn: str, jobs: int) -> dict[str, Any]:
    app = make_app(dsn)
    await app.insert(spec())  # the pool is open and warm before timing, as for the peers
    began = time.perf_counter()
    for _ in range(jobs):
        await app.insert(spec())
    seconds = time.perf_counter() - began
    await app.close()
    return {"jobs": jobs, "seconds": round(seconds, 4), "jobs_per_second": round(jobs / seconds)}


BARE_INSERT = "INSERT INTO shigoto.jobs (worker, args) VALUES (%s, %s::jsonb) RETURNING id"
CHUNK = 100


async def single_insert_vs_bare(dsn: str, jobs: int) -> dict[str, Any]:
    """W2's yardstick: `jobs` single inserts by each of shigoto's async API, bare async
    psycopg (the same event loop), shigoto's sync facade and bare sync psycopg, in this one
    process, taking turns in chunks of 100 (the order turning each time), into the same
    table. The bare inserts are what a user would write, `conn.execute` on an autocommit
    connection, prepared, on the very connection shigoto uses next (borrowed from its pool
    for the chunk): on this machine one connection runs the same inserts up to 9% faster
    than another (its server process's place on the two cores), and a run of W2 alone moves
    by 15% from one second to the next; the same connection and chunks this small take
    both out of the ratio."""
    app = make_app(dsn)

    async def shigoto_async() -> None:
        for _ in range(CHUNK):
            await app.insert(spec())

    async def psycopg_async() -> None:
        async with app.connection() as conn:
            for _ in range(CHUNK):
                cur = await conn.execute(BARE_INSERT, [WORKER, "{}"], prepare=True)
                await cur.fetchone()

    async def shigoto_sync() -> None:
        for _ in range(CHUNK):
            app.sync.insert(spec())

    async def psycopg_sync() -> None:
        with app.sync.connection() as conn:
            for _ in range(CHUNK):
                conn.execute(BARE_INSERT, [WORKER, "{}"], prepare=True).fetchone()

    variants = {
        "shigoto_async": shigoto_async,
        "psycopg_async": psycopg_async,
        "shigoto_sync": shigoto_sync,
        "psycopg_sync": psycopg_sync,
    }
    spent = dict.fromkeys(variants, 0.0)
    for chunk in variants.values():  # connections open, statements prepared, code warm
        await chunk()
    order = list(variants)
    for turn in range(jobs // CHUNK):
        first = turn % len(order)
        for name in order[first:] + order[:first]:
            began = time.perf_counter()
            await variants[name]()
            spent[name] += time.perf_counter() - began
    await app.close()
    app.sync.close()
    done = jobs // CHUNK * CHUNK
    return {
        "jobs": done,
        **{f"{name}_jobs_per_second": round(done / seconds) for name, seconds in spent.items()},
        "ratio_async": round(spent["psycopg_async"] / spent["shigoto_async"], 3),
        "ratio_sync": round(spent["psycopg_sync"] / spent["shigoto_sync"], 3),
    }


async def worker(dsn: str, concurrency: int, prefetch: int, observed: int) -> None:
    app = make_app(dsn, concurrency, prefetch, observed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await app.start()
    assert app.node is not None and app.node.notifier is not None
    await app.node.notifier.connected.wait()
    print(json.dumps({"ready": True}), flush=True)
    await stop.wait()
    await app.stop()
    await app.close()


# -- worker processes ------------------------------------------------------------------------


class Workers:
    """`count` worker processes of this script; their stdout lines are collected."""

    def __init__(
        self, dsn: str, count: int, concurrency: int, prefetch: int = 0, observed: int = 0
    ) -> None:
        command = [
            sys.executable,
            __file__,
            "worker",
            "--dsn",
            dsn,
            "--concurrency",
            str(concurrency),
            "--prefetch",
            str(prefetch),
            "--observed",
            str(observed),
        ]
        self.processes = [
            subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1)
            for _ in range(count)
        ]
        self.lines: list[dict[str, Any]] = []
        self._readers: list[asyncio.Task[None]] = []

    async def ready(self) -> None:
        for process in self.processes:
            while True:
                line = await asyncio.to_thread(process.stdout.readline)  # type: ignore[union-attr]
                if not line:
                    raise RuntimeError("a worker exited before it was ready")
                if json.loads(line).get("ready"):
                    break
            self._readers.append(asyncio.create_task(self._read(process)))

    async def _read(self, process: subprocess.Popen[str]) -> None:
        while line := await asyncio.to_thread(process.stdout.readline):  # type: ignore[union-attr]
            self.lines.append(json.loads(line))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _left_to_do(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether any job is unfinished: one probe per partial index (available, executing,
    scheduled or retryable), so that watching a big table costs nothing. (A count over the
    states scans the whole table: with a million finished rows, every 20 ms, the watcher
    would eat the machine it measures.)"""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM shigoto.jobs WHERE state = 'available') "
        "OR EXISTS (SELECT 1 FROM shigoto.jobs WHERE state = 'executing') "
        "OR EXISTS (SELECT 1 FROM shigoto.jobs WHERE state IN ('scheduled', 'retryable'))"
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def drain(
    dsn: str, jobs: int, nodes: int, concurrency: int, prefetch: int, observed: int = 0
) -> dict[str, Any]:
    workers = Workers(dsn, nodes, concurrency, prefetch, observed)
    try:
        await workers.ready()
        app = make_app(dsn)
        specs = [spec() for _ in range(jobs)]
        began = time.perf_counter()
        await app.insert_all(specs)
        inserted = time.perf_counter()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            while await _left_to_do(conn):
                await asyncio.sleep(0.02)
        seconds = time.perf_counter() - inserted
        await app.close()
    finally:
        workers.stop()
    return {
        "jobs": jobs,
        "nodes": nodes,
        "concurrency": concurrency,
        "prefetch": prefetch,
        "observed": observed,
        "seconds": round(seconds, 3),
        "jobs_per_second": round(jobs / seconds),
        "insert_seconds": round(inserted - began, 3),
    }


def _percentiles(delays_ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(delays_ms, n=100, method="inclusive")
    return {
        "p50_ms": round(statistics.median(delays_ms), 2),
        "p95_ms": round(cuts[94], 2),
        "p99_ms": round(cuts[98], 2),
        "max_ms": round(max(delays_ms), 2),
    }


async def latency(dsn: str, jobs: int, gap: float) -> dict[str, Any]:
    workers = Workers(dsn, 1, 10)
    try:
        await workers.ready()
        app = make_app(dsn)
        await app.insert(spec())  # warm the pool
        inserted: dict[int, float] = {}
        for k in range(jobs):
            inserted[k] = time.time()
            await app.insert(spec(k))
            await asyncio.sleep(gap)
        deadline = time.monotonic() + 30
        while len(workers.lines) < jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await app.close()
    finally:
        workers.stop()
    delays = [(line["t"] - inserted[line["k"]]) * 1000 for line in workers.lines]
    return {"jobs": jobs, **_percentiles(delays)}


async def steady(
    dsn: str, rate: int, seconds: float, nodes: int, concurrency: int
) -> dict[str, Any]:
    workers = Workers(dsn, nodes, concurrency)
    try:
        await workers.ready()
        app = make_app(dsn)
        inserted: dict[int, float] = {}
        k = 0
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < seconds:
            due = int(elapsed * rate)  # on schedule: a slow insert does not lower the rate
            if due > k:
                now = time.time()
                for i in range(k, due):
                    inserted[i] = now
                await app.insert_all([spec(i) for i in range(k, due)])
                k = due
            await asyncio.sleep(0.01)
        backlog = k - len(workers.lines)
        deadline = time.monotonic() + 30
        while len(workers.lines) < k and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await app.close()
    finally:
        workers.stop()
    delays = [(line["t"] - inserted[line["k"]]) * 1000 for line in workers.lines]
    return {
        "rate": rate,
        "seconds": seconds,
        "inserted": k,
        "backlog_at_end": backlog,
        **_percentiles(delays),
    }


async def seed_finished(dsn: str, rows: int) -> dict[str, Any]:
    began = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO shigoto.jobs (state, worker, attempt, attempted_at, completed_at, "
            "attempted_by) SELECT 'completed', %s, 1, now(), now(), 'seed' "
            "FROM generate_series(1, %s)",
            [WORKER, rows],
        )
        await conn.execute("VACUUM ANALYZE shigoto.jobs")
    return {"rows": rows, "seconds": round(time.perf_counter() - began, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--prefetch", type=int, default=0)
    parser.add_argument("--observed", type=int, default=0)
    parser.add_argument("--gap", type=float, default=0.02)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rows", type=int, default=1_000_000)
    o = parser.parse_args()
    commands = {
        "setup": lambda: setup(o.dsn),
        "bulk_insert": lambda: bulk_insert(o.dsn, o.jobs),
        "single_insert": lambda: single_insert(o.dsn, o.jobs),
        "single_insert_vs_bare": lambda: single_insert_vs_bare(o.dsn, o.jobs),
        "worker": lambda: worker(o.dsn, o.concurrency, o.prefetch, o.observed),
        "drain": lambda: drain(o.dsn, o.jobs, o.nodes, o.concurrency, o.prefetch, o.observed),
        "latency": lambda: latency(o.dsn, o.jobs, o.gap),
        "steady": lambda: steady(o.dsn, o.rate, o.seconds, o.nodes, o.concurrency),
        "seed_finished": lambda: seed_finished(o.dsn, o.rows),
    }
    # As `shigoto worker` runs: on uvloop when the `fast` extra is installed.
    result = run_on_fastest_loop(commands[o.command]())  # type: ignore[no-untyped-call]
    if o.command != "worker":
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
