"""Dependencies: waiting, release in a valid order across nodes, failure
propagation with reasons, cycles and unknown ids refused, results read from the context."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from psycopg import sql

from shigoto import (
    Discard,
    InvalidJobError,
    Job,
    JobSpec,
    JobState,
    Ref,
    Shigoto,
    dependency_results,
)
from tests.conftest import FAST, app_settings, wait_until


async def _final(app: Shigoto, job_id: int) -> Job:
    async def finished() -> Job | None:
        job = await app.get_job(job_id)
        return job if job is not None and job.state.is_final else None

    return await wait_until(finished, timeout=20)  # type: ignore[return-value]


def _register(app: Shigoto) -> None:
    @app.worker(name="step")
    async def step(name: str, fail: bool = False) -> object:
        await asyncio.sleep(0.05)
        if fail:
            return Discard(f"{name} failed")
        parents = await dependency_results()
        return {"name": name, "saw": sorted(v["name"] for v in parents.values() if v)}


@pytest.fixture
async def two_nodes(dsn: str, schema: str) -> AsyncIterator[list[Shigoto]]:
    apps = [Shigoto(**app_settings(dsn), schema=schema, **FAST) for _ in range(2)]  # type: ignore[arg-type]
    for app in apps:
        _register(app)
    await apps[0].migrate()
    yield apps
    for app in apps:
        await app.stop(timeout=0)
        await app.close()


def _diamond(fail_a: bool = False, **d_options: Any) -> list[JobSpec]:
    a = JobSpec.build("step", {"name": "A", "fail": fail_a})
    b = JobSpec.build("step", {"name": "B"}, depends_on=[a])
    c = JobSpec.build("step", {"name": "C"}, depends_on=[Ref(0)])
    d = JobSpec.build("step", {"name": "D"}, depends_on=[b, c], **d_options)
    return [a, b, c, d]


async def test_a_diamond_runs_in_a_valid_order_across_two_nodes(two_nodes) -> None:
    first, second = two_nodes
    a, b, c, d = await first.insert_all(_diamond())
    assert [job.state for job in (a, b, c, d)] == [JobState.AVAILABLE] + [JobState.WAITING] * 3
    assert d.depends_on == [b.id, c.id]
    for app in two_nodes:
        await app.start(queues={"default": 4})
    done = {
        name: await _final(first, job.id) for name, job in zip("ABCD", (a, b, c, d), strict=True)
    }
    assert {job.state for job in done.values()} == {JobState.COMPLETED}
    # Each job ran after its dependencies completed: it read every one's stored result (a
    # dependency not yet completed reads as None). (Not the rows' timestamps: a claim's
    # now() is when its statement arrived, which may be before a lock it waited for, and
    # so before the completion whose release it then saw.)
    assert done["A"].result == {"name": "A", "saw": []}
    assert done["B"].result == {"name": "B", "saw": ["A"]}
    assert done["C"].result == {"name": "C", "saw": ["A"]}
    assert done["D"].result == {"name": "D", "saw": ["B", "C"]}
    assert {done["B"].attempted_by, done["C"].attempted_by, done["D"].attempted_by} <= {
        first.node.id,  # type: ignore[union-attr]
        second.node.id,  # type: ignore[union-attr]
    }


async def test_a_discarded_dependency_cancels_its_dependents_with_reasons(
    fast_app: Shigoto,
) -> None:
    _register(fast_app)
    a, b, c, d = await fast_app.insert_all(_diamond(fail_a=True))
    await fast_app.start()
    done = {
        name: await _final(fast_app, job.id) for name, job in zip("ABCD", (a, b, c, d), strict=True)
    }
    assert done["A"].state is JobState.DISCARDED
    for name in "BCD":
        assert done[name].state is JobState.CANCELLED
        assert done[name].errors[-1]["error"] == "DependencyFailed"
        assert done[name].attempt == 0  # never ran
    assert done["B"].errors[-1]["message"] == f"dependency {a.id} was discarded"
    assert done["D"].errors[-1]["message"] in (
        f"dependency {b.id} was cancelled",
        f"dependency {c.id} was cancelled",
    )


async def test_a_job_may_run_whatever_its_dependencies_became(fast_app: Shigoto) -> None:
    _register(fast_app)
    a = await fast_app.insert(JobSpec.build("step", {"name": "A", "fail": True}))
    b = await fast_app.insert(
        JobSpec.build("step", {"name": "B"}, depends_on=[a.id], on_dependency_failure="run")
    )
    await fast_app.start()
    done = await _final(fast_app, b.id)
    assert done.state is JobState.COMPLETED
    assert done.result == {"name": "B", "saw": []}  # A's result is None: it did not complete


async def test_cycles_and_unknown_dependencies_are_refused(app: Shigoto) -> None:
    x = JobSpec.build("step", {"name": "X"}, depends_on=[Ref(2)])
    y = JobSpec.build("step", {"name": "Y"}, depends_on=[Ref(0)])
    z = JobSpec.build("step", {"name": "Z"}, depends_on=[Ref(1)])
    with pytest.raises(InvalidJobError, match=r"0 -> 2 -> 1 -> 0 form a cycle"):
        await app.insert_all([x, y, z])
    with pytest.raises(InvalidJobError, match="no job with id 999999"):
        await app.insert(JobSpec.build("step", {"name": "Q"}, depends_on=[999_999]))
    with pytest.raises(InvalidJobError, match="not in this insert_all call"):
        await app.insert_all([JobSpec.build("step", {}, depends_on=[Ref(5)])])
    with pytest.raises(InvalidJobError, match="insert_all only"):
        await app.insert(JobSpec.build("step", {}, depends_on=[Ref(0)]))
    assert (await app.list_jobs()).jobs == []  # nothing was written


async def test_a_dependency_already_completed_does_not_hold_a_job_back(
    fast_app: Shigoto,
) -> None:
    _register(fast_app)
    await fast_app.start()
    a = await fast_app.insert(JobSpec.build("step", {"name": "A"}))
    await _final(fast_app, a.id)
    b = await fast_app.insert(JobSpec.build("step", {"name": "B"}, depends_on=[a.id]))
    assert b.state is JobState.AVAILABLE
    assert (await _final(fast_app, b.id)).result == {"name": "B", "saw": ["A"]}


async def test_dependents_are_released_as_soon_as_their_dependencies_finish(
    dsn: str, schema: str, db
) -> None:
    # The stager's pass comes every 30 s here: only the node's own nudge can be this quick.
    app = Shigoto(**app_settings(dsn), schema=schema, **{**FAST, "stage_interval": 30.0})  # type: ignore[arg-type]
    _register(app)
    await app.migrate()
    chain = [JobSpec.build("step", {"name": "0"})]
    for n in range(1, 4):
        chain.append(JobSpec.build("step", {"name": str(n)}, depends_on=[chain[-1]]))
    # A job only a stager's pass can make available (it is due, but scheduled): once it
    # ran, the pass the stager makes at start is over.
    staged = await app.insert(JobSpec.build("step", {"name": "staged"}, scheduled_in=3600))
    await db.execute(
        sql.SQL("UPDATE {} SET scheduled_at = now() WHERE id = %s").format(
            sql.Identifier(schema, "jobs")
        ),
        [staged.id],
    )
    try:
        await app.start()
        await _final(app, staged.id)
        jobs = await app.insert_all(chain)
        last = await asyncio.wait_for(_final(app, jobs[-1].id), timeout=5)
    finally:
        await app.stop(timeout=0)
        await app.close()
    assert last.state is JobState.COMPLETED
