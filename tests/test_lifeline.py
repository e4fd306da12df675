"""Heartbeats, fencing, rescue and the audit: a node declared dead stops its jobs, a node
whose heartbeat is stale claims nothing, no node rescues its own jobs, a cancel the
node did not hear still stops the job, a job claimed again stops its older run, and
the audit leaves a finished job's hooks alone."""

from __future__ import annotations

import asyncio

from psycopg import sql

from shigoto import Discard, Job, JobState, Shigoto, Worker, current_job
from shigoto.db import execution
from tests.conftest import FAST, app_settings, final, state_of, wait_until


async def test_a_node_declared_dead_stops_its_jobs_and_they_run_again(
    fast_app: Shigoto, db, schema
) -> None:
    runs: list[str] = []
    first_started = asyncio.Event()

    @fast_app.worker(name="resilient")
    async def resilient() -> str:
        runs.append("start")
        if len(runs) == 1:
            first_started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                runs.append("interrupted")
                raise
        return "done"

    job = await resilient.enqueue()
    await fast_app.start()
    await first_started.wait()
    await db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, "nodes")))
    done = await final(fast_app, job.id)
    assert done.state is JobState.COMPLETED and done.result == "done"
    assert runs == ["start", "interrupted", "start"]
    # The stopped run counts, and the job says why it ran twice.
    assert done.attempt == 2
    assert [e["error"] for e in done.errors] == ["NodeFenced"]


async def test_a_node_never_rescues_its_own_jobs(app: Shigoto, db, schema) -> None:
    """Found by the chaos suite: after an outage a node's own heartbeat is stale; it must
    not take its own jobs (whose outcomes may still be on their way) for orphans."""

    @app.worker(name="held")
    async def held() -> None: ...

    job = await held.enqueue()
    await app.database.run(execution.register_node(app.queries, "me", {"default": 1}, {}))
    await app.database.run(
        execution.claim(app.queries, queue="default", limit=1, node="me", fresh_for=60)
    )
    nodes = sql.Identifier(schema, "nodes")
    await db.execute(
        sql.SQL("UPDATE {} SET heartbeat_at = now() - interval '1 hour'").format(nodes)
    )
    assert await app.database.run(execution.rescue(app.queries, node="me", node_timeout=60)) == []
    assert await state_of(app, job.id) is JobState.EXECUTING
    rescued = await app.database.run(execution.rescue(app.queries, node="other", node_timeout=60))
    assert [j.id for j in rescued] == [job.id]
    assert rescued[0].state is JobState.AVAILABLE
    assert rescued[0].errors[-1]["error"] == "NodeLost"


async def test_a_cancel_the_node_did_not_hear_still_stops_the_job(dsn: str, schema: str) -> None:
    """Found by a flaky test: a cancel NOTIFY sent while a node's listener is away (or with
    no listener at all) is lost; the lifeline's audit still stops the job."""
    app = Shigoto(**app_settings(dsn), schema=schema, **{**FAST, "notifier": False})  # type: ignore[arg-type]
    await app.migrate()
    started = asyncio.Event()
    stopped = asyncio.Event()

    @app.worker(name="deaf")
    async def deaf() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.set()
            raise

    try:
        job = await deaf.enqueue()
        await app.start()
        await started.wait()
        assert await app.cancel(job.id)
        await asyncio.wait_for(stopped.wait(), 5)  # within a heartbeat or two (0.3 s)
        assert await state_of(app, job.id) is JobState.CANCELLED
    finally:
        await app.stop()
        await app.close()


async def test_a_job_claimed_again_stops_the_nodes_older_run(fast_app: Shigoto, db, schema) -> None:
    """Found by the long chaos run: a job rescued from a node that was only slow may be
    claimed again by that same node; its older run must stop, not run on beside the new."""
    runs: list[tuple[int, str]] = []
    first = asyncio.Event()

    @fast_app.worker(name="twice")
    async def twice() -> None:
        attempt = current_job().attempt
        runs.append((attempt, "start"))
        if attempt == 1:
            first.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                runs.append((attempt, "stopped"))
                raise
        runs.append((attempt, "end"))

    job = await twice.enqueue()
    await fast_app.start()
    await first.wait()
    # What a rescue by another node does: the job is available again, attempt kept.
    await db.execute(
        sql.SQL("UPDATE {} SET state = 'available' WHERE id = %s").format(
            sql.Identifier(schema, "jobs")
        ),
        [job.id],
    )
    done = await final(fast_app, job.id)
    assert done.state is JobState.COMPLETED and done.attempt == 2
    assert runs == [(1, "start"), (1, "stopped"), (2, "start"), (2, "end")]


