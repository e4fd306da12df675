"""Benchmark driver for oban (oban-py, PyPI `oban`, Python 3.12+); protocol in ../PROTOCOL.md.

Throughput settings, and where they come from (oban-py 0.7.0, github.com/oban-bg/oban-py):

- One queue, "default", with limit = --concurrency. Limits are per node ("Defining Queues",
  docs/defining_queues.md: "Queue limits are local (per-node)").
- Embedded mode: `Oban(pool=..., queues={"default": N})` used as an async context manager
  (README "Quick Start"; docs/defining_queues.md "Programmatic Configuration").
- Pool from `Oban.create_pool(dsn)` with its defaults (min 1, max 10 connections): "Ready for
  Production" > "Sizing the Connection Pool" (docs/production.md) says workers only borrow a
  connection briefly and that the default 10 is comfortable.
- Producer `debounce_interval` and stager `interval` stay at their defaults (5 ms, 1 s;
  oban/_producer.py, oban/oban.py). Inserts wake the producers at once through the pg_notify in
  oban/queries/insert_job.sql (README: "Insert triggers ensure that jobs are dispatched on all
  connected nodes as soon as they are inserted").
- Bulk insert: `Oban.enqueue_many` ("more efficient than calling enqueue() multiple times", its
  docstring in oban/oban.py; test/benchmark_test.py passes it 10,000 jobs in one call). In the
  open-source package it sends one INSERT per job, all on one connection in one transaction;
  real bulk inserts and bulk acking are Oban Pro features (README "Oban Pro" > "Optimizations").
- Metrics off and the telemetry logger not attached (the defaults; docs/production.md).
- Run as `oban start` runs (the CLI is "the recommended approach", docs/production.md "Ready
  for Production"); what it does for speed (oban/cli.py, `start` and its imports), every
  process of this driver (workers and producers) does too:
  - the event loop is uvloop: the CLI runs through `uvloop.run` (falling back to `asyncio.run`
    only when uvloop is missing; oban 0.7.0 requires uvloop);
  - psycopg encodes and decodes JSON with orjson (`set_json_dumps(orjson.dumps)`,
    `set_json_loads(orjson.loads)`, process-wide), so job args, meta and errors (jsonb) go
    through orjson; oban's notifier and scheduler use orjson anyway.
  Nothing else in `start` is about speed: its pool comes from the same `Config.create_pool`
  as `Oban.create_pool` (same defaults), its Oban from the same constructor. Its one other
  difference, `telemetry_logger.attach()` (a JSON log line per job at INFO), is a cost, not
  a speed-up, and stays off (this driver logs at WARNING).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

# This file is named oban.py too: drop its folder from sys.path so `import oban` gets the package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]

import orjson  # noqa: E402
from oban import Job, Oban, Worker, telemetry, worker  # noqa: E402
from oban.schema import install  # noqa: E402
from psycopg.types.json import set_json_dumps, set_json_loads  # noqa: E402
from psycopg_pool import AsyncConnectionPool  # noqa: E402

try:  # the event loop `oban start` runs on (oban/cli.py)
    from uvloop import run as run_loop
except ImportError:
    from asyncio import run as run_loop

QUEUE = "default"
INSERT_CHANNEL = "public.oban_insert"  # what insert_job.sql notifies, with the default prefix
UNFINISHED_STATES = ("available", "scheduled", "suspended", "executing", "retryable")
READY_TIMEOUT = 60.0  # seconds for a worker node to come up
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and kill, per the protocol
DRAIN_WAIT = 30.0  # seconds latency/steady wait for the last jobs to start

COUNT_UNFINISHED_SQL = "SELECT count(*) FROM oban_jobs WHERE state = ANY(%s::oban_job_state[])"

# One statement; the timestamps use oban's own format (UTC, timestamp without time zone).
SEED_FINISHED_SQL = """
INSERT INTO oban_jobs (state, queue, worker, attempt, attempted_by,
                       inserted_at, scheduled_at, attempted_at, completed_at)
