"""Jobs that hold the app's pooled connections (`app.connection()`) do not hold up their
node: its claims and outcome writes have connections of their own, and a job asking for
one more connection than the pool has gets a clear error, not a stalled node.

A real node process (`shigoto worker tests.nodeapp:app`).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from psycopg import sql

from shigoto import JobSpec, JobState, Shigoto
from tests.conftest import start_node, wait_until


async def _states(app: Shigoto, ids: list[int]) -> list[JobState]:
    jobs = [await app.get_job(job_id) for job_id in ids]
    return [job.state for job in jobs if job is not None]


async def test_jobs_holding_every_app_connection_do_not_hold_up_claims_and_outcomes(
    app: Shigoto, ledger: Any, nodes: Any, db: Any, dsn: str, schema: str
) -> None:
    node = start_node(
        nodes,
        dsn,
        schema,
        queues="holders=3,default=5",
        pool_max_size=2,
        connect_timeout=1,
        heartbeat_interval=5,  # heartbeats are not what this is about
    )
    holders = await app.insert_all(
        [
            JobSpec.build("ledger.hold", {"seconds": 60}, queue="holders", max_attempts=1)
            for _ in range(3)
        ]
    )
    ids = [job.id for job in holders]

    # Two of them hold both connections of the app's pool; the third one waits
    # connect_timeout for a connection, then fails with PoolExhausted.
    async def one_refused() -> Any:
        states = await _states(app, ids)
        return states.count(JobState.EXECUTING) == 2 and JobState.DISCARDED in states

    await wait_until(one_refused, timeout=30, every=0.1)
    refused = [job for job in [await app.get_job(i) for i in ids] if job and job.errors]
    assert len(refused) == 1
    error = refused[0].errors[-1]
    assert error["error"] == "shigoto.outcomes.PoolExhausted", error
    assert "all 2 connections of pool 'shigoto' stayed in use for 1s" in error["message"]

    # Meanwhile the node claims other jobs and writes their outcomes as usual.
    began = time.monotonic()
    quick = await app.insert_all([JobSpec.build("ledger.nap", {"seconds": 0}) for _ in range(20)])

    async def all_completed() -> bool:
        states = await _states(app, [job.id for job in quick])
        return states == [JobState.COMPLETED] * len(quick)

    await wait_until(all_completed, timeout=20, every=0.05)
    assert time.monotonic() - began < 5.0
    assert (await _states(app, ids)).count(JobState.EXECUTING) == 2  # still holding
    query = sql.SQL("SELECT count(*) FROM {} WHERE event = 'start'").format(
        sql.Identifier(schema, "ledger")
    )
    row = await (await db.execute(query)).fetchone()
    assert row == (2,)  # the refused one never got to start its work
    node.send_signal(signal.SIGTERM)
    node.wait(timeout=30)
