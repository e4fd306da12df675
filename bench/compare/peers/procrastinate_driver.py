"""Benchmark driver for procrastinate (PyPI ``procrastinate``), per bench/compare/PROTOCOL.md.

Imports only procrastinate, psycopg and the standard library.

Throughput settings (procrastinate docs, https://procrastinate.readthedocs.io):
- Async task (``async def``) run with ``concurrency=N`` sub-workers per worker process:
  how-to "Execute multiple jobs at the same time" and Discussions "Asynchronous
  operations & concurrency" (sync tasks would run in threads through sync_to_async).
- Pool ``max_size = concurrency + 1`` (``min_size`` equal, so it is warm before "ready"):
  Discussions "Mind the size of your PostgreSQL pool": the shorter the jobs, the more
  the pool needs as many connections as the concurrency, plus one.
- ``listen_notify=True`` (default) with the default ``fetch_job_polling_interval=5.0``
  as fallback: ``App.run_worker_async`` reference ("When listen_notify is True, the polling
  interval acts as a fallback mechanism and can reasonably be set to a higher value").
- Bulk insert with ``Task.batch_defer_async``, one call: how-to "Batch defer multiple
  jobs" ("more efficient than deferring them one by one").
- ``delete_jobs="never"`` (the default, how-to "Delete finished jobs"): finished jobs
  stay in the table. Logging is left unconfigured, so no per-job INFO log lines.
- Schema: ``app.schema_manager.apply_schema_async()`` (same as ``procrastinate schema
  --apply``).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import math
import os
import signal
import sys
import time
from typing import Any

# This file is named like the library: drop its own folder from sys.path so that
# `import procrastinate` finds the installed package rather than this script.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import psycopg  # noqa: E402
import psycopg.conninfo  # noqa: E402
from procrastinate import App, PsycopgConnector  # noqa: E402
from procrastinate.tasks import Task  # noqa: E402

QUEUE = "default"  # procrastinate's default queue name
TASK_NAME = "noop"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
UNFINISHED_SQL = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def log(message: str) -> None:
    print(f"[procrastinate driver {os.getpid()}] {message}", file=sys.stderr, flush=True)


def build_app(dsn: str, pool_size: int, application_name: str) -> tuple[App, Task[Any, Any, Any]]:
    # application_name lets the worker find its own LISTEN connection in pg_stat_activity.
    # procrastinate warns that the App lives in __main__: harmless, the task is defined
    # right here and named explicitly, so deferrer and worker agree on "noop".
    conninfo = psycopg.conninfo.make_conninfo(dsn, application_name=application_name)
    app = App(connector=PsycopgConnector(conninfo=conninfo, min_size=pool_size, max_size=pool_size))

    async def noop(k: int | None = None) -> None:
        if k is not None:
            print(json.dumps({"k": k, "t": time.time()}), flush=True)

    task = app.task(name=TASK_NAME, queue=QUEUE)(noop)
    return app, task


def percentile_ms(sorted_seconds: list[float], p: float) -> float | None:
    if not sorted_seconds:
        return None
    index = max(0, math.ceil(p / 100 * len(sorted_seconds)) - 1)  # nearest rank
    return round(sorted_seconds[index] * 1000, 3)


def latency_stats(latencies: list[float]) -> dict[str, float | None]:
    ordered = sorted(latencies)
    return {
        "p50_ms": percentile_ms(ordered, 50),
        "p95_ms": percentile_ms(ordered, 95),
        "p99_ms": percentile_ms(ordered, 99),
        "max_ms": percentile_ms(ordered, 100),
    }


def die_with_parent() -> None:
    # Runs in the forked child: get SIGTERM if the driver dies (even by SIGKILL).
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class WorkerFleet:
    """`worker` subprocesses of this script; collects their job start lines."""

    def __init__(self, dsn: str, nodes: int, concurrency: int) -> None:
        self.dsn, self.nodes, self.concurrency = dsn, nodes, concurrency
        self.procs: list[asyncio.subprocess.Process] = []
        self.readers: list[asyncio.Task[None]] = []
        self.starts: dict[int, float] = {}  # job key -> time.time() when the job started

    async def __aenter__(self) -> WorkerFleet:
        try:
            readies: list[asyncio.Future[None]] = []
            for _ in range(self.nodes):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    os.path.abspath(__file__),
                    "worker",
                    "--dsn",
                    self.dsn,
                    "--concurrency",
                    str(self.concurrency),
                    stdout=asyncio.subprocess.PIPE,
                    preexec_fn=die_with_parent,
                )
                ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self.procs.append(proc)
                self.readers.append(asyncio.create_task(self._read(proc, ready)))
                readies.append(ready)
            await asyncio.wait_for(asyncio.gather(*readies), READY_TIMEOUT)
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _read(self, proc: asyncio.subprocess.Process, ready: asyncio.Future[None]) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                log(f"worker {proc.pid} printed non-JSON: {raw!r}")
                continue
            if message.get("ready") and not ready.done():
                ready.set_result(None)
            elif "k" in message:
                self.starts.setdefault(message["k"], message["t"])
        if not ready.done():
            ready.set_exception(RuntimeError(f"worker {proc.pid} exited before ready"))

    async def stop(self) -> None:
        """SIGTERM every worker, then SIGKILL whatever is still alive after STOP_TIMEOUT."""
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        waits = [asyncio.create_task(proc.wait()) for proc in self.procs]
        if waits:
            _, still_running = await asyncio.wait(waits, timeout=STOP_TIMEOUT)
            for proc in self.procs:
                if proc.returncode is None:
                    log(f"worker {proc.pid} ignored SIGTERM, killing it")
                    proc.kill()
            await asyncio.gather(*still_running)
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.procs, self.readers = [], []

    def assert_alive(self) -> None:
        # A dead worker would otherwise make drain wait forever.
        dead = [proc.pid for proc in self.procs if proc.returncode is not None]
        if dead:
            raise RuntimeError(f"worker(s) {dead} exited unexpectedly")

    async def wait_for_starts(self, keys: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.starts) < keys and time.monotonic() < deadline:
            self.assert_alive()
            await asyncio.sleep(0.02)


async def cmd_setup(args: argparse.Namespace) -> dict[str, Any]:
    app, _ = build_app(args.dsn, 1, "bench-procrastinate-setup")
    async with app.open_async():
        async with await psycopg.AsyncConnection.connect(args.dsn) as conn:
            row = await (await conn.execute("SELECT to_regclass('procrastinate_jobs')")).fetchone()
        if row is None or row[0] is None:  # apply_schema is not idempotent
            await app.schema_manager.apply_schema_async()
    return {}


async def cmd_bulk_insert(args: argparse.Namespace) -> dict[str, Any]:
    app, task = build_app(args.dsn, 1, "bench-procrastinate-producer")
    async with app.open_async():
        started = time.perf_counter()
        await task.batch_defer_async(*({} for _ in range(args.jobs)))
        seconds = time.perf_counter() - started
    return {"jobs": args.jobs, "seconds": seconds, "jobs_per_second": args.jobs / seconds}


async def cmd_single_insert(args: argparse.Namespace) -> dict[str, Any]:
    app, task = build_app(args.dsn, 1, "bench-procrastinate-producer")
    async with app.open_async():
        started = time.perf_counter()
        for _ in range(args.jobs):
            await task.defer_async()  # one call, one transaction per job
        seconds = time.perf_counter() - started
    return {"jobs": args.jobs, "seconds": seconds, "jobs_per_second": args.jobs / seconds}


async def wait_until_listening(dsn: str, application_name: str, worker: asyncio.Task[None]) -> None:
    """Ready = the worker's LISTEN connection is up (then a new job wakes it immediately)."""
    query = "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND query LIKE %s"
    deadline = time.monotonic() + READY_TIMEOUT
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while not (await (await conn.execute(query, (application_name, "LISTEN %"))).fetchone()):
            if worker.done():
                worker.result()  # re-raise the worker's startup error
                raise RuntimeError("worker stopped before it was ready")
            if time.monotonic() > deadline:
                raise TimeoutError("worker never started listening")
            await asyncio.sleep(0.02)


