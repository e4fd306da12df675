"""Batches: one transaction, counts, and callbacks inserted exactly once even
when the last jobs finish on two nodes at the same instant; hooks in every node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import sql

from shigoto import Discard, InvalidJobError, JobSpec, JobState, Shigoto
from shigoto.features.batches import Batch
from tests.conftest import FAST, app_settings, wait_until


def _register(app: Shigoto, summaries: list[dict[str, Any]]) -> None:
    @app.worker(name="part")
    async def part(n: int, fail: bool = False) -> object:
        return Discard("bad part") if fail else n

    @app.worker(name="batch.done", queue="callbacks")
    async def done(batch: dict[str, Any]) -> None:
        summaries.append({"kind": "complete", **batch})

    @app.worker(name="batch.failed")
    async def failed(batch: dict[str, Any]) -> None:
        summaries.append({"kind": "discard", **batch})


@pytest.fixture
async def two_nodes(dsn: str, schema: str) -> AsyncIterator[tuple[list[Shigoto], list[dict]]]:
    summaries: list[dict[str, Any]] = []
    apps = [Shigoto(**app_settings(dsn), schema=schema, **FAST) for _ in range(2)]  # type: ignore[arg-type]
    for app in apps:
        _register(app, summaries)
    await apps[0].migrate()
    yield apps, summaries
    for app in apps:
        await app.stop(timeout=0)
        await app.close()


async def _callbacks(db, schema: str) -> list[tuple[str, str]]:
    cur = await db.execute(
        sql.SQL("SELECT worker, origin FROM {} WHERE origin LIKE 'batch:%%' ORDER BY id").format(
            sql.Identifier(schema, "jobs")
        )
    )
    return list(await cur.fetchall())


async def test_a_thousand_job_batch_on_two_nodes_fires_on_complete_once(
    two_nodes, db, schema: str
) -> None:
    (first, second), summaries = two_nodes
    closed: list[Batch] = []
    for app in (first, second):
        app.on_batch_stopped(closed.append)
    batch = await first.batch(
        [JobSpec.build("part", {"n": n}) for n in range(1000)],
        on_complete="batch.done",
        meta={"album": 7},
    )
    assert batch.total == 1000 and len(batch.jobs) == 1000
    assert {job.batch_id for job in batch.jobs} == {batch.id}
    for app in (first, second):
        await app.start(queues={"default": 10, "callbacks": 1})
    await wait_until(lambda: asyncio.sleep(0, summaries), timeout=60)
    await asyncio.sleep(3 * FAST["stage_interval"])  # a second callback would have come by now
    assert summaries == [
        {
            "kind": "complete",
            "id": batch.id,
            "total": 1000,
            "completed": 1000,
            "discarded": 0,
            "cancelled": 0,
            "meta": {"album": 7},
        }
    ]
    assert await _callbacks(db, schema) == [("batch.done", f"batch:{batch.id}")]
    final = await first.get_batch(batch.id)
    assert final is not None and final.state == "finished" and final.completed == 1000
    assert [b.id for b in closed] == [batch.id]  # the hook ran once, on the closing node
    ran_on = {j.attempted_by for j in (await first.list_jobs(worker="part", limit=1000)).jobs}
    assert len(ran_on) == 2  # both nodes worked the batch


async def test_the_last_two_jobs_finishing_at_once_on_two_nodes_close_it_once(
    two_nodes, db, schema: str
) -> None:
    (first, second), _ = two_nodes
    gates: list[asyncio.Event] = []

    async def hold(n: int) -> int:
        await gates[-1].wait()
        return n

    for app in (first, second):
        app.worker(name="held")(hold)
    for round_ in range(5):
        gate = asyncio.Event()
        gates.append(gate)
        batch = await first.batch(
            [JobSpec.build("held", {"n": n}) for n in range(2)], on_complete="batch.done"
        )
        if round_ == 0:
            for app in (first, second):
                await app.start(queues={"default": 1, "callbacks": 1})
        await wait_until(lambda b=batch: _both_running(first, b), timeout=10)
        gate.set()  # both finish now, one on each node
        await wait_until(lambda b=batch: _callback_for(db, schema, b.id), timeout=10)
    await asyncio.sleep(3 * FAST["stage_interval"])
    origins = [origin for _, origin in await _callbacks(db, schema)]
    assert len(origins) == len(set(origins)) == 5


async def _both_running(app: Shigoto, batch: Batch) -> bool:
    states = [(await app.get_job(job.id)).state for job in batch.jobs]  # type: ignore[union-attr]
    return states == [JobState.EXECUTING, JobState.EXECUTING]


async def _callback_for(db, schema: str, batch_id: int) -> bool:
    return any(origin == f"batch:{batch_id}" for _, origin in await _callbacks(db, schema))


async def test_a_discard_in_the_batch_fires_on_discard_too(fast_app: Shigoto) -> None:
    summaries: list[dict[str, Any]] = []
    _register(fast_app, summaries)
    stopped: list[tuple[int, JobState]] = []

    @fast_app.on_job_stopped
    async def note(job) -> None:
        stopped.append((job.id, job.state))

    batch = await fast_app.batch(
        [JobSpec.build("part", {"n": 1}), JobSpec.build("part", {"n": 2, "fail": True})],
        on_complete="batch.done",
        on_discard="batch.failed",
    )
    await fast_app.start(queues={"default": 2, "callbacks": 1})
    await wait_until(lambda: asyncio.sleep(0, len(summaries) == 2), timeout=20)
    assert sorted(s["kind"] for s in summaries) == ["complete", "discard"]
    assert all(s["completed"] == 1 and s["discarded"] == 1 for s in summaries)
    ids = [job.id for job in batch.jobs]
    ours = sorted(entry for entry in stopped if entry[0] in ids)  # the callbacks stop too
    assert ours == [(ids[0], JobState.COMPLETED), (ids[1], JobState.DISCARDED)]


async def test_a_batch_needs_jobs_and_real_callbacks(app: Shigoto) -> None:
    with pytest.raises(InvalidJobError, match="at least one job"):
        await app.batch([])
    with pytest.raises(InvalidJobError, match="on_complete"):
        await app.batch([JobSpec.build("part", {})], on_complete=42)
    assert (await app.list_jobs()).jobs == []


async def test_drain_queue_runs_a_batch_and_then_its_callback(app: Shigoto) -> None:
    from shigoto.testing import drain_queue

    summaries: list[dict[str, Any]] = []
    _register(app, summaries)
    await app.batch([JobSpec.build("part", {"n": n}) for n in range(3)], on_complete="batch.done")
    await drain_queue(app, "default")
    assert summaries == []  # the callback went to its own queue, "callbacks"
    counts = await drain_queue(app, "callbacks")
    assert counts["completed"] == 1 and summaries[0]["completed"] == 3
