"""The pgqueuer driver for `python -m bench compare` (see ../PROTOCOL.md).

Settings, from pgqueuer's docs (https://janbjorge.github.io/pgqueuer/, sources in docs/ of
github.com/janbjorge/pgqueuer; page titles in quotes):
- Client: pgqueuer's `AsyncpgDriver` (pgqueuer.db, pgqueuer 1.6) on one asyncpg connection
  per process (installed as `pgqueuer[asyncpg]`). "Benchmarks": the asyncpg driver does
  ~1.7x the throughput of the psycopg one. (pgqueuer's `PsycopgDriver` also waits for
  NOTIFYs with `notifies(timeout=1.0)` holding the connection's lock, so a worker's own
  queries can stall up to 1 s.) asyncpg is in autocommit unless a transaction is opened
  ("Drivers" > "Requirements"). The driver's own SQL (counts, seeding) uses the same
  connection; psycopg is used only to read the harness's key=value DSN, which asyncpg
  cannot parse (it takes URLs only).
- Worker: one direct connection, not a pool ("Performance Tuning" > "Use a dedicated
  connection for LISTEN": a direct asyncpg connection for the QueueManager). Producers:
  the checklist there suggests `AsyncpgPoolDriver` for producers, which serves many
  concurrent producers; the driver's producer is one coroutine issuing one call at a
  time, and an asyncpg pool runs a reset query at every release, so it uses one direct
  connection too.
- Event loop: uvloop, as `pgq run` does (pgqueuer/adapters/cli/cli.py `asyncio_run`:
  `uvloop.run` wherever uvloop imports; pgqueuer requires uvloop except on Windows).
- setup: `pgq install` (Queries.install), then `pgq autovac` (Queries.optimize_autovacuum),
  the first item of the checklist in "Performance Tuning" ("Database Setup" too).
  Durability stays `durable`, the default: `balanced`/`volatile` use UNLOGGED tables.
- `max_concurrent_tasks=concurrency` on `PgQueuer.run`: per worker, a hard cap on its
  picked jobs, enforced in the dequeue SQL ("Performance Tuning", "Concurrency Control").
  An entrypoint's `concurrency_limit` is fleet-wide, so it cannot mean "10 per worker".
- `batch_size=concurrency // 2` (5): "Performance Tuning" advises a larger batch for short
  jobs, but pgqueuer requires `max_concurrent_tasks >= 2 * batch_size`.
- `dequeue_timeout`, `heartbeat_timeout`, `log_aggregation_interval`: the defaults (30 s);
  LISTEN/NOTIFY wakes workers, the timeout is only the fallback poll.
- Producers pass lists to one `Queries.enqueue` call: one statement for the whole batch.

A job's arguments are its payload (bytes), as small JSON: b'{}' or b'{"k": 3}'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

# This file is itself named pgqueuer.py: drop its folder from the path, or
# `import pgqueuer` would import this script instead of the library.
_HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import asyncpg  # noqa: E402
from pgqueuer import Job, PgQueuer, Queries  # noqa: E402
from pgqueuer.db import AsyncpgDriver  # noqa: E402
from psycopg.conninfo import conninfo_to_dict  # noqa: E402

try:  # the event loop `pgq run` uses (pgqueuer/adapters/cli/cli.py, asyncio_run)
    from uvloop import run as run_loop
except ImportError:  # pgqueuer installs uvloop everywhere but Windows
    from asyncio import run as run_loop

ENTRYPOINT = "noop"
READY_TIMEOUT = 60.0  # seconds a worker may take to start listening
STOP_GRACE = 10.0  # seconds between SIGTERM and kill


def payload(k: int | None = None) -> bytes:
    return json.dumps({} if k is None else {"k": k}).encode()


def asyncpg_dsn(dsn: str) -> str:
    """The DSN as a URL: asyncpg parses only URLs, the harness passes key=value conninfo."""
    return "postgresql://?" + urlencode(conninfo_to_dict(dsn))


@asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(dsn))  # autocommit unless a transaction is opened
    try:
        yield conn
    finally:
        await conn.close()


def rate(jobs: int, seconds: float) -> dict[str, Any]:
    return {"jobs": jobs, "seconds": round(seconds, 4), "jobs_per_second": round(jobs / seconds)}


# -- commands ------------------------------------------------------------------------------


async def setup(dsn: str) -> dict[str, Any]:
    async with connect(dsn) as conn:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        await queries.optimize_autovacuum()
    return {}


async def bulk_insert(dsn: str, jobs: int) -> dict[str, Any]:
    async with connect(dsn) as conn:
        queries = Queries(AsyncpgDriver(conn))
        began = time.perf_counter()
        await queries.enqueue([ENTRYPOINT] * jobs, [payload()] * jobs, [0] * jobs)
        return rate(jobs, time.perf_counter() - began)


async def single_insert(dsn: str, jobs: int) -> dict[str, Any]:
    async with connect(dsn) as conn:
        queries = Queries(AsyncpgDriver(conn))
        await queries.enqueue(ENTRYPOINT, payload())  # warm-up, not timed
        began = time.perf_counter()
        for _ in range(jobs):
            await queries.enqueue(ENTRYPOINT, payload())  # autocommit: one transaction each
        return rate(jobs, time.perf_counter() - began)


class ReadyDriver(AsyncpgDriver):
    """AsyncpgDriver that signals once the worker's LISTEN is in place: it is then ready."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        super().__init__(connection)
        self.listening = asyncio.Event()

    async def add_listener(self, channel: str, callback: Callable[..., Any]) -> None:
        await super().add_listener(channel, callback)
        self.listening.set()