async def cmd_worker(args: argparse.Namespace) -> None:
    application_name = f"bench-procrastinate-worker-{os.getpid()}"
    app, _ = build_app(args.dsn, args.concurrency + 1, application_name)
    async with app.open_async():
        # install_signal_handlers (default): SIGTERM makes the worker stop gracefully.
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=[QUEUE],
                name=application_name,
                concurrency=args.concurrency,
                wait=True,
                listen_notify=True,
                delete_jobs="never",
            )
        )
        await wait_until_listening(args.dsn, application_name, worker)
        emit({"ready": True})
        await worker


async def cmd_drain(args: argparse.Namespace) -> dict[str, Any]:
    app, task = build_app(args.dsn, 1, "bench-procrastinate-producer")
    async with (
        WorkerFleet(args.dsn, args.nodes, args.concurrency) as fleet,
        app.open_async(),
        await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn,
    ):
        insert_started = time.perf_counter()
        await task.batch_defer_async(*({} for _ in range(args.jobs)))
        insert_done = time.perf_counter()
        while (await (await conn.execute(UNFINISHED_SQL)).fetchone())[0]:  # type: ignore[index]
            fleet.assert_alive()
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - insert_done
    return {
        "jobs": args.jobs,
        "nodes": args.nodes,
        "concurrency": args.concurrency,
        "seconds": seconds,
        "jobs_per_second": args.jobs / seconds,
        "insert_seconds": insert_done - insert_started,
    }


