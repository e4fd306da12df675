"""What a run's end writes: a value, Snooze, Cancel, Discard, RetryAfter, a timeout, a
failure and its backoff, an unknown worker, a result the database refuses; and
drain_queue's counts of them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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


@dataclass(frozen=True)
class Outcome:
    """A worker that ends its run one way, the state its job settles in, and what else the
    stored job must show (`check(job)`)."""

    perform: Callable[[], Awaitable[object]]
    state: JobState
    check: Callable[[Job], None]
    options: dict[str, Any] = field(default_factory=dict)


async def _value() -> dict[str, int]:
    return {"answer": 42}


def _completed(job: Job) -> None:
    assert (job.result, job.attempt, job.progress) == ({"answer": 42}, 1, 100)
    assert job.completed_at is not None


async def _snooze() -> object:
    return Snooze(3600)


def _snoozed(job: Job) -> None:
    assert job.attempt == 0 and job.errors == []  # no attempt consumed
    assert timedelta(minutes=59) < job.scheduled_at - datetime.now(UTC) <= timedelta(hours=1)


async def _cancel() -> None:
    raise Cancel("not needed any more")


def _cancelled(job: Job) -> None:
    assert job.cancelled_at is not None
    assert job.errors[-1]["error"] == "Cancel"
    assert job.errors[-1]["message"] == "not needed any more"


async def _discard() -> object:
    return Discard("bad data")


def _discarded(job: Job) -> None:
    assert job.errors[-1]["message"] == "bad data" and job.attempt == 1


async def _retry_after() -> None:
    raise RetryAfter(120, "rate limited")


def _retry_later(job: Job) -> None:
    assert job.errors[-1]["error"] == "RetryAfter"
    assert job.errors[-1]["message"] == "rate limited"
    delay = (job.scheduled_at - job.attempted_at).total_seconds()  # type: ignore[operator]
    assert 119 < delay < 121


async def _too_long() -> None:
    await asyncio.sleep(30)  # its work: longer than its timeout


def _timed_out(job: Job) -> None:
    assert job.errors[-1]["error"] == "TimeoutError"
    assert job.errors[-1]["message"] == "timed out after 0.2s"


async def _fail() -> None:
    raise ConnectionError("upstream down")


def _backed_off(job: Job) -> None:
    entry = job.errors[-1]
    assert (entry["attempt"], entry["error"], entry["message"]) == (
        1,
        "ConnectionError",
        "upstream down",
    )
    assert "Traceback" in entry["traceback"] and "upstream down" in entry["traceback"]
    delay = (job.scheduled_at - job.attempted_at).total_seconds()  # type: ignore[operator]
    assert 499 < delay < 501


OUTCOMES = {
    "value": Outcome(_value, JobState.COMPLETED, _completed),
    "snooze": Outcome(_snooze, JobState.SCHEDULED, _snoozed),
    "cancel": Outcome(_cancel, JobState.CANCELLED, _cancelled),
    "discard": Outcome(_discard, JobState.DISCARDED, _discarded),
    "retry_after": Outcome(_retry_after, JobState.RETRYABLE, _retry_later, {"max_attempts": 3}),
    "timeout": Outcome(
        _too_long, JobState.DISCARDED, _timed_out, {"timeout": 0.2, "max_attempts": 1}
    ),
    "custom_backoff": Outcome(
        _fail,
        JobState.RETRYABLE,
        _backed_off,
        {"max_attempts": 2, "backoff": lambda attempt, error: 500.0},
    ),
}


@pytest.mark.parametrize("name", OUTCOMES)
async def test_each_outcome_is_written_as_the_run_ended(fast_app: Shigoto, name: str) -> None:
    """Nothing subscribes to events here: the node takes its quickest path, where an outcome
    rides with the next claim and nobody waits for its write (but for a discard's
    `on_discard`)."""
    outcome = OUTCOMES[name]
    discarded: list[Job] = []
    fast_app.worker(name=name, on_discard=discarded.append, **outcome.options)(outcome.perform)
    job = await fast_app.enqueue(name)
    await fast_app.start()

    async def settled() -> Job | None:
        found = await fast_app.get_job(job.id)
        return found if found is not None and found.state is outcome.state else None

    stored: Job = await wait_until(settled)  # type: ignore[assignment]
    outcome.check(stored)
    if outcome.state is JobState.DISCARDED:
        # on_discard runs once the discard is written: with the job as it now reads.
        await wait_until(lambda: asyncio.sleep(0, result=discarded))
        assert [j.id for j in discarded] == [job.id] and discarded[0].state is JobState.DISCARDED
    else:
        assert discarded == []


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
