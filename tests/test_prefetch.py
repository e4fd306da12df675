"""Prefetch: a queue claims jobs beyond its free slots; they wait on the node for a slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shigoto import Config, ConfigurationError, Job, JobSpec, JobState, Shigoto
from shigoto.runtime.slots import Slots
from tests.conftest import FAST, wait_until


@pytest.fixture
async def prefetching(dsn: str, schema: str) -> AsyncIterator[Shigoto]:
    """Two slots and a prefetch of three: a claim takes up to five jobs."""
    app = Shigoto(dsn=dsn, schema=schema, queues={"default": 2}, prefetch=3, **FAST)  # type: ignore[arg-type]
    await app.migrate()
    yield app
    await app.stop(timeout=0)
    await app.close()


async def _states(app: Shigoto, jobs: list[Job]) -> list[tuple[JobState, int]]:
    found = [await app.get_job(job.id) for job in jobs]
    return [(job.state, job.attempt) for job in found if job is not None]


async def _count(app: Shigoto, jobs: list[Job], state: JobState) -> int:
    return sum(1 for found, _ in await _states(app, jobs) if found is state)


async def test_prefetched_jobs_wait_for_a_slot_and_the_limit_holds(prefetching: Shigoto) -> None:
    release = asyncio.Event()
    started: list[int] = []
    running = peak = 0

    @prefetching.worker(name="gated")
    async def gated(n: int) -> None:
        nonlocal running, peak
        started.append(n)
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    jobs = await prefetching.insert_all([gated.new({"n": n}) for n in range(6)])
    await prefetching.start()
    # One claim takes five: two run, three wait here, claimed; the sixth stays available.
    await wait_until(lambda: _count_is(prefetching, jobs, JobState.EXECUTING, 5))
    # No claim while every slot has a job: the producer then does nothing it could publish,
    # so this window of three polls is where it must hold still.
    await asyncio.sleep(3 * FAST["poll_interval"])
    assert sorted(started) == [0, 1]
    assert await _states(prefetching, jobs[5:]) == [(JobState.AVAILABLE, 0)]
    release.set()
    await wait_until(lambda: _count_is(prefetching, jobs, JobState.COMPLETED, 6))
    assert peak == 2
    assert sorted(started) == list(range(6))


async def _count_is(app: Shigoto, jobs: list[Job], state: JobState, count: int) -> bool:
    return await _count(app, jobs, state) == count


async def test_held_jobs_go_back_to_the_queue_unused_when_the_node_stops(
    prefetching: Shigoto,
) -> None:
    started: list[int] = []

    @prefetching.worker(name="endless")
    async def endless(n: int) -> None:
        started.append(n)
        await asyncio.sleep(3600)

    jobs = await prefetching.insert_all([endless.new({"n": n}) for n in range(5)])
    await prefetching.start()
    await wait_until(lambda: _count_is(prefetching, jobs, JobState.EXECUTING, 5))
    await prefetching.stop(timeout=0.2)
    assert len(started) == 2
    # Held or interrupted by the stop: back to the queue, no attempt used, no error.
    assert await _states(prefetching, jobs) == [(JobState.AVAILABLE, 0)] * 5
    for job in jobs:
        found = await prefetching.get_job(job.id)
        assert found is not None and found.errors == []


async def test_a_graceful_pause_returns_held_jobs_and_lets_running_ones_finish(
    prefetching: Shigoto,
) -> None:
    release = asyncio.Event()

    @prefetching.worker(name="gated")
    async def gated(n: int) -> None:
        await release.wait()

    jobs = await prefetching.insert_all([gated.new({"n": n}) for n in range(5)])
    await prefetching.start()
    await wait_until(lambda: _count_is(prefetching, jobs, JobState.EXECUTING, 5))
    prefetching.pause()
    await wait_until(lambda: _count_is(prefetching, jobs, JobState.AVAILABLE, 3))
    release.set()
    await wait_until(lambda: _count_is(prefetching, jobs, JobState.COMPLETED, 2))
    # Paused, nothing more is claimed, and nothing is published to wait for: a window of
    # three polls where the node must hold still.
    await asyncio.sleep(3 * FAST["poll_interval"])
    assert sorted(await _states(prefetching, jobs)) == sorted(
        [(JobState.COMPLETED, 1)] * 2 + [(JobState.AVAILABLE, 0)] * 3
    )


async def test_a_held_job_that_is_cancelled_never_runs(prefetching: Shigoto) -> None:
    release = asyncio.Event()
    started: list[int] = []

    @prefetching.worker(name="gated")
    async def gated(n: int) -> None:
        started.append(n)
        await release.wait()

    jobs = await prefetching.insert_all(
        [JobSpec.build("gated", {"n": n}, priority=10 - n) for n in range(3)]
    )
    await prefetching.start()
    await wait_until(lambda: _count_is(prefetching, jobs, JobState.EXECUTING, 3))
    assert sorted(started) == [0, 1]  # the highest priorities run; job 2 is held
    assert await prefetching.cancel(jobs[2].id)
    assert prefetching.node is not None
    claimed = prefetching.node.producers["default"].running

    async def dropped() -> bool:  # the node heard of the cancel (a NOTIFY) and let it go
        return len(claimed) == 2

    await wait_until(dropped)
    release.set()
    await wait_until(lambda: _count_is(prefetching, jobs, JobState.COMPLETED, 2))
    assert sorted(started) == [0, 1]
    assert (await _states(prefetching, jobs[2:])) == [(JobState.CANCELLED, 1)]


def test_prefetch_is_validated_and_read_from_the_environment() -> None:
    with pytest.raises(ConfigurationError, match="prefetch: must be between 0 and 10000"):
        Shigoto(dsn="postgresql://unused", prefetch=-1)
    assert Shigoto(dsn="postgresql://unused").config.prefetch == 0
    assert Config.from_env({"SHIGOTO_PREFETCH": "40"}).prefetch == 40


async def test_slots_admit_waiters_in_turn_and_follow_a_new_limit() -> None:
    slots = Slots(1)
    assert slots.try_take() and not slots.try_take()
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.take()
        order.append(name)

    first, second, third = (asyncio.create_task(wait(n)) for n in ("a", "b", "c"))
    await asyncio.sleep(0)
    second.cancel()  # a waiter that leaves gives up its turn
    await asyncio.sleep(0)
    slots.give_back()
    await first
    assert order == ["a"] and slots.taken == 1
    slots.resize(2)  # a bigger limit admits at once
    await third
    assert order == ["a", "c"] and slots.taken == 2
    slots.resize(1)  # a smaller one as slots are given back
    slots.give_back()
    assert not slots.try_take()
    slots.give_back()
    assert slots.try_take()