async def worker(dsn: str, concurrency: int, watch_parent: bool) -> None:
    async with connect(dsn) as conn:
        driver = ReadyDriver(conn)
        pgq = PgQueuer(driver)

        @pgq.entrypoint(ENTRYPOINT)
        async def noop(job: Job) -> None:
            started = time.time()
            args = json.loads(job.payload) if job.payload else {}
            if "k" in args:
                print(json.dumps({"k": args["k"], "t": started}), flush=True)

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, pgq.shutdown.set)
        if watch_parent:

            def stop_when_parent_dies() -> None:
                sys.stdin.read()  # the parent holds our stdin open: EOF means it is gone
                loop.call_soon_threadsafe(pgq.shutdown.set)

            threading.Thread(target=stop_when_parent_dies, daemon=True).start()
        run = asyncio.create_task(
            pgq.run(batch_size=max(1, concurrency // 2), max_concurrent_tasks=concurrency)
        )
        listening = asyncio.create_task(driver.listening.wait())
        await asyncio.wait({run, listening}, return_when=asyncio.FIRST_COMPLETED)
        if driver.listening.is_set():
            print(json.dumps({"ready": True}), flush=True)
        listening.cancel()
        await run  # returns after SIGTERM once in-flight jobs are finished and logged


# -- worker processes ------------------------------------------------------------------------


class Workers:
    """`count` worker processes of this script; their start lines are collected."""

    def __init__(self, dsn: str, count: int, concurrency: int) -> None:
        self.args = ["worker", "--dsn", dsn, "--concurrency", str(concurrency), "--watch-parent"]
        self.count = count
        self.processes: list[asyncio.subprocess.Process] = []
        self.lines: list[dict[str, Any]] = []
        self.readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for _ in range(self.count):
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    *self.args,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for process in self.processes:  # they start in parallel; wait for each in turn
            await asyncio.wait_for(self._until_ready(process), READY_TIMEOUT)
            self.readers.append(asyncio.create_task(self._read(process)))

    async def _until_ready(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            if json.loads(line).get("ready"):
                return
        raise RuntimeError("a worker exited before it was ready")

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            self.lines.append(json.loads(line))

    async def stop(self) -> None:
        """SIGTERM to all, then kill whichever is still running STOP_GRACE seconds later."""
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        if self.processes:
            await asyncio.wait(
                [asyncio.create_task(p.wait()) for p in self.processes], timeout=STOP_GRACE
            )
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await asyncio.gather(*self.readers, return_exceptions=True)


async def with_workers(
    dsn: str, nodes: int, concurrency: int, body: Callable[[Workers], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Run `body` with ready workers, and stop them whatever happens."""
    workers = Workers(dsn, nodes, concurrency)
    try:
        await workers.start()
        return await body(workers)
    finally:
        await workers.stop()


async def left_to_do(conn: asyncpg.Connection) -> int:
    # Finished jobs are deleted from `pgqueuer` (and logged), so what remains is the work.
    return int(
        await conn.fetchval("SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')")
    )


async def drain(dsn: str, jobs: int, nodes: int, concurrency: int) -> dict[str, Any]:
    async def body(_: Workers) -> dict[str, Any]:
        async with connect(dsn) as conn:
            queries = Queries(AsyncpgDriver(conn))
            began = time.perf_counter()
            await queries.enqueue([ENTRYPOINT] * jobs, [payload()] * jobs, [0] * jobs)
            inserted = time.perf_counter()
            while await left_to_do(conn):
                await asyncio.sleep(0.02)
            seconds = time.perf_counter() - inserted
        return {
            "jobs": jobs,
            "nodes": nodes,
            "concurrency": concurrency,
            "seconds": round(seconds, 3),
            "jobs_per_second": round(jobs / seconds),
            "insert_seconds": round(inserted - began, 3),
        }

    return await with_workers(dsn, nodes, concurrency, body)


def percentiles(delays_ms: list[float]) -> dict[str, float | None]:
    if len(delays_ms) < 2:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    cuts = statistics.quantiles(delays_ms, n=100, method="inclusive")  # never above max
    return {
        "p50_ms": round(statistics.median(delays_ms), 2),
        "p95_ms": round(cuts[94], 2),
        "p99_ms": round(cuts[98], 2),
        "max_ms": round(max(delays_ms), 2),
    }


def delays(workers: Workers, inserted: dict[int, float]) -> list[float]:
    return [(line["t"] - inserted[line["k"]]) * 1000 for line in workers.lines if "k" in line]


async def wait_for_starts(workers: Workers, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(workers.lines) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def latency(dsn: str, jobs: int, gap: float, concurrency: int) -> dict[str, Any]:
    inserted: dict[int, float] = {}

    async def body(workers: Workers) -> dict[str, Any]:
        async with connect(dsn) as conn:
            queries = Queries(AsyncpgDriver(conn))
            for k in range(jobs):
                inserted[k] = time.time()
                await queries.enqueue(ENTRYPOINT, payload(k))
                await asyncio.sleep(gap)
        await wait_for_starts(workers, jobs, 30)
        started = len(workers.lines)
        return {"jobs": jobs, "started": started, **percentiles(delays(workers, inserted))}

    return await with_workers(dsn, 1, concurrency, body)


async def steady(
    dsn: str, rate_per_second: int, seconds: float, nodes: int, concurrency: int
) -> dict[str, Any]:
    inserted: dict[int, float] = {}

    async def body(workers: Workers) -> dict[str, Any]:
        async with connect(dsn) as conn:
            queries = Queries(AsyncpgDriver(conn))
            k = 0
            began = time.monotonic()
            while (elapsed := time.monotonic() - began) < seconds:
                # Every 10 ms, insert what the schedule says is due: slow ticks don't lower
                # the rate, they make the next batch larger.
                keys = range(k, int(rate_per_second * elapsed))
                if keys:
                    now = time.time()
                    inserted.update((key, now) for key in keys)
                    await queries.enqueue(
                        [ENTRYPOINT] * len(keys), [payload(key) for key in keys], [0] * len(keys)
                    )
                    k = keys.stop
                await asyncio.sleep(0.01 - (time.monotonic() - began) % 0.01)
        backlog = k - len(workers.lines)
        await wait_for_starts(workers, k, 30)
        return {
            "rate": rate_per_second,
            "seconds": seconds,
            "inserted": k,
            "started": len(workers.lines),
            "backlog_at_end": backlog,
            **percentiles(delays(workers, inserted)),
        }

    return await with_workers(dsn, nodes, concurrency, body)


SEED_SQL = """
WITH logged AS (
    -- A finished job leaves pgqueuer_log rows 'queued', 'picked' and 'successful'.
    INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated)
    SELECT now() - ($1::int - i) * interval '1 ms' + step.after, $2::bigint + i,
           step.status::pgqueuer_status, 0, $3::text, true
    FROM generate_series(1, $1::int) AS i
    CROSS JOIN (VALUES ('queued', interval '-5 ms'), ('picked', interval '-1 ms'),
                       ('successful', interval '0')) AS step(status, after)
    RETURNING created, status, priority, entrypoint
)
-- What pgqueuer's periodic aggregation would have folded those rows into.
INSERT INTO pgqueuer_statistics (count, created, entrypoint, priority, status)
SELECT count(*), date_trunc('sec', created), entrypoint, priority, status
FROM logged GROUP BY entrypoint, priority, status, date_trunc('sec', created)
ON CONFLICT (priority, date_trunc('sec'::text, timezone('UTC'::text, created)), status,
    entrypoint)
DO UPDATE SET count = pgqueuer_statistics.count + EXCLUDED.count
"""


async def seed_finished(dsn: str, rows: int) -> dict[str, Any]:
    """pgqueuer deletes a finished job from `pgqueuer`; what grows is pgqueuer_log (three
    rows a job, marked aggregated) and pgqueuer_statistics (a row per second and status).
    The jobs are spread at 1,000 a second up to now; the id sequence moves past them."""
    began = time.perf_counter()
    async with connect(dsn) as conn:
        base = int(  # seeded ids follow every id already used
            await conn.fetchval(
                "SELECT greatest((SELECT coalesce(max(job_id), 0) FROM pgqueuer_log), "
                "(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pgqueuer_id_seq))"
            )
        )
        await conn.execute(SEED_SQL, rows, base, ENTRYPOINT)
        await conn.execute("SELECT setval('pgqueuer_id_seq', $1::bigint)", base + rows)
        await conn.execute("VACUUM ANALYZE pgqueuer_log, pgqueuer_statistics, pgqueuer")
    return {"rows": rows, "seconds": round(time.perf_counter() - began, 2), "log_rows": 3 * rows}


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)  # stdout is for JSON only
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--nodes", type=int, help="default: 1 for drain, 2 for steady")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--gap", type=float, default=0.02)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--watch-parent", action="store_true", help=argparse.SUPPRESS)
    o = parser.parse_args()
    commands: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
        "setup": lambda: setup(o.dsn),
        "bulk_insert": lambda: bulk_insert(o.dsn, o.jobs),
        "single_insert": lambda: single_insert(o.dsn, o.jobs),
        "worker": lambda: worker(o.dsn, o.concurrency, o.watch_parent),
        "drain": lambda: drain(o.dsn, o.jobs, o.nodes or 1, o.concurrency),
        "latency": lambda: latency(o.dsn, o.jobs, o.gap, o.concurrency),
        "steady": lambda: steady(o.dsn, o.rate, o.seconds, o.nodes or 2, o.concurrency),
        "seed_finished": lambda: seed_finished(o.dsn, o.rows),
    }
    if o.command not in commands:
        parser.error(f"unknown command {o.command!r}; one of {', '.join(commands)}")
    if o.command == "worker":
        run_loop(commands[o.command]())
        return
    result = run_loop(cancel_on_sigterm(commands[o.command]()))
    print(json.dumps(result), flush=True)


async def cancel_on_sigterm(command: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """A SIGTERM cancels the command, so `finally` blocks stop its worker processes."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await command


if __name__ == "__main__":
    main()
