"""Nodes in real processes: sharing one database, killed with SIGKILL, stopped by signals."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from psycopg import sql

from shigoto import JobSpec, JobState, Shigoto
from tests.conftest import start_node, wait_until
from tests.nodeapp import runs_file

ROOT = Path(__file__).parent.parent


def spec(worker: str, args: dict[str, Any] | None = None, **options: Any) -> JobSpec:
    """A job for a worker that only the node processes know (registered in tests.nodeapp)."""
    return JobSpec.build(worker, args or {}, **options)


async def _count(app: Shigoto, state: JobState) -> int:
    return (await app.status()).count(state)


async def test_two_node_processes_run_each_job_exactly_once(
    app: Shigoto, ledger, nodes, dsn: str, schema: str
) -> None:
    await app.insert_all([spec("ledger.noop") for _ in range(5000)])
    # Heartbeats of a second, not the suite's 0.3 s: with those, a loaded machine that keeps
    # the database from answering for 0.6 s makes a node stop its jobs (rightly: it could
    # no longer tell whether it was about to be declared dead), and their second runs are
    # not what this test is about. Here a stop would take 4 s of silence.
    for _ in range(2):
        start_node(nodes, dsn, schema, heartbeat_interval=1, rescue_after=5)

    async def all_done() -> bool:
        return await _count(app, JobState.COMPLETED) == 5000

    await wait_until(all_done, timeout=120, every=0.2)
    rows = await ledger(
        "SELECT job_id, count(*) FILTER (WHERE event = 'start') FROM {} GROUP BY job_id"
    )
    assert len(rows) == 5000
    assert {starts for _, starts in rows} == {1}
    assert len(await ledger("SELECT DISTINCT pid FROM {}")) == 2  # both nodes took part


async def test_a_killed_nodes_job_is_rescued_and_completed_by_a_survivor(
    app: Shigoto, ledger, nodes, dsn: str, schema: str
) -> None:
    victim = start_node(nodes, dsn, schema, queues="slow=1")
    long_job = await app.insert(spec("ledger.sleep", {"seconds": 2.0}, queue="slow"))

    async def started() -> list[Any]:
        return await ledger("SELECT pid FROM {} WHERE event = 'start'")

    assert await wait_until(started, timeout=30) == [(victim.pid,)]
    others = await app.insert_all([spec("ledger.noop") for _ in range(200)])
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = start_node(nodes, dsn, schema, queues="slow=1,default=5")

    async def rescued_and_done() -> bool:
        job = await app.get_job(long_job.id)
        return job is not None and job.state is JobState.COMPLETED

    await wait_until(rescued_and_done, timeout=60, every=0.1)
    for job in others:
        await wait_until(lambda job=job: _is_completed(app, job.id), timeout=30)

    done = await app.get_job(long_job.id)
    assert done is not None
    assert done.attempt == 2  # the killed run consumed its attempt
    assert [e["error"] for e in done.errors] == ["NodeLost"]
    assert "stopped heartbeating" in done.errors[0]["message"]
    runs = await ledger("SELECT pid, event FROM {} WHERE job_id = %s ORDER BY at", [long_job.id])
    assert runs == [(victim.pid, "start"), (survivor.pid, "start"), (survivor.pid, "end")]
    twice = await ledger(
        "SELECT job_id FROM {} WHERE event = 'start' GROUP BY job_id HAVING count(*) > 1"
    )
    assert twice == [(long_job.id,)]  # no other job ran twice


async def _is_completed(app: Shigoto, job_id: int) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job.state is JobState.COMPLETED


async def test_rescue_discards_a_job_out_of_attempts(
    app: Shigoto, ledger, nodes, dsn: str, schema: str
) -> None:
    victim = start_node(nodes, dsn, schema)
    job = await app.insert(spec("ledger.sleep", {"seconds": 30}, max_attempts=1))

    async def started() -> list[Any]:
        return await ledger("SELECT pid FROM {} WHERE event = 'start'")

    await wait_until(started, timeout=30)
    victim.kill()
    victim.wait()
    start_node(nodes, dsn, schema)

    async def discarded() -> bool:
        current = await app.get_job(job.id)
        return current is not None and current.state is JobState.DISCARDED

    await wait_until(discarded, timeout=30)
    final = await app.get_job(job.id)
    assert final is not None and final.errors[-1]["error"] == "NodeLost"


async def test_sigterm_lets_jobs_finish_and_a_second_signal_stops_at_once(
    app: Shigoto, ledger, nodes, dsn: str, schema: str
) -> None:
    node = start_node(nodes, dsn, schema, shutdown_timeout=30)
    short = await app.insert(spec("ledger.sleep", {"seconds": 0.5}))
    endless = await app.insert(spec("ledger.sleep", {"seconds": 3600}))

    async def both_started() -> bool:
        return len(await ledger("SELECT 1 FROM {} WHERE event = 'start'")) == 2

    await wait_until(both_started, timeout=30)
    node.send_signal(signal.SIGTERM)
    await wait_until(lambda: _is_completed(app, short.id), timeout=10)
    assert node.poll() is None  # still waiting for the endless job, up to 30 s
    began = time.monotonic()
    node.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(node.wait, 10) == 0
    assert time.monotonic() - began < 5
    returned = await app.get_job(endless.id)
    assert returned is not None
    assert (returned.state, returned.attempt) == (JobState.AVAILABLE, 0)
    output = node.stdout.read().decode() if node.stdout else ""
    assert "stopping gracefully" in output and "stopping now" in output
    assert await _nodes(app, schema) == 0  # deregistered


async def _nodes(app: Shigoto, schema: str) -> int:
    async with app.connection() as conn:
        cur = await conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "nodes"))
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def test_a_graceful_stop_under_a_backlog_leaves_no_job_executing(
    app: Shigoto, nodes, dsn: str, schema: str
) -> None:
    """SIGTERM while a node drains a backlog of 1 ms jobs with every slot busy, so that a
    claim is nearly always on its way: whatever the node claimed and did not run goes back,
    unstarted and with its attempt refunded, and none is left executing for a rescue."""
    runs = runs_file(schema)
    runs.unlink(missing_ok=True)
    await app.insert_all([spec("ledger.blink") for _ in range(30_000)])
    try:
        for _ in range(6):  # the race is a matter of timing: stop more than once
            before = await _count(app, JobState.COMPLETED)
            node = start_node(nodes, dsn, schema, queues="default=32")

            async def saturated(before: int = before) -> bool:
                return await _count(app, JobState.COMPLETED) >= before + 1_000

            await wait_until(saturated, timeout=60, every=0.05)
            node.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(node.wait, 30) == 0
            async with app.connection() as conn:
                cur = await conn.execute(
                    sql.SQL(
                        "SELECT id, state::text, attempt FROM {} WHERE state <> 'completed'"
                    ).format(sql.Identifier(schema, "jobs"))
                )
                left = await cur.fetchall()
            ran = {int(line.split()[0]) for line in runs.read_text().splitlines()}
            assert {(state, attempt) for _, state, attempt in left} == {("available", 0)}
            assert not ran & {job_id for job_id, _, _ in left}  # given back unrun
            assert await _nodes(app, schema) == 0
    finally:
        runs.unlink(missing_ok=True)


def _runs(schema: str) -> dict[tuple[int, int], dict[str, float]]:
    """The runs file of `tests.nodeapp`: {(job id, attempt): {"start": t, "end": t}}."""
    runs: dict[tuple[int, int], dict[str, float]] = {}
    for line in runs_file(schema).read_text().splitlines():
        job_id, attempt, event, at = line.split()
        runs.setdefault((int(job_id), int(attempt)), {})[event] = float(at)
    return runs


async def test_a_sync_job_past_its_timeout_keeps_its_slot_until_its_thread_returns(
    app: Shigoto, nodes, dsn: str, schema: str
) -> None:
    """A plain function cannot be interrupted: a run past its timeout is a failure, but it
    holds its slot, and its job stays executing, until the function returns, so its retry
    never overlaps it. The deadline starts when a thread starts the function: jobs that
    wait for a thread do not time out while waiting."""
    runs_file(schema).unlink(missing_ok=True)
    slow = await app.insert(spec("ledger.stuck", {"seconds": 2.5}, max_attempts=2))  # timeout 0.5 s
    quick = await app.insert_all([spec("ledger.stuck", {"seconds": 0.3}) for _ in range(6)])
    try:
        start_node(nodes, dsn, schema, queues="default=2")

        async def all_ended() -> bool:
            jobs = [await app.get_job(job.id) for job in [slow, *quick]]
            return all(job is not None and job.state.is_final for job in jobs)

        await wait_until(all_ended, timeout=60, every=0.1)
        runs = _runs(schema)
    finally:
        runs_file(schema).unlink(missing_ok=True)
    failed = await app.get_job(slow.id)
    assert failed is not None and failed.state is JobState.DISCARDED
    assert [(e["error"], e["message"]) for e in failed.errors] == [
        ("TimeoutError", "timed out after 0.5s")
    ] * 2
    first, second = runs[(slow.id, 1)], runs[(slow.id, 2)]
    assert "end" in first, f"the job ended while its first run was still going: {runs}"
    assert second["start"] >= first["end"]  # the retry waited for the first thread
    ran_for = (failed.discarded_at - failed.attempted_at).total_seconds()  # type: ignore[operator]
    assert ran_for >= 2.4  # written when its thread returned, not at the deadline
    for job in quick:  # none timed out waiting for a thread
        done = await app.get_job(job.id)
        assert done is not None and (done.state, done.errors) == (JobState.COMPLETED, [])
    # Never more runs at once than the queue's 2 slots, counting the overdue ones.
    moments = sorted(
        [(run["start"], 1) for run in runs.values()] + [(run["end"], -1) for run in runs.values()]
    )
    busy = 0
    for _, change in moments:
        busy += change
        assert busy <= 2, runs
