"""The worker runtime in one process: claiming, limits, order, outcomes, shutdown, signals."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import sql

from shigoto import (
    Cancel,
    Discard,
    Job,
    JobSpec,
    JobState,
    RetryAfter,
    Shigoto,
    Snooze,
    Worker,
    current_job,
    report_progress,
)
from shigoto.db import execution
from tests.conftest import FAST, app_settings, wait_until


async def _state(app: Shigoto, job_id: int) -> JobState | None:
    job = await app.get_job(job_id)
    return None if job is None else job.state


async def _final(app: Shigoto, job_id: int, timeout: float = 10.0) -> Job:
    async def finished() -> Job | None:
        job = await app.get_job(job_id)
        return job if job is not None and job.state.is_final else None

    return await wait_until(finished, timeout=timeout)  # type: ignore[return-value]


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


async def _all_in(app: Shigoto, state: JobState, total: int) -> bool:
    return (await app.status()).count(state) == total


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
    await _final(fast_app, soon.id)
    assert started["soon"] >= soon.scheduled_at
    assert started["now"] < soon.scheduled_at
    assert await _state(fast_app, later.id) is JobState.SCHEDULED
    assert now.id and "later" not in started


async def test_outcomes(fast_app: Shigoto) -> None:
    discarded: list[Job] = []

    @fast_app.worker(name="value")
    async def value() -> dict[str, int]:
        return {"answer": 42}

    @fast_app.worker(name="snooze")
    async def snooze() -> object:
        return Snooze(3600)

    @fast_app.worker(name="cancel")
    async def cancel() -> None:
        raise Cancel("not needed any more")

    @fast_app.worker(name="discard", on_discard=discarded.append)
    async def discard() -> object:
        return Discard("bad data")

    @fast_app.worker(name="retry_after", max_attempts=3)
    async def retry_after() -> None:
        raise RetryAfter(120, "rate limited")

    @fast_app.worker(name="timeout", timeout=0.2, max_attempts=1)
    async def timeout() -> None:
        await asyncio.sleep(30)

    @fast_app.worker(name="custom_backoff", max_attempts=2, backoff=lambda attempt, error: 500.0)
    async def custom_backoff() -> None:
        raise ConnectionError("upstream down")

    jobs = {
        name: await worker.enqueue()
        for name, worker in [
            ("value", value),
            ("snooze", snooze),
            ("cancel", cancel),
            ("discard", discard),
            ("retry_after", retry_after),
            ("timeout", timeout),
            ("custom_backoff", custom_backoff),
        ]
    }
    await fast_app.start()

    done = await _final(fast_app, jobs["value"].id)
    assert (done.state, done.result, done.attempt, done.progress) == (
        JobState.COMPLETED,
        {"answer": 42},
        1,
        100,
    )
    assert done.completed_at is not None

    async def settled(job_id: int, state: JobState) -> Job:
        async def check() -> Job | None:
            job = await fast_app.get_job(job_id)
            return job if job is not None and job.state is state else None

        return await wait_until(check)  # type: ignore[return-value]

    snoozed = await settled(jobs["snooze"].id, JobState.SCHEDULED)
    assert snoozed.attempt == 0 and snoozed.errors == []  # no attempt consumed
    assert timedelta(minutes=59) < snoozed.scheduled_at - datetime.now(UTC) <= timedelta(hours=1)

    cancelled = await settled(jobs["cancel"].id, JobState.CANCELLED)
    assert cancelled.cancelled_at is not None
    assert cancelled.errors[-1]["error"] == "Cancel"
    assert cancelled.errors[-1]["message"] == "not needed any more"

    gone = await settled(jobs["discard"].id, JobState.DISCARDED)
    assert gone.errors[-1]["message"] == "bad data" and gone.attempt == 1
    await wait_until(lambda: asyncio.sleep(0, result=discarded))
    assert [j.id for j in discarded] == [gone.id] and discarded[0].state is JobState.DISCARDED

    later = await settled(jobs["retry_after"].id, JobState.RETRYABLE)
    assert later.errors[-1]["error"] == "RetryAfter"
    assert later.errors[-1]["message"] == "rate limited"
    delay = (later.scheduled_at - later.attempted_at).total_seconds()  # type: ignore[operator]
    assert 119 < delay < 121

    timed_out = await settled(jobs["timeout"].id, JobState.DISCARDED)
    assert timed_out.errors[-1]["error"] == "TimeoutError"
    assert timed_out.errors[-1]["message"] == "timed out after 0.2s"

    backed_off = await settled(jobs["custom_backoff"].id, JobState.RETRYABLE)
    entry = backed_off.errors[-1]
    assert (entry["attempt"], entry["error"], entry["message"]) == (
        1,
        "ConnectionError",
        "upstream down",
    )
    assert "Traceback" in entry["traceback"] and "upstream down" in entry["traceback"]
    delay = (backed_off.scheduled_at - backed_off.attempted_at).total_seconds()  # type: ignore[operator]
    assert 499 < delay < 501


async def test_each_job_is_stopped_at_its_own_timeout(fast_app: Shigoto) -> None:
    """Jobs with different timeouts side by side: each is stopped at its own deadline,
    whatever order they started in; a plain function past its deadline fails with the
    same entry once it returns (a thread cannot be interrupted); a TimeoutError a job
    raises itself is its own failure, not a timeout."""

    @fast_app.worker(name="patient", timeout=30, max_attempts=1)
    async def patient() -> str:
        await asyncio.sleep(0.8)
        return "done"

    @fast_app.worker(name="hasty", timeout=0.3, max_attempts=1)
    async def hasty() -> None:
        await asyncio.sleep(30)

    @fast_app.worker(name="blocking", timeout=0.3, max_attempts=1)
    def blocking() -> None:
        time.sleep(3)

    @fast_app.worker(name="own_timeout", timeout=30, max_attempts=1)
    async def own_timeout() -> None:
        raise TimeoutError("upstream took too long")

    jobs = [await w.enqueue() for w in (patient, hasty, blocking, own_timeout)]
    await fast_app.start()
    finished = [await _final(fast_app, job.id) for job in jobs]
    done, stopped, given_up, failed = finished

    assert (done.state, done.result) == (JobState.COMPLETED, "done")
    for job in (stopped, given_up):
        assert job.state is JobState.DISCARDED
        assert (job.errors[-1]["error"], job.errors[-1]["message"]) == (
            "TimeoutError",
            "timed out after 0.3s",
        )
    ran_for = (stopped.discarded_at - stopped.attempted_at).total_seconds()  # type: ignore[operator]
    assert 0.25 < ran_for < 2  # at its deadline: not the patient job's
    ran_for = (given_up.discarded_at - given_up.attempted_at).total_seconds()  # type: ignore[operator]
    assert ran_for >= 2.9  # when its thread returned: it held its job until then
    assert (failed.errors[-1]["error"], failed.errors[-1]["message"]) == (
        "TimeoutError",
        "upstream took too long",
    )


async def test_a_sync_job_waiting_for_a_thread_does_not_time_out(dsn: str, schema: str) -> None:
    """A plain function's timeout counts from when a thread starts it: a job queued behind
    a busy thread (one thread, two slots) runs in full, not failed before it started."""
    app = Shigoto(dsn=dsn, schema=schema, sync_threads=1, **FAST)  # type: ignore[arg-type]
    ran: list[str] = []

    @app.worker(name="long", timeout=30)
    def long() -> None:
        time.sleep(1.0)
        ran.append("long")

    @app.worker(name="short", timeout=0.5, max_attempts=1)
    def short() -> None:
        time.sleep(0.1)
        ran.append("short")

    await app.migrate()
    first = await long.enqueue()
    second = await short.enqueue()
    try:
        await app.start(queues={"default": 2})
        done = [await _final(app, job.id) for job in (first, second)]
    finally:
        await app.stop(timeout=0)
        await app.close()
    assert [(job.state, job.errors) for job in done] == [(JobState.COMPLETED, [])] * 2
    assert ran == ["long", "short"]


async def test_failures_retry_until_discarded_with_the_error_history(fast_app: Shigoto) -> None:
    calls: list[int] = []

    @fast_app.worker(name="flaky", max_attempts=3, backoff=lambda attempt, error: 0.05)
    async def flaky() -> None:
        calls.append(current_job().attempt)
        raise ValueError(f"attempt {len(calls)} failed")

    job = await flaky.enqueue()
    await fast_app.start()
    done = await _final(fast_app, job.id)
    assert done.state is JobState.DISCARDED and done.discarded_at is not None
    assert calls == [1, 2, 3] and done.attempt == 3
    assert [e["attempt"] for e in done.errors] == [1, 2, 3]
    assert [e["message"] for e in done.errors] == [f"attempt {i} failed" for i in (1, 2, 3)]


async def test_sync_workers_run_in_threads_with_their_context(fast_app: Shigoto) -> None:
    loop_thread = threading.get_ident()

    @fast_app.worker(name="blocking")
    def blocking(n: int) -> dict[str, Any]:
        time.sleep(0.05)  # would stall every other job if it ran on the event loop
        report_progress(40)
        return {"n": n, "id": current_job().id, "thread": threading.get_ident()}

    @fast_app.worker(name="klass")
    class Klass(Worker):
        def perform(self, job: Job) -> object:
            return {"args": job.args, "thread": threading.get_ident()}

    jobs = [await blocking.enqueue({"n": i}) for i in range(4)] + [await Klass.enqueue({"x": 1})]
    await fast_app.start(queues={"default": 4})
    results = [(await _final(fast_app, job.id)).result for job in jobs]
    assert [r["n"] for r in results[:4]] == [0, 1, 2, 3]
    assert [r["id"] for r in results[:4]] == [j.id for j in jobs[:4]]
    assert results[4]["args"] == {"x": 1}
    assert loop_thread not in {r["thread"] for r in results}


async def test_report_progress_is_stored_while_running(fast_app: Shigoto) -> None:
    proceed = asyncio.Event()

    @fast_app.worker(name="progress")
    async def progress() -> None:
        report_progress(30)
        await proceed.wait()

    job = await progress.enqueue()
    await fast_app.start()

    async def stored() -> float | None:
        current = await fast_app.get_job(job.id)
        return current.progress if current and current.progress == 30 else None

    await wait_until(stored)
    proceed.set()
    assert (await _final(fast_app, job.id)).progress == 100


async def test_unknown_worker_fails_clearly_and_is_retried(fast_app: Shigoto, db, schema) -> None:
    job = await fast_app.insert(JobSpec.build("gone.worker", {}, max_attempts=5))
    await fast_app.start()

    async def failed_once() -> Job | None:
        current = await fast_app.get_job(job.id)
        return current if current and current.state is JobState.RETRYABLE else None

    failed: Job = await wait_until(failed_once)  # type: ignore[assignment]
    assert failed.errors[-1]["error"] == "UnknownWorkerError"
    assert "no worker named 'gone.worker' is registered on node" in failed.errors[-1]["message"]
    assert failed.attempt == 1 and failed.scheduled_at > datetime.now(UTC)


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
    assert await _state(fast_app, q.id) is JobState.COMPLETED
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
    assert [j.id for j in await fast_app._run(claim)] == [job.id]
    with caplog.at_level(logging.WARNING, logger="shigoto.node"):
        await fast_app.stop()
    returned = await fast_app.get_job(job.id)
    assert returned is not None
    assert (returned.state, returned.attempt, returned.errors) == (JobState.AVAILABLE, 0, [])
    assert "gave back 1 claimed job(s) that never started" in caplog.text


async def test_cancelling_a_running_job_interrupts_it(fast_app: Shigoto) -> None:
    started = asyncio.Event()
    interrupted = asyncio.Event()

    @fast_app.worker(name="long")
    async def long() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    job = await long.enqueue()
    await fast_app.start()
    await started.wait()
    assert await fast_app.cancel(job.id)
    await asyncio.wait_for(interrupted.wait(), 5)
    await fast_app.stop()
    final = await fast_app.get_job(job.id)
    assert final is not None and final.state is JobState.CANCELLED


async def test_an_insert_wakes_an_idle_node_without_polling(dsn: str, schema: str) -> None:
    app = Shigoto(**app_settings(dsn), schema=schema, poll_interval=60, stage_interval=60)
    await app.migrate()
    started = asyncio.Event()

    @app.worker(name="ping")
    async def ping() -> None:
        started.set()

    try:
        await app.start()
        assert app.node is not None and app.node.notifier is not None
        await asyncio.wait_for(app.node.notifier.connected.wait(), 5)
        await asyncio.sleep(0.3)  # the node's first (startup) claim is over
        await ping.enqueue()
        await asyncio.wait_for(started.wait(), 2)  # well before the 60 s poll
    finally:
        await app.stop()
        await app.close()


async def test_the_listener_reconnects_after_its_connection_is_killed(
    dsn: str, schema: str, db
) -> None:
    app = Shigoto(**app_settings(dsn), schema=schema, poll_interval=60, stage_interval=60)
    await app.migrate()
    seen: list[int] = []
    arrived = asyncio.Event()

    @app.worker(name="mark")
    async def mark(n: int) -> None:
        seen.append(n)
        arrived.set()

    try:
        await app.start()
        assert app.node is not None and app.node.notifier is not None
        notifier = app.node.notifier
        await asyncio.wait_for(notifier.connected.wait(), 5)
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'shigoto-listener' AND query LIKE %s",
            [f"%{schema}.jobs_inserted%"],
        )
        await wait_until(lambda: asyncio.sleep(0, result=notifier.connections == 2))
        await mark.enqueue({"n": 1})
        await asyncio.wait_for(arrived.wait(), 2)
        assert seen == [1]
    finally:
        await app.stop()
        await app.close()


async def test_queues_are_added_scaled_and_removed_at_runtime(fast_app: Shigoto) -> None:
    @fast_app.worker(name="q", queue="extra")
    async def q() -> None: ...

    await fast_app.start(queues={"default": 1})
    job = await q.enqueue()
    await asyncio.sleep(0.5)
    assert await _state(fast_app, job.id) is JobState.AVAILABLE  # nobody works "extra" yet
    await fast_app.add_queue("extra", 2)
    assert (await _final(fast_app, job.id)).state is JobState.COMPLETED
    await fast_app.scale_queue("extra", 5)
    assert fast_app.node is not None and fast_app.node.producers["extra"].limit == 5
    await fast_app.remove_queue("extra")
    assert "extra" not in fast_app.node.producers
    later = await q.enqueue()
    await asyncio.sleep(0.5)
    assert await _state(fast_app, later.id) is JobState.AVAILABLE


async def test_queue_changes_reach_every_node_by_signal(fast_app: Shigoto) -> None:
    @fast_app.worker(name="q", queue="broadcast")
    async def q() -> None: ...

    await fast_app.start(queues={"default": 1})
    assert fast_app.node is not None and fast_app.node.notifier is not None
    await asyncio.wait_for(fast_app.node.notifier.connected.wait(), 5)
    await fast_app.add_queue("broadcast", 3, everywhere=True)
    job = await q.enqueue()
    assert (await _final(fast_app, job.id)).state is JobState.COMPLETED
    assert fast_app.node.producers["broadcast"].limit == 3


async def test_a_crashing_component_is_restarted(fast_app: Shigoto, db, schema, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="shigoto")

    @fast_app.worker(name="after")
    async def after() -> None: ...

    await fast_app.start()
    nodes = sql.Identifier(schema, "nodes")
    hidden = sql.Identifier("nodes_hidden")
    await db.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(nodes, hidden))
    await wait_until(lambda: asyncio.sleep(0, result="component lifeline crashed" in caplog.text))
    await db.execute(
        sql.SQL("ALTER TABLE {} RENAME TO nodes").format(sql.Identifier(schema, "nodes_hidden"))
    )
    job = await after.enqueue()
    assert (await _final(fast_app, job.id)).state is JobState.COMPLETED
    assert fast_app.node is not None and fast_app.node.started

    async def heartbeat_is_fresh() -> bool:
        cur = await db.execute(
            sql.SQL("SELECT now() - heartbeat_at < interval '1 second' FROM {}").format(nodes)
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    await wait_until(heartbeat_is_fresh)


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
    done = await _final(fast_app, job.id)
    assert done.state is JobState.COMPLETED and done.result == "done"
    assert runs == ["start", "interrupted", "start"]
    # The stopped run counts, and the job says why it ran twice.
    assert done.attempt == 2
    assert [e["error"] for e in done.errors] == ["NodeFenced"]


async def test_drain_queue_runs_everything_and_counts_outcomes(app: Shigoto) -> None:
    snoozes: list[int] = []

    @app.worker(name="parent")
    async def parent(n: int) -> None:
        await child.enqueue({"n": n})

    @app.worker(name="child")
    async def child(n: int) -> int:
        if n == 2:
            raise ValueError("two")
        if n == 3 and not snoozes:
            snoozes.append(n)
            return Snooze(60)  # type: ignore[return-value]
        return n

    await app.insert_all([parent.new({"n": n}) for n in range(4)])
    counts = await app.drain_queue("default")
    assert counts == {"completed": 6, "retryable": 1, "discarded": 0, "cancelled": 0, "snoozed": 1}
    again = await app.drain_queue("default", with_scheduled=True)
    # The snoozed child completes; the failing one runs its two remaining attempts.
    assert again == {"completed": 1, "retryable": 1, "discarded": 1, "cancelled": 0, "snoozed": 0}


async def test_drain_stops_a_job_that_snoozes_for_ever(app: Shigoto) -> None:
    @app.worker(name="sleepy")
    async def sleepy() -> object:
        return Snooze(1)

    await sleepy.enqueue()
    with pytest.raises(Exception, match=r"ran 100 times in one drain"):
        await app.drain_queue("default", with_scheduled=True)


async def test_a_listener_that_dies_silently_is_found_by_the_probe(
    dsn: str, schema: str, db
) -> None:
    """A frozen backend keeps its connection open but delivers nothing (like a connection a
    NAT dropped without a reset). Only the NOTIFY round-trip probe can tell."""
    app = Shigoto(
        **app_settings(dsn), schema=schema, poll_interval=60, stage_interval=60, probe_interval=0.5
    )
    await app.migrate()
    arrived = asyncio.Event()

    @app.worker(name="mark")
    async def mark() -> None:
        arrived.set()

    frozen: list[int] = []
    try:
        await app.start()
        assert app.node is not None and app.node.notifier is not None
        notifier = app.node.notifier
        await asyncio.wait_for(notifier.connected.wait(), 5)
        cur = await db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'shigoto-listener' "
            "AND query LIKE %s",
            [f"%{schema}.jobs_inserted%"],
        )
        frozen = [row[0] for row in await cur.fetchall()]
        assert len(frozen) == 1
        os.kill(frozen[0], signal.SIGSTOP)
        await wait_until(lambda: asyncio.sleep(0, result=notifier.connections == 2), timeout=15)
        await mark.enqueue()
        await asyncio.wait_for(arrived.wait(), 2)  # woken by the new listener, not a poll
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        await app.stop()
        await app.close()


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


async def test_a_node_never_rescues_its_own_jobs(app: Shigoto, db, schema) -> None:
    """Found by the chaos suite: after an outage a node's own heartbeat is stale; it must
    not take its own jobs (whose outcomes may still be on their way) for orphans."""

    @app.worker(name="held")
    async def held() -> None: ...

    job = await held.enqueue()
    await app._run(execution.register_node(app.queries, "me", {"default": 1}, {}))
    await app._run(execution.claim(app.queries, queue="default", limit=1, node="me", fresh_for=60))
    nodes = sql.Identifier(schema, "nodes")
    await db.execute(
        sql.SQL("UPDATE {} SET heartbeat_at = now() - interval '1 hour'").format(nodes)
    )
    assert await app._run(execution.rescue(app.queries, node="me", node_timeout=60)) == []
    assert await _state(app, job.id) is JobState.EXECUTING
    rescued = await app._run(execution.rescue(app.queries, node="other", node_timeout=60))
    assert [j.id for j in rescued] == [job.id]
    assert rescued[0].state is JobState.AVAILABLE
    assert rescued[0].errors[-1]["error"] == "NodeLost"


async def test_a_cancel_the_node_did_not_hear_still_stops_the_job(dsn: str, schema: str) -> None:
    """Found by a flaky test: a cancel NOTIFY sent while a node's listener is away (or with
    no listener at all) is lost; the lifeline's audit still stops the job."""
    from tests.conftest import FAST

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
        assert await _state(app, job.id) is JobState.CANCELLED
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
    done = await _final(fast_app, job.id)
    assert done.state is JobState.COMPLETED and done.attempt == 2
    assert runs == [(1, "start"), (1, "stopped"), (2, "start"), (2, "end")]


