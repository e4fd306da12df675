"""A node's start and stop: a graceful stop returns unfinished jobs at once, gives back
what it claimed and never started, survives a job's failing cleanup; a crashing
component is restarted."""

from __future__ import annotations

import asyncio
import logging
import time

from psycopg import sql

from shigoto import Event, JobState, Shigoto
from shigoto.db import execution
from tests.conftest import Seen, final, state_of, wait_until


async def test_graceful_shutdown_returns_unfinished_jobs_at_once(fast_app: Shigoto) -> None:
    started = asyncio.Event()
    finished: list[str] = []

    @fast_app.worker(name="quick")
    async def quick() -> None:
        started.set()
        await asyncio.sleep(0.1)
        finished.append("quick")

    @fast_app.worker(name="endless")
    async def endless() -> None:
        started.set()
        await asyncio.sleep(3600)

    q = await quick.enqueue()
    e = await endless.enqueue()
    await fast_app.start(queues={"default": 2})
    await started.wait()
    began = time.monotonic()
    await fast_app.stop(timeout=0.5)
    assert time.monotonic() - began < 2
    assert finished == ["quick"]
    assert await state_of(fast_app, q.id) is JobState.COMPLETED
    returned = await fast_app.get_job(e.id)
    assert returned is not None
    assert (returned.state, returned.attempt, returned.errors) == (JobState.AVAILABLE, 0, [])


async def test_a_stop_gives_back_claimed_jobs_the_node_never_started(
    fast_app: Shigoto, caplog
) -> None:
    """A job executing under the node's name that it does not run (the answer to a claim
    that never reached it) goes back at the stop, its attempt refunded, not to a rescue."""

    @fast_app.worker(name="stray", queue="elsewhere")
    async def stray() -> None: ...

    job = await stray.enqueue()
    await fast_app.start(queues={"default": 1})
    assert fast_app.node is not None
    claim = execution.claim(
        fast_app.queries, queue="elsewhere", limit=1, node=fast_app.node.id, fresh_for=60
    )
    assert [j.id for j in await fast_app.database.run(claim)] == [job.id]
    with caplog.at_level(logging.WARNING, logger="shigoto.node"):
        await fast_app.stop()
    returned = await fast_app.get_job(job.id)
    assert returned is not None
    assert (returned.state, returned.attempt, returned.errors) == (JobState.AVAILABLE, 0, [])
    assert "gave back 1 claimed job(s) that never started" in caplog.text


async def test_an_interrupted_job_that_raises_while_cleaning_up_is_still_returned(
    fast_app: Shigoto,
) -> None:
    """Found by the chaos suite: a worker whose cleanup fails during a shutdown (its
    database is gone, say) must not turn the interruption into a failed attempt."""
    started = asyncio.Event()

    @fast_app.worker(name="messy")
    async def messy() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            raise RuntimeError("cleanup failed")

    job = await messy.enqueue()
    await fast_app.start()
    await started.wait()
    await fast_app.stop(timeout=0.1)
    returned = await fast_app.get_job(job.id)
    assert returned is not None
    assert (returned.state, returned.attempt, returned.errors) == (JobState.AVAILABLE, 0, [])


async def test_a_crashing_component_is_restarted(fast_app: Shigoto, db, schema, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="shigoto")

    @fast_app.worker(name="after")
    async def after() -> None: ...

    seen = Seen(fast_app, "component.crashed")
    await fast_app.start()
    nodes = sql.Identifier(schema, "nodes")
    hidden = sql.Identifier("nodes_hidden")
    await db.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(nodes, hidden))

    def crashed() -> list[Event]:
        return [e for e in seen.named("component.crashed") if e.data["component"] == "lifeline"]

    await seen.until(crashed)
    assert "component lifeline crashed" in caplog.text
    await db.execute(
        sql.SQL("ALTER TABLE {} RENAME TO nodes").format(sql.Identifier(schema, "nodes_hidden"))
    )
    job = await after.enqueue()
    assert (await final(fast_app, job.id)).state is JobState.COMPLETED
    assert fast_app.node is not None and fast_app.node.started

    async def heartbeat_is_fresh() -> bool:
        cur = await db.execute(
            sql.SQL("SELECT now() - heartbeat_at < interval '1 second' FROM {}").format(nodes)
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    await wait_until(heartbeat_is_fresh)