SELECT 'completed', %(queue)s, %(worker)s, 1, ARRAY['seed'], now_utc, now_utc, now_utc, now_utc
FROM generate_series(1, %(rows)s), (SELECT timezone('UTC', now()) AS now_utc) AS t
"""


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()  # the parent reads start lines as they happen


@worker(queue=QUEUE)
class NoopWorker:
    async def process(self, job: Job) -> None:
        if "k" in job.args:
            emit({"k": job.args["k"], "t": time.time()})


def noop_job(args: dict[str, Any] | None = None) -> Job:
    # @worker adds new() at runtime; the cast tells type checkers (oban.Worker is its Protocol).
    return cast(type[Worker], NoopWorker).new(args)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def latency_summary(inserted: dict[int, float], starts: dict[int, float]) -> dict[str, Any]:
    latencies = [(starts[k] - t) * 1000 for k, t in inserted.items() if k in starts]
    if not latencies:
        raise RuntimeError("no job started")
    summary: dict[str, Any] = {f"p{p}_ms": round(percentile(latencies, p), 2) for p in (50, 95, 99)}
    summary["max_ms"] = round(max(latencies), 2)
    if missing := len(inserted) - len(latencies):
        summary["not_started"] = missing
    return summary


@asynccontextmanager
async def open_pool(dsn: str) -> AsyncIterator[AsyncConnectionPool]:
    pool = await Oban.create_pool(dsn)  # oban's helper: opens and waits for the pool
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def client(dsn: str) -> AsyncIterator[tuple[Oban, AsyncConnectionPool]]:
    """An Oban in client mode (no queues): it only enqueues."""
    async with open_pool(dsn) as pool, Oban(pool=pool) as oban:
        yield oban, pool


async def count_unfinished(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute(COUNT_UNFINISHED_SQL, (list(UNFINISHED_STATES),))
        row = await cursor.fetchone()
    return row[0] if row else 0


class Nodes:
    """`worker` subprocesses of this script, and the job start times they report (k -> t)."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.readers: list[asyncio.Task[None]] = []
        self.starts: dict[int, float] = {}

    async def start(self, dsn: str, count: int, concurrency: int) -> None:
        readies = [asyncio.Event() for _ in range(count)]
        for ready in readies:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                os.path.abspath(__file__),
                "worker",
                "--dsn",
                dsn,
                "--concurrency",
                str(concurrency),
                stdout=asyncio.subprocess.PIPE,
            )
            self.procs.append(proc)
            self.readers.append(asyncio.create_task(self._read(proc, ready)))
        for ready, reader in zip(readies, self.readers, strict=True):
            waiter = asyncio.ensure_future(ready.wait())
            await asyncio.wait(
                {waiter, reader}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            if not ready.is_set():
                raise RuntimeError("a worker node exited or timed out before it was ready")

    async def _read(self, proc: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                print(f"worker: {raw.decode(errors='replace').rstrip()}", file=sys.stderr)
                continue
            if message.get("ready"):
                ready.set()
            elif "k" in message:
                self.starts.setdefault(message["k"], message["t"])  # a retry's start is not news

    def check_alive(self) -> None:
        if any(reader.done() for reader in self.readers):  # stdout closed: the node is gone
            raise RuntimeError("a worker node exited early")

    async def wait_started(self, keys: Iterable[int], timeout: float) -> None:
        pending, deadline = set(keys), time.monotonic() + timeout
        while (pending := pending - self.starts.keys()) and time.monotonic() < deadline:
            self.check_alive()
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await asyncio.gather(*(self._stop_one(proc) for proc in self.procs))
        for reader in self.readers:
            reader.cancel()

    @staticmethod
    async def _stop_one(proc: asyncio.subprocess.Process) -> None:
        with suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@asynccontextmanager
async def running_nodes(dsn: str, count: int, concurrency: int) -> AsyncIterator[Nodes]:
    nodes = Nodes()
    try:
        await nodes.start(dsn, count, concurrency)
        yield nodes
    finally:
        # Shielded so a cancelled driver (SIGTERM, Ctrl-C) still reaps its workers.
        await asyncio.shield(nodes.stop())


async def wait_until_triggered(pool: AsyncConnectionPool) -> None:
    """Oban.start() subscribes to insert notifications without waiting for LISTEN to be in
    place, so ping the insert channel until the producer fetches: from then on an insert wakes
    this node at once."""
    woke = asyncio.Event()
    telemetry.attach("bench-ready", ["oban.producer.get.start"], lambda _name, _meta: woke.set())
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not woke.is_set():
            if time.monotonic() > deadline:
                raise RuntimeError("the queue never reacted to an insert notification")
            async with pool.connection() as conn:
                await conn.execute(
                    "SELECT pg_notify(%s, %s)", (INSERT_CHANNEL, json.dumps({"queue": QUEUE}))
                )
            with suppress(TimeoutError):
                await asyncio.wait_for(woke.wait(), 0.05)
    finally:
        telemetry.detach("bench-ready")


async def watch_parent(stop: asyncio.Event) -> None:
    """Stop if the process that started this node dies, so no worker is left behind."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    stop.set()


async def cmd_worker(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with open_pool(args.dsn) as pool, Oban(pool=pool, queues={QUEUE: args.concurrency}):
        await wait_until_triggered(pool)
        emit({"ready": True})
        watchdog = asyncio.create_task(watch_parent(stop))
        await stop.wait()
        watchdog.cancel()


async def cmd_setup(args: argparse.Namespace) -> dict[str, Any]:
    async with open_pool(args.dsn) as pool:
        await install(pool)  # oban.schema.install: oban's own tables, types and indexes
    return {}


def rate_result(jobs: int, seconds: float) -> dict[str, Any]:
    return {"jobs": jobs, "seconds": round(seconds, 4), "jobs_per_second": round(jobs / seconds, 1)}


async def cmd_bulk_insert(args: argparse.Namespace) -> dict[str, Any]:
    async with client(args.dsn) as (oban, _pool):
        began = time.perf_counter()
        await oban.enqueue_many([noop_job() for _ in range(args.jobs)])
        return rate_result(args.jobs, time.perf_counter() - began)


async def cmd_single_insert(args: argparse.Namespace) -> dict[str, Any]:
    async with client(args.dsn) as (oban, _pool):
        began = time.perf_counter()
        for _ in range(args.jobs):
            await oban.enqueue(noop_job())  # a pool connection and a commit per job
        return rate_result(args.jobs, time.perf_counter() - began)


async def cmd_drain(args: argparse.Namespace) -> dict[str, Any]:
    async with (
        running_nodes(args.dsn, args.nodes, args.concurrency) as nodes,
        client(args.dsn) as (oban, pool),
    ):
        began = time.perf_counter()
        await oban.enqueue_many([noop_job() for _ in range(args.jobs)])
        inserted = time.perf_counter()
        while await count_unfinished(pool):
            nodes.check_alive()
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - inserted
    return {
        "jobs": args.jobs,
        "nodes": args.nodes,
        "concurrency": args.concurrency,
        "seconds": round(seconds, 4),
        "jobs_per_second": round(args.jobs / seconds, 1),
        "insert_seconds": round(inserted - began, 4),
    }


async def cmd_latency(args: argparse.Namespace) -> dict[str, Any]:
    inserted: dict[int, float] = {}
    async with (
        running_nodes(args.dsn, 1, args.concurrency) as nodes,
        client(args.dsn) as (oban, _pool),
    ):
        for k in range(args.jobs):
            job = noop_job({"k": k})
            inserted[k] = time.time()
            await oban.enqueue(job)
            await asyncio.sleep(args.gap)
        await nodes.wait_started(inserted, DRAIN_WAIT)
    return {"jobs": args.jobs, **latency_summary(inserted, nodes.starts)}


async def cmd_steady(args: argparse.Namespace) -> dict[str, Any]:
    tick = 0.01  # one batch every 10 ms
    inserted: dict[int, float] = {}
    async with (
        running_nodes(args.dsn, args.nodes, args.concurrency) as nodes,
        client(args.dsn) as (oban, _pool),
    ):
        began = time.monotonic()
        for i in range(1, round(args.seconds / tick) + 1):
            # Batch i brings the total up to rate * its due time, so a slow batch is made up for.
            if (delay := began + i * tick - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            keys = range(len(inserted), round(args.rate * i * tick))
            if keys:
                jobs = [noop_job({"k": k}) for k in keys]
                now = time.time()
                inserted.update((k, now) for k in keys)
                await oban.enqueue_many(jobs)
        producer_seconds, producer_end = time.monotonic() - began, time.time()
        await nodes.wait_started(inserted, DRAIN_WAIT)
    backlog = sum(1 for k in inserted if nodes.starts.get(k, math.inf) > producer_end)
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        **latency_summary(inserted, nodes.starts),
        "backlog_at_end": backlog,
        "jobs": len(inserted),
        "producer_seconds": round(producer_seconds, 3),
    }


async def cmd_seed_finished(args: argparse.Namespace) -> dict[str, Any]:
    async with open_pool(args.dsn) as pool:
        began = time.perf_counter()
        async with pool.connection() as conn:  # commits on exit
            await conn.execute(
                SEED_FINISHED_SQL, {"queue": QUEUE, "worker": noop_job().worker, "rows": args.rows}
            )
        return {"rows": args.rows, "seconds": round(time.perf_counter() - began, 4)}


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], Awaitable[Any]], dict[str, Any]]] = {
    # command: (function, {option: default}); the default's type is the option's type
    "setup": (cmd_setup, {}),
    "bulk_insert": (cmd_bulk_insert, {"jobs": 20000}),
    "single_insert": (cmd_single_insert, {"jobs": 2000}),
    "worker": (cmd_worker, {"concurrency": 10}),
    "drain": (cmd_drain, {"jobs": 20000, "nodes": 1, "concurrency": 10}),
    "latency": (cmd_latency, {"jobs": 200, "gap": 0.02, "concurrency": 10}),
    "steady": (cmd_steady, {"rate": 2000, "seconds": 20.0, "nodes": 2, "concurrency": 10}),
    "seed_finished": (cmd_seed_finished, {"rows": 1_000_000}),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_function, defaults) in COMMANDS.items():
        sub = commands.add_parser(name)
        sub.add_argument("--dsn", required=True)
        for option, default in defaults.items():
            sub.add_argument(f"--{option}", type=type(default), default=default)
    return parser.parse_args()


async def run(args: argparse.Namespace) -> None:
    if args.command != "worker":  # a terminated driver unwinds, and so stops its workers
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    result = await COMMANDS[args.command][0](args)
    if result is not None:
        emit(result)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # As `oban start` does before it starts its loop (oban/cli.py): psycopg's JSON by orjson.
    set_json_dumps(orjson.dumps)
    set_json_loads(orjson.loads)
    try:
        run_loop(run(parse_args()))
    except (asyncio.CancelledError, KeyboardInterrupt):
        sys.exit(128 + signal.SIGTERM)  # stopped from outside; workers were already reaped


if __name__ == "__main__":
    main()