async def test_a_node_that_cannot_heartbeat_stops_claiming(fast_app: Shigoto, db, schema) -> None:
    """Found by the long chaos run: a node whose heartbeat is stale must not claim, or
    another node rescues the job from under it."""

    @fast_app.worker(name="later")
    async def later() -> None: ...

    await fast_app.start()
    nodes = sql.Identifier(schema, "nodes")
    await db.execute(sql.SQL("ALTER TABLE {} RENAME TO nodes_away").format(nodes))
    await asyncio.sleep(1.0)  # past the node's fence time (0.6 s with these settings)
    job = await later.enqueue()
    await asyncio.sleep(1.0)
    assert await _state(fast_app, job.id) is JobState.AVAILABLE
    away = sql.Identifier(schema, "nodes_away")
    await db.execute(sql.SQL("ALTER TABLE {} RENAME TO nodes").format(away))
    assert (await _final(fast_app, job.id)).state is JobState.COMPLETED


async def test_a_node_with_a_stale_heartbeat_claims_nothing(app: Shigoto, db, schema) -> None:
    """Found by the long chaos run: a claim that waited for a connection during an outage
    must not go through once the node's heartbeat is stale in the database."""

    @app.worker(name="waiting")
    async def waiting() -> None: ...

    job = await waiting.enqueue()
    await app._run(execution.register_node(app.queries, "late", {"default": 1}, {}))
    nodes = sql.Identifier(schema, "nodes")
    await db.execute(
        sql.SQL("UPDATE {} SET heartbeat_at = now() - interval '1 minute'").format(nodes)
    )
    claim = execution.claim(app.queries, queue="default", limit=1, node="late", fresh_for=30)
    assert await app._run(claim) == []
    assert await _state(app, job.id) is JobState.AVAILABLE
    await app._run(execution.heartbeat(app.queries, "late", {"default": 1}))
    claim = execution.claim(app.queries, queue="default", limit=1, node="late", fresh_for=30)
    assert [j.id for j in await app._run(claim)] == [job.id]


