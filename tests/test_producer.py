"""A queue's producer: it claims no more than the queue's limit, in order of priority,
then due time, then id, nothing before its time; queues added, scaled and removed at
runtime; a claim that races a pause or an insert."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from psycopg import sql

from shigoto import JobSpec, JobState, Shigoto, Snooze
from tests.conftest import FAST, Seen, app_settings, final, state_of, wait_until


async def _all_in(app: Shigoto, state: JobState, total: int) -> bool:
    return (await app.status()).count(state) == total


async def test_concurrency_never_exceeds_the_queue_limit(fast_app: Shigoto) -> None:
    running = {"slow": 0, "fast": 0}
    peak = {"slow": 0, "fast": 0}

    async def measure(queue: str) -> None:
        running[queue] += 1
        peak[queue] = max(peak[queue], running[queue])
        await asyncio.sleep(0.02)
        running[queue] -= 1

    @fast_app.worker(name="slow", queue="slow")
    async def slow() -> None:
        await measure("slow")

    @fast_app.worker(name="fast", queue="fast")
    async def fast() -> None:
        await measure("fast")

    await fast_app.insert_all([slow.new() for _ in range(40)] + [fast.new() for _ in range(40)])
    await fast_app.start(queues={"slow": 3, "fast": 7})
    await wait_until(lambda: _all_in(fast_app, JobState.COMPLETED, 80), timeout=20)
    assert peak == {"slow": 3, "fast": 7}


async def test_priority_then_scheduled_time_then_id(fast_app: Shigoto) -> None:
    order: list[str] = []

    @fast_app.worker(name="record")
    async def record(label: str) -> None:
        order.append(label)

    now = datetime.now(UTC)
    await record.enqueue({"label": "p0-old"}, priority=0, scheduled_at=now - timedelta(hours=2))
    await record.enqueue({"label": "p0-older"}, priority=0, scheduled_at=now - timedelta(hours=3))
    await record.enqueue({"label": "p5"}, priority=5)
    await record.enqueue({"label": "p-1"}, priority=-1, scheduled_at=now - timedelta(days=9))
    first = await record.enqueue({"label": "p10-a"}, priority=10)
    await record.enqueue({"label": "p10-b"}, priority=10, scheduled_at=first.scheduled_at)
    await fast_app.start(queues={"default": 1})
    await wait_until(lambda: _all_in(fast_app, JobState.COMPLETED, 6))
    assert order == ["p10-a", "p10-b", "p5", "p0-older", "p0-old", "p-1"]


async def test_scheduled_jobs_do_not_start_before_their_time(fast_app: Shigoto) -> None:
    started: dict[str, datetime] = {}

    @fast_app.worker(name="at")
    async def at(label: str) -> None:
        started[label] = datetime.now(UTC)

    soon = await at.enqueue({"label": "soon"}, scheduled_in=0.8)
    later = await at.enqueue({"label": "later"}, scheduled_in=60)
    now = await at.enqueue({"label": "now"})
    await fast_app.start()
    await final(fast_app, soon.id)
    assert started["soon"] >= soon.scheduled_at
    assert started["now"] < soon.scheduled_at
    assert await state_of(fast_app, later.id) is JobState.SCHEDULED
    assert now.id and "later" not in started


async def test_queues_are_added_scaled_and_removed_at_runtime(fast_app: Shigoto) -> None:
    @fast_app.worker(name="q", queue="extra")
    async def q() -> None: ...

    seen = Seen(fast_app, "queue.poll")

    def polls(queue: str) -> int:
        return len(seen.named("queue.poll", queue=queue))

    await fast_app.start(queues={"default": 1})
    job = await q.enqueue()
    await seen.more("queue.poll", 2, queue="default")  # a whole poll interval
    assert polls("extra") == 0  # nobody works "extra" yet
    assert await state_of(fast_app, job.id) is JobState.AVAILABLE
    await fast_app.add_queue("extra", 2)
    assert (await final(fast_app, job.id)).state is JobState.COMPLETED
    await fast_app.scale_queue("extra", 5)
    assert fast_app.node is not None and fast_app.node.producers["extra"].limit == 5
    await fast_app.remove_queue("extra")
    assert "extra" not in fast_app.node.producers
    removed_at = polls("extra")
    later = await q.enqueue()
    await seen.more("queue.poll", 2, queue="default")
    assert polls("extra") == removed_at
    assert await state_of(fast_app, later.id) is JobState.AVAILABLE


async def _slow_claims(db, schema: str) -> Callable[[], Awaitable[bool]]:  # type: ignore[no-untyped-def]
    """Claiming job n=1 takes half a second, inside the claim's statement (a trigger);
    returns a check that a claim is asleep in it right now."""
    await db.execute(
        sql.SQL(
            "CREATE FUNCTION {s}.slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF NEW.args->>'n' = '1' THEN PERFORM pg_sleep(0.5); END IF; RETURN NEW; "
            "END $$; "
            "CREATE TRIGGER slow_claim BEFORE UPDATE OF state ON {s}.jobs FOR EACH ROW "
            "WHEN (NEW.state = 'executing') EXECUTE FUNCTION {s}.slow_claim()"
        ).format(s=sql.Identifier(schema))
    )

    async def claim_asleep() -> bool:
        cur = await db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
            "AND application_name = 'shigoto'"
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    return claim_asleep


async def test_a_job_announced_while_a_claim_runs_is_not_left_for_the_poll(
    dsn: str, schema: str, db
) -> None:
    """An insert committed after a running claim took its snapshot is not in what that
    claim returns; its notification, which came meanwhile, must still bring a claim."""
    app = Shigoto(**app_settings(dsn), schema=schema, **{**FAST, "poll_interval": 30.0})  # type: ignore[arg-type]
    await app.migrate()
    started: dict[int, float] = {}

    @app.worker(name="w")
    async def w(n: int) -> None:
        started[n] = time.monotonic()

    claim_asleep = await _slow_claims(db, schema)
    try:
        await app.start()
        await app.insert(JobSpec.build("w", {"n": 1}))
        await wait_until(claim_asleep)
        inserted = time.monotonic()
        await app.insert(JobSpec.build("w", {"n": 2}))  # announced while the claim runs
        await wait_until(lambda: asyncio.sleep(0, 2 in started), timeout=10)
        assert started[2] - inserted < 5  # not the 30 s poll
    finally:
        await app.stop(timeout=0)
        await app.close()


async def test_a_claim_that_returns_after_a_pause_gives_its_jobs_back(
    fast_app: Shigoto, db, schema: str
) -> None:
    started: list[int] = []

    @fast_app.worker(name="w")
    async def w(n: int) -> None:
        started.append(n)

    claim_asleep = await _slow_claims(db, schema)
    await fast_app.start()
    job = await fast_app.insert(JobSpec.build("w", {"n": 1}))
    await wait_until(claim_asleep)
    fast_app.pause()  # the claim is on its way: what it takes must not start

    async def given_back() -> bool:
        found = await fast_app.get_job(job.id)
        return bool(found and found.attempted_at and found.state is JobState.AVAILABLE)

    await wait_until(given_back)
    assert started == []
    fast_app.resume()
    done = await final(fast_app, job.id)
    assert started == [1] and done.attempt == 1  # the given-back claim used no attempt


async def test_a_job_claimed_again_while_its_last_run_is_told_of_is_tracked(
    fast_app: Shigoto,
) -> None:
    """A snoozed job is claimed again with the same attempt (a snooze refunds it), maybe
    while its last run still waits to hear of its write: the new run is the one running
    (a cancel reaches it), and the job's events keep their order."""
    runs = 0
    blocked = asyncio.Event()

    @fast_app.worker(name="twice")
    async def twice() -> object:
        nonlocal runs
        runs += 1
        if runs == 1:
            return Snooze(0)
        blocked.set()
        await asyncio.sleep(3600)
        return None

    seen = Seen(fast_app)  # an outcome subscriber: runs wait for their writes
    job = await fast_app.enqueue("twice")
    await fast_app.start()
    await asyncio.wait_for(blocked.wait(), 10)
    producer = fast_app.node.producers["default"]  # type: ignore[union-attr]
    assert [key for key in producer.running] == [(job.id, 1)]
    assert await fast_app.cancel(job.id)
    assert await state_of(fast_app, job.id) is JobState.CANCELLED
    await wait_until(lambda: asyncio.sleep(0, not producer.running))
    names = [e.name for e in seen.of(job.id) if e.node is not None]
    assert names == ["job.claimed", "job.started", "job.snoozed", "job.claimed", "job.started"]