async def cmd_latency(args: argparse.Namespace) -> dict[str, Any]:
    app, task = build_app(args.dsn, 1, "bench-procrastinate-producer")
    inserted_at: dict[int, float] = {}
    async with WorkerFleet(args.dsn, 1, args.concurrency) as fleet, app.open_async():
        schedule_start = time.monotonic()
        for k in range(args.jobs):
            await asyncio.sleep(max(0.0, schedule_start + k * args.gap - time.monotonic()))
            inserted_at[k] = time.time()
            await task.defer_async(k=k)
        await fleet.wait_for_starts(args.jobs, timeout=30.0)
        starts = dict(fleet.starts)
    result: dict[str, Any] = {"jobs": args.jobs}
    result.update(latency_stats([starts[k] - t for k, t in inserted_at.items() if k in starts]))
    if len(starts) < args.jobs:
        result["missing"] = args.jobs - len(starts)
    return result


async def cmd_steady(args: argparse.Namespace) -> dict[str, Any]:
    app, task = build_app(args.dsn, 2, "bench-procrastinate-producer")
    total = int(args.rate * args.seconds)
    inserted_at: dict[int, float] = {}
    async with WorkerFleet(args.dsn, args.nodes, args.concurrency) as fleet, app.open_async():
        started = time.monotonic()
        while len(inserted_at) < total:
            # Batch on each 10 ms boundary, sized so the count follows rate * elapsed
            # (a slow insert makes the next batch bigger, not the rate lower).
            await asyncio.sleep(0.01 - (time.monotonic() - started) % 0.01)
            target = min(total, int(args.rate * (time.monotonic() - started)))
            keys = range(len(inserted_at), target)
            if keys:
                now = time.time()
                inserted_at.update((k, now) for k in keys)
                batch: list[dict[str, Any]] = [{"k": k} for k in keys]
                await task.batch_defer_async(*batch)
        producer_end = time.time()
        await fleet.wait_for_starts(total, timeout=30.0)
        starts = dict(fleet.starts)
    latencies = [starts[k] - t for k, t in inserted_at.items() if k in starts]
    stats = latency_stats(latencies)
    started_by_end = sum(1 for k in inserted_at if k in starts and starts[k] <= producer_end)
    return {
        "rate": args.rate,
        "seconds": args.seconds,
        "p50_ms": stats["p50_ms"],
        "p95_ms": stats["p95_ms"],
        "p99_ms": stats["p99_ms"],
        "backlog_at_end": total - started_by_end,
    }


async def cmd_seed_finished(args: argparse.Namespace) -> dict[str, Any]:
    # A job procrastinate finished: status 'succeeded', attempts 1, worker_id NULL once its
    # worker is gone. The insert triggers only fire for status 'todo', so none run here.
    # (Real runs also leave deferred/started/succeeded rows in procrastinate_events.)
    sql = (
        "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, args, status, attempts)"
        " SELECT %s, %s, 0, '{}'::jsonb, 'succeeded', 1 FROM generate_series(1, %s)"
    )
    async with await psycopg.AsyncConnection.connect(args.dsn) as conn:
        started = time.perf_counter()
        await conn.execute(sql, (QUEUE, TASK_NAME, args.rows))
        await conn.commit()
        seconds = time.perf_counter() - started
    return {"rows": args.rows, "seconds": seconds}


COMMANDS = {
    "setup": cmd_setup,
    "bulk_insert": cmd_bulk_insert,
    "single_insert": cmd_single_insert,
    "worker": cmd_worker,
    "drain": cmd_drain,
    "latency": cmd_latency,
    "steady": cmd_steady,
    "seed_finished": cmd_seed_finished,
}


def number(text: str) -> int | float:
    """Keep integral values integral so `--rate 2000` is echoed back as 2000."""
    value = float(text)
    return int(value) if value.is_integer() else value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--gap", type=float, default=0.02)
    parser.add_argument("--rate", type=number, default=2000)
    parser.add_argument("--seconds", type=number, default=20)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    default_jobs = {"bulk_insert": 20000, "single_insert": 2000, "drain": 20000, "latency": 200}
    if args.jobs is None:
        args.jobs = default_jobs.get(args.command, 0)
    if args.nodes is None:
        args.nodes = 2 if args.command == "steady" else 1
    return args


async def run(args: argparse.Namespace) -> dict[str, Any] | None:
    # SIGTERM cancels the command, so the `finally`/`async with` cleanup stops the workers.
    if args.command != "worker":
        current = asyncio.current_task()
        assert current is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
    return await COMMANDS[args.command](args)


def main() -> None:
    args = parse_args()
    try:
        result = asyncio.run(run(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        log(f"{args.command} interrupted; workers stopped")
        sys.exit(143)
    if result is not None:
        emit(result)


if __name__ == "__main__":
    main()