async def test_an_outcome_the_database_refuses_holds_up_no_other_job(fast_app: Shigoto) -> None:
    # jsonb refuses the NUL character: this result cannot be stored. The executor finds it
    # before any write; the outcomes of the others, written with the node's claims, all land.
    @fast_app.worker(name="unstorable")
    async def unstorable() -> str:
        return "nul \x00 here"

    @fast_app.worker(name="plain")
    async def plain(n: int) -> int:
        await asyncio.sleep(0.001)
        return n

    bad = await fast_app.insert(JobSpec.build("unstorable", max_attempts=1))
    good = await fast_app.insert_all([JobSpec.build("plain", {"n": n}) for n in range(200)])
    await fast_app.start()
    refused = await _final(fast_app, bad.id)
    assert refused.state is JobState.DISCARDED
    assert refused.errors[-1]["error"] == "shigoto.outcomes.ResultNotStored"
    assert refused.errors[-1]["message"].startswith("result could not be stored: ")
    assert "NUL character" in refused.errors[-1]["message"]
    done = [await _final(fast_app, job.id) for job in good]
    assert [job.result for job in done] == list(range(200))
    assert {job.state for job in done} == {JobState.COMPLETED}


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
    done = await _final(fast_app, job.id)
    assert started == [1] and done.attempt == 1  # the given-back claim used no attempt


def test_the_default_backoff_leaves_the_global_random_alone() -> None:
    """A program that seeds `random` for repeatable runs gets the same numbers whether or
    not jobs failed meanwhile."""
    import random

    from shigoto.worker import default_backoff

    random.seed(7)
    expected = random.random()
    random.seed(7)
    delays = {default_backoff(2) for _ in range(20)}
    assert random.random() == expected
    assert len(delays) > 1 and all(16 <= d <= 46 for d in delays)  # still jittered