async def test_a_node_that_cannot_heartbeat_stops_claiming(fast_app: Shigoto, db, schema) -> None:
    """Found by the long chaos run: a node whose heartbeat is stale must not claim, or
    another node rescues the job from under it."""

    @fast_app.worker(name="later")
    async def later() -> None: ...

    await fast_app.start()
    node = fast_app.node
    assert node is not None
    nodes = sql.Identifier(schema, "nodes")
    await db.execute(sql.SQL("ALTER TABLE {} RENAME TO nodes_away").format(nodes))
    # Past the node's fence time (0.6 s with these settings): every heartbeat fails.
    fence_after = fast_app.config.claim_window
    await wait_until(lambda: asyncio.sleep(0, (node.heartbeat_age or 0) > fence_after))
    job = await later.enqueue()
    # A node that may not claim does nothing anyone could wait for (no claim, no event):
    # this window, five polls and the insert's notification, is where it must hold still.
    await asyncio.sleep(1.0)
    assert await state_of(fast_app, job.id) is JobState.AVAILABLE
    away = sql.Identifier(schema, "nodes_away")
    await db.execute(sql.SQL("ALTER TABLE {} RENAME TO nodes").format(away))
    assert (await final(fast_app, job.id)).state is JobState.COMPLETED


async def test_a_node_with_a_stale_heartbeat_claims_nothing(app: Shigoto, db, schema) -> None:
    """Found by the long chaos run: a claim that waited for a connection during an outage
    must not go through once the node's heartbeat is stale in the database."""

    @app.worker(name="waiting")
    async def waiting() -> None: ...

    job = await waiting.enqueue()
    await app.database.run(execution.register_node(app.queries, "late", {"default": 1}, {}))
    nodes = sql.Identifier(schema, "nodes")
    await db.execute(
        sql.SQL("UPDATE {} SET heartbeat_at = now() - interval '1 minute'").format(nodes)
    )
    claim = execution.claim(app.queries, queue="default", limit=1, node="late", fresh_for=30)
    assert await app.database.run(claim) == []
    assert await state_of(app, job.id) is JobState.AVAILABLE
    await app.database.run(execution.heartbeat(app.queries, "late", {"default": 1}))
    claim = execution.claim(app.queries, queue="default", limit=1, node="late", fresh_for=30)
    assert [j.id for j in await app.database.run(claim)] == [job.id]


async def test_the_audit_does_not_cut_short_a_finished_jobs_hooks(fast_app: Shigoto) -> None:
    """A job that has run is no longer executing once its outcome is written; the audit
    (after a reconnect) must not take that for a lost job and cancel its on_discard."""
    in_on_discard = asyncio.Event()
    release = asyncio.Event()
    finished: list[int] = []
    stopped: list[tuple[int, JobState]] = []

    @fast_app.worker(name="doomed")
    class Doomed(Worker):
        async def perform(self, job: Job) -> object:
            return Discard("no use")

        async def on_discard(self, job: Job) -> None:
            in_on_discard.set()
            await release.wait()
            finished.append(job.id)

    @fast_app.on_job_stopped
    async def note(job: Job) -> None:
        stopped.append((job.id, job.state))

    job = await fast_app.enqueue("doomed")
    await fast_app.start()
    await asyncio.wait_for(in_on_discard.wait(), 10)
    assert fast_app.node is not None
    await fast_app.node.audit()  # finds the job discarded, as after a reconnect
    release.set()
    await wait_until(lambda: asyncio.sleep(0, finished == [job.id]))
    assert stopped == [(job.id, JobState.DISCARDED)]
