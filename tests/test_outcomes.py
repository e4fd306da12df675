"""What a run's end writes: a value, Snooze, Cancel, Discard, RetryAfter, a timeout, a
failure and its backoff, an unknown worker, a result the database refuses; and
drain_queue's counts of them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from shigoto import (
    Cancel,
    Discard,
    Job,
    JobSpec,
    JobState,
    RetryAfter,
    Shigoto,
    Snooze,
    current_job,
)
from tests.conftest import final, wait_until


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

    done = await final(fast_app, jobs["value"].id)
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


async def test_failures_retry_until_discarded_with_the_error_history(fast_app: Shigoto) -> None:
    calls: list[int] = []

    @fast_app.worker(name="flaky", max_attempts=3, backoff=lambda attempt, error: 0.05)
    async def flaky() -> None:
        calls.append(current_job().attempt)
        raise ValueError(f"attempt {len(calls)} failed")

    job = await flaky.enqueue()
    await fast_app.start()
    done = await final(fast_app, job.id)
    assert done.state is JobState.DISCARDED and done.discarded_at is not None
    assert calls == [1, 2, 3] and done.attempt == 3
    assert [e["attempt"] for e in done.errors] == [1, 2, 3]
    assert [e["message"] for e in done.errors] == [f"attempt {i} failed" for i in (1, 2, 3)]


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
    refused = await final(fast_app, bad.id)
    assert refused.state is JobState.DISCARDED
    assert refused.errors[-1]["error"] == "shigoto.outcomes.ResultNotStored"
    assert refused.errors[-1]["message"].startswith("result could not be stored: ")
    assert "NUL character" in refused.errors[-1]["message"]
    done = [await final(fast_app, job.id) for job in good]
    assert [job.result for job in done] == list(range(200))
    assert {job.state for job in done} == {JobState.COMPLETED}


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
