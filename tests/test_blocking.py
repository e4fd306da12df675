"""A job that misbehaves on its node: it blocks the event loop, or holds every pooled
connection. Its node keeps heartbeating, so nobody rescues the job while it runs, the node
never fences itself, and the watchdog names the job that held the loop.

Real node processes (`shigoto worker tests.nodeapp:app`), each run recorded in the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from shigoto import JobSpec, JobState, Shigoto
from tests.conftest import FAST, app_settings, start_node, wait_until

RESCUE_AFTER = 1.0  # heartbeats every 0.3 s (tests.conftest.FAST)


def spec(worker: str, args: dict[str, Any] | None = None) -> JobSpec:
    return JobSpec.build(worker, args or {})


async def _finished(app: Shigoto, job_id: int) -> Any:
    job = await app.get_job(job_id)
    return job if job is not None and job.state.is_final else None


def _output(processes: list[subprocess.Popen[bytes]]) -> str:
    """Stop the node processes gracefully and return what they logged."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    return "".join(process.communicate(timeout=30)[0].decode() for process in processes)


async def _registered(db: Any, schema: str, count: int) -> None:
    async def enough() -> bool:
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "nodes"))
        row = await (await db.execute(query)).fetchone()
        return bool(row and row[0] == count)

    await wait_until(enough, timeout=30, every=0.1)


@pytest.mark.parametrize("spin", [False, True], ids=["time.sleep", "busy loop"])
async def test_a_job_blocking_the_loop_runs_once_and_the_watchdog_names_it(
    app: Shigoto, ledger, nodes, db, dsn: str, schema: str, spin: bool
) -> None:
    first = start_node(nodes, dsn, schema, rescue_after=RESCUE_AFTER)
    second = start_node(nodes, dsn, schema, rescue_after=RESCUE_AFTER)
    await _registered(db, schema, 2)
    seconds = 4 * RESCUE_AFTER
    job = await app.insert(spec("ledger.block", {"seconds": seconds, "spin": spin}))

    done = await wait_until(lambda: _finished(app, job.id), timeout=60, every=0.1)
    # Well past the point where the other node would have rescued it, had it looked dead.
    await asyncio.sleep(2 * RESCUE_AFTER)
    runs = await ledger("SELECT pid, event FROM {} WHERE job_id = %s ORDER BY at", [job.id])
    output = _output([first, second])

    assert done.state is JobState.COMPLETED, (done.errors, output)
    assert (done.attempt, done.errors) == (1, [])
    assert len(runs) == 2 and [event for _, event in runs] == ["start", "end"], runs
    assert runs[0][0] == runs[1][0]  # one run, on one node
    assert f"WARNING shigoto.watchdog: job {job.id} (ledger.block) has held" in output, output
    assert "NodeFenced" not in output and "declared dead" not in output


async def test_jobs_holding_every_pooled_connection_do_not_fence_their_node(
    app: Shigoto, ledger, nodes, db, dsn: str, schema: str
) -> None:
    # As many jobs at once as the pool has connections, each holding one for longer than
    # rescue_after: the node's own statements find no connection meanwhile.
    node = start_node(
        nodes, dsn, schema, queues="default=3", pool_max_size=3, rescue_after=RESCUE_AFTER
    )
    await _registered(db, schema, 1)
    jobs = await app.insert_all([spec("ledger.hold", {"seconds": 2.5}) for _ in range(6)])

    for job in jobs:
        done = await wait_until(lambda job=job: _finished(app, job.id), timeout=60, every=0.1)
        assert done.state is JobState.COMPLETED, done.errors
        assert (done.attempt, done.errors) == (1, [])
    starts = await ledger(
        "SELECT job_id, count(*) FROM {} WHERE event = 'start' GROUP BY job_id ORDER BY job_id"
    )
    assert starts == [(job.id, 1) for job in jobs]
    output = _output([node])
    assert "running job(s) on node" not in output, output  # what a fencing node logs


def test_a_node_whose_event_loop_is_gone_stops_heartbeating(dsn: str, schema: str) -> None:
    """The heartbeat's thread lives no longer than the loop it reports to: a program that
    returns from `asyncio.run` without stopping its node must not leave it looking alive
    (its jobs would never be rescued), nor be kept from exiting."""

    app = Shigoto(**app_settings(dsn), schema=schema, **FAST)  # type: ignore[arg-type]

    async def main() -> None:
        await app.migrate()
        await app.start()
        assert {"shigoto-heartbeat", "shigoto-watchdog"} <= _threads()

    asyncio.run(main())
    deadline = time.monotonic() + 10
    while _threads() & {"shigoto-heartbeat", "shigoto-watchdog"}:
        assert time.monotonic() < deadline, _threads()
        time.sleep(0.05)


def _threads() -> set[str]:
    return {thread.name for thread in threading.enumerate() if thread.is_alive()}


async def test_the_watchdog_names_the_job_never_its_args(dsn: str, schema: str, caplog) -> None:

    caplog.set_level(logging.INFO, logger="shigoto.watchdog")
    app = Shigoto(**app_settings(dsn), schema=schema, watchdog_threshold=0.2, **FAST)  # type: ignore[arg-type]
    await app.migrate()

    @app.worker(name="stubborn")
    async def stubborn(password: str) -> None:
        time.sleep(0.8)  # the mistake the watchdog is for

    try:
        job = await stubborn.enqueue({"password": "hunter2"})
        await app.start()
        await wait_until(lambda: _finished(app, job.id), timeout=30)
        await wait_until(lambda: asyncio.sleep(0, result="let the event loop go" in caplog.text))
    finally:
        await app.stop()
        await app.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"job {job.id} (stubborn) has held the event loop for ")
    assert "hunter2" not in caplog.text


async def test_the_watchdog_can_be_turned_off(dsn: str, schema: str) -> None:
    app = Shigoto(**app_settings(dsn), schema=schema, watchdog_threshold=None)
    await app.migrate()
    try:
        await app.start()
        assert "shigoto-heartbeat" in _threads() and "shigoto-watchdog" not in _threads()
    finally:
        await app.stop()
        await app.close()


async def test_a_node_whose_heartbeat_the_database_does_not_answer_still_fences(
    fast_app: Shigoto, dsn: str, schema: str
) -> None:
    """The other half: silence from the database (here, the node's row locked, so the
    heartbeat waits) still stops the node's jobs before anyone may rescue them, even with
    the heartbeat's thread stuck in its statement."""
    runs: list[str] = []
    first = asyncio.Event()

    @fast_app.worker(name="patient")
    async def patient() -> None:
        runs.append("start")
        if len(runs) == 1:
            first.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                runs.append("interrupted")
                raise

    job = await patient.enqueue()
    await fast_app.start()
    await first.wait()
    async with await psycopg.AsyncConnection.connect(dsn) as locker:
        nodes = sql.Identifier(schema, "nodes")
        await locker.execute(sql.SQL("SELECT 1 FROM {} FOR UPDATE").format(nodes))
        await wait_until(lambda: asyncio.sleep(0, result="interrupted" in runs), timeout=10)
        await locker.rollback()
    done = await wait_until(lambda: _finished(fast_app, job.id), timeout=30)
    assert done.state is JobState.COMPLETED
    assert runs == ["start", "interrupted", "start"]
    assert [e["error"] for e in done.errors] == ["NodeFenced"]
