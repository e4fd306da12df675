"""Pause and resume (jobs, queues, nodes), fair claiming across partitions, queue weights."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import pytest
from psycopg import sql

from shigoto import ConfigurationError, JobSpec, JobState, Shigoto
from tests.conftest import FAST, Seen, wait_until


async def _states(app: Shigoto, ids: list[int]) -> list[JobState]:
    jobs = [await app.get_job(job_id) for job_id in ids]
    return [job.state for job in jobs if job is not None]


async def _all_in(app: Shigoto, ids: list[int], state: JobState) -> bool:
    return await _states(app, ids) == [state] * len(ids)


@pytest.fixture
async def two_nodes(dsn: str, schema: str) -> AsyncIterator[list[Shigoto]]:
    """Two apps on one schema, each to run a node in this process, sharing a worker."""
    apps = [Shigoto(dsn=dsn, schema=schema, **FAST) for _ in range(2)]  # type: ignore[arg-type]
    for app in apps:
        app.worker(name="work")(_work)
    await apps[0].migrate()
    yield apps
    for app in apps:
        await app.stop(timeout=0)
        await app.close()


async def _work(seconds: float = 0.0) -> None:
    await asyncio.sleep(seconds)


async def test_a_paused_queue_claims_nothing_on_any_node_until_resumed(two_nodes) -> None:
    first, second = two_nodes
    seen = [Seen(app, "queue.poll") for app in two_nodes]
    await first.pause_queue("held")
    assert await second.is_queue_paused("held") and not await second.is_queue_paused("default")
    held = await first.insert_all([JobSpec.build("work", queue="held") for _ in range(5)])
    flowing = await first.insert_all([JobSpec.build("work") for _ in range(5)])
    for app in two_nodes:
        await app.start(queues={"held": 2, "default": 2})
    # The other queue proves both nodes are claiming; the held one stays untouched.
    await wait_until(lambda: _all_in(first, [j.id for j in flowing], JobState.COMPLETED))
    for polls in seen:  # every node polls the held queue twice more, a whole poll interval
        await polls.more("queue.poll", 2, queue="held")
    assert await _all_in(first, [j.id for j in held], JobState.AVAILABLE)
    # Persisted: a node started after the pause does not claim them either.
    await second.stop(timeout=0)
    await second.start(queues={"held": 2})
    await seen[1].more("queue.poll", 2, queue="held")
    assert await _all_in(first, [j.id for j in held], JobState.AVAILABLE)
    for polls in seen:
        assert {e.data["claimed"] for e in polls.named("queue.poll", queue="held")} == {0}

    await second.resume_queue("held")
    assert not await first.is_queue_paused("held")
    await wait_until(lambda: _all_in(first, [j.id for j in held], JobState.COMPLETED))


async def test_a_paused_job_is_skipped_while_the_others_run(fast_app: Shigoto) -> None:
    fast_app.worker(name="work")(_work)
    seen = Seen(fast_app, "queue.poll", "job.claimed")
    paused, *others = await fast_app.insert_all([JobSpec.build("work") for _ in range(6)])
    assert await fast_app.pause_job(paused.id)
    assert await fast_app.is_job_paused(paused.id)
    await fast_app.start()
    await wait_until(lambda: _all_in(fast_app, [j.id for j in others], JobState.COMPLETED))
    await seen.more("queue.poll", 2, queue="default")  # a whole poll interval
    assert await _states(fast_app, [paused.id]) == [JobState.PAUSED]
    assert seen.named("job.claimed", job_id=paused.id) == []

    assert await fast_app.resume_job(paused.id)
    assert not await fast_app.resume_job(paused.id)  # not paused any more
    await wait_until(lambda: _all_in(fast_app, [paused.id], JobState.COMPLETED))
    done = await fast_app.get_job(paused.id)
    assert done is not None and done.attempt == 1


async def test_pausing_a_running_job_interrupts_it_and_refunds_its_attempt(
    fast_app: Shigoto,
) -> None:
    started = asyncio.Event()

    @fast_app.worker(name="long")
    async def long() -> None:
        started.set()
        await asyncio.sleep(60)

    job = await fast_app.enqueue("long")
    await fast_app.start()
    await asyncio.wait_for(started.wait(), 10)
    # The pause reaches a running job by signal only: a node whose listener is not connected
    # yet never hears of it (nothing audits pauses as the lifeline audits cancels).
    assert fast_app.node is not None and fast_app.node.notifier is not None
    await asyncio.wait_for(fast_app.node.notifier.connected.wait(), 5)
    assert await fast_app.pause_job(job.id)
    await wait_until(lambda: _all_in(fast_app, [job.id], JobState.PAUSED))
    paused = await fast_app.get_job(job.id)
    assert paused is not None and paused.attempt == 0 and paused.errors == []
    assert not await fast_app.pause_job(10**12)  # no such job


async def test_aggressive_node_pause_returns_running_jobs_to_the_queue(fast_app: Shigoto) -> None:
    running = 0
    both_running = asyncio.Event()

    @fast_app.worker(name="long")
    async def long() -> None:
        nonlocal running
        running += 1
        if running == 2:
            both_running.set()
        await asyncio.sleep(60)

    jobs = await fast_app.insert_all([JobSpec.build("long") for _ in range(2)])
    await fast_app.start(queues={"default": 2})
    await asyncio.wait_for(both_running.wait(), 10)
    fast_app.pause(mode="aggressive")
    await wait_until(lambda: _all_in(fast_app, [j.id for j in jobs], JobState.AVAILABLE))
    # Paused, the node claims nothing, and so publishes nothing to wait for: it must hold
    # still through this window of three polls.
    await asyncio.sleep(3 * FAST["poll_interval"])
    for job in jobs:
        back = await fast_app.get_job(job.id)
        assert back is not None and back.state is JobState.AVAILABLE and back.attempt == 0
    fast_app.resume()
    await wait_until(lambda: _all_in(fast_app, [j.id for j in jobs], JobState.EXECUTING))
    with pytest.raises(ValueError, match="mode"):
        fast_app.pause(mode="sideways")


async def test_graceful_node_pause_lets_running_jobs_finish(fast_app: Shigoto) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    @fast_app.worker(name="gated")
    async def gated() -> None:
        started.set()
        await release.wait()

    first = await fast_app.enqueue("gated")
    await fast_app.start(queues={"default": 2})
    await asyncio.wait_for(started.wait(), 10)
    fast_app.pause()
    second = await fast_app.enqueue("gated")
    release.set()
    await wait_until(lambda: _all_in(fast_app, [first.id], JobState.COMPLETED))
    # Paused, the node claims nothing, and so publishes nothing to wait for: it must hold
    # still through this window of three polls.
    await asyncio.sleep(3 * FAST["poll_interval"])
    assert await _states(fast_app, [second.id]) == [JobState.AVAILABLE]
    fast_app.resume()
    await wait_until(lambda: _all_in(fast_app, [second.id], JobState.COMPLETED))


async def test_pausing_a_node_that_is_not_running_is_an_error(app: Shigoto) -> None:
    with pytest.raises(ConfigurationError, match="start"):
        app.pause()


async def test_fair_claiming_does_not_starve_a_small_partition(dsn: str, schema: str, db) -> None:
    app = Shigoto(dsn=dsn, schema=schema, fair_queues=("tenants",), **FAST)  # type: ignore[arg-type]
    app.worker(name="work", queue="tenants")(_work)
    await app.migrate()
    big = [JobSpec.build("work", queue="tenants", partition_key="A") for _ in range(10_000)]
    small = [JobSpec.build("work", queue="tenants", partition_key="B") for _ in range(10)]
    await app.insert_all(big + small)  # B's jobs are the newest: last in plain order
    try:
        await app.start(queues={"tenants": 10})
        await wait_until(lambda: _completed(db, schema, at_least=1_000), timeout=60)
    finally:
        await app.stop(timeout=0)
        await app.close()
    cur = await db.execute(
        sql.SQL(
            "SELECT partition_key FROM {} WHERE state = 'completed' ORDER BY completed_at, id"
        ).format(sql.Identifier(schema, "jobs"))
    )
    order = [row[0] for row in await cur.fetchall()]
    positions = [i for i, key in enumerate(order) if key == "B"]
    assert len(positions) == 10
    assert max(positions) < 300, positions


async def test_fair_claiming_rotates_partitions_claim_by_claim(dsn: str, schema: str) -> None:
    """With one slot each claim takes one job: the partitions must still take turns, so
    "small", inserted after 50 jobs of "big", is not served last."""
    app = Shigoto(dsn=dsn, schema=schema, fair_queues=("tenants",), **FAST)  # type: ignore[arg-type]
    order: list[str] = []

    @app.worker(name="note", queue="tenants")
    async def note(key: str) -> None:
        order.append(key)

    await app.migrate()
    big = [note.new({"key": "big"}, partition_key="big") for _ in range(50)]
    small = [note.new({"key": "small"}, partition_key="small") for _ in range(5)]
    unkeyed = [note.new({"key": "none"}) for _ in range(5)]
    await app.insert_all(big + small + unkeyed)
    try:
        await app.start(queues={"tenants": 1})
        await wait_until(lambda: asyncio.sleep(0, result=len(order) == 60), timeout=60)
    finally:
        await app.stop(timeout=0)
        await app.close()
    # Each turn serves every partition that has jobs left: none, big, small, none, ...
    assert order[:15] == ["none", "big", "small"] * 5, order


async def _completed(db, schema: str, at_least: int) -> bool:
    cur = await db.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE state = 'completed'").format(
            sql.Identifier(schema, "jobs")
        )
    )
    row = await cur.fetchone()
    return bool(row and row[0] >= at_least)


async def test_a_heavier_queue_is_polled_more_often(dsn: str, schema: str) -> None:
    # No notifier: jobs are found by polling alone. "heavy" polls every 0.05 s, "light"
    # (weight 1 of 5) every 0.25 s, so a job waits for its queue's poll accordingly.
    app = Shigoto(
        dsn=dsn,
        schema=schema,
        notifier=False,
        poll_interval=0.05,
        queue_weights={"heavy": 5, "light": 1},
        heartbeat_interval=FAST["heartbeat_interval"],
    )
    started: dict[int, float] = {}

    async def note(job_id: int = 0) -> None:
        started[job_id] = time.monotonic()

    app.worker(name="note")(note)
    await app.migrate()
    waits: dict[str, list[float]] = {"heavy": [], "light": []}
    try:
        await app.start(queues={"heavy": 1, "light": 1})
        for k in range(16):
            queue = "heavy" if k % 2 else "light"
            inserted = time.monotonic()
            await app.insert(JobSpec.build("note", {"job_id": k}, queue=queue))
            await wait_until(lambda k=k: asyncio.sleep(0, k in started), timeout=5, every=0.005)
            waits[queue].append(started[k] - inserted)
            await asyncio.sleep(0.013 * (k % 5))  # spread insert times over the poll cycles
    finally:
        await app.stop(timeout=0)
        await app.close()
    heavy, light = statistics.mean(waits["heavy"]), statistics.mean(waits["light"])
    assert light > 2 * heavy, (heavy, light)


def test_weights_and_fair_queues_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="queue_weights"):
        Shigoto(dsn="postgresql://x", queue_weights={"q": 0})
    with pytest.raises(ConfigurationError, match="fair_queues"):
        Shigoto(dsn="postgresql://x", fair_queues=("",))
