"""The loop the periodic components share (`runtime._component.Periodic`): when a step
runs, what a poke, a step's answer, a database fault, a gate, `Finished` and a
cancellation do. Driven by a step that counts its calls; a test waits for a count, never
for time to pass, and an interval that must not elapse is an hour."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from shigoto import DatabaseUnavailable, Shigoto
from shigoto.runtime._component import Finished, Periodic
from shigoto.runtime.leader import Leader
from shigoto.runtime.retrying import Backoff
from tests.conftest import wait_until

HOUR = 3600.0
LOGGER = "shigoto.test_component"


class Calls:
    """Counts calls (`note()`); `await reached(n)` returns once there have been n."""

    def __init__(self) -> None:
        self.calls = 0
        self.times: list[float] = []
        self._called = asyncio.Event()

    def note(self) -> None:
        self.calls += 1
        self.times.append(asyncio.get_running_loop().time())
        self._called.set()

    async def reached(self, calls: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.calls < calls:
                self._called.clear()
                await self._called.wait()


class Step(Calls):
    """A step that counts its calls and answers each with the next of `answers` (a wait,
    None, or an exception to raise; None once they run out)."""

    def __init__(self, *answers: float | BaseException | None) -> None:
        super().__init__()
        self.answers = list(answers)

    async def __call__(self) -> float | None:
        self.note()
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, BaseException):
            raise answer
        return answer


def periodic(step: Any, **options: Any) -> Periodic:
    options.setdefault("interval", HOUR)
    return Periodic(step, logger=logging.getLogger(LOGGER), failed="testing failed", **options)


@asynccontextmanager
async def running(loop: Periodic) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(loop.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def settle() -> None:
    """Let every ready task run to its next real wait (no timer is involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_first_step_runs_at_once_then_every_interval() -> None:
    step = Step()
    async with running(periodic(step)):
        await step.reached(1)  # long before the hour
        await settle()
        assert step.calls == 1  # then it waits its interval
    step = Step()
    async with running(periodic(step, interval=0.05)):
        await step.reached(4)
    gaps = [later - earlier for earlier, later in itertools.pairwise(step.times)]
    assert min(gaps) >= 0.049, gaps


async def test_a_first_step_after_one_interval_waits_for_it_or_a_poke() -> None:
    step = Step()
    loop = periodic(step, at_once=False)
    async with running(loop):
        await settle()
        assert step.calls == 0
        loop.poke()
        await step.reached(1)
        await settle()
        assert step.calls == 1  # a poke is used up by the wait it ends


async def test_a_poke_during_a_step_makes_the_next_one_come_at_once() -> None:
    release = asyncio.Event()
    step = Step()

    async def slow_step() -> float | None:
        await step()
        if step.calls == 1:
            await release.wait()
        return None

    loop = periodic(slow_step)
    async with running(loop):
        await step.reached(1)
        loop.poke()  # while the first step is still under way
        release.set()
        await step.reached(2)


async def test_a_step_says_how_long_to_wait_and_the_interval_may_change() -> None:
    step = Step(0.0, 0.0, None)  # twice "at once", then the interval
    loop = periodic(step)
    async with running(loop):
        await step.reached(3)
        await settle()
        assert step.calls == 3  # waiting the hour now
        loop.interval = 0.01  # takes effect from the next wait on
        loop.poke()
        await step.reached(6)


@pytest.mark.parametrize("level", [logging.WARNING, logging.DEBUG])
async def test_a_database_fault_is_logged_and_the_step_tried_again_after_the_interval(
    level: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    step = Step(DatabaseUnavailable("the server is away"), None)
    async with running(periodic(step, interval=0.05, fault_level=level)) as task:
        await step.reached(2)
        assert not task.done()
    assert step.times[1] - step.times[0] >= 0.049
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == level
    assert record.getMessage() == "testing failed: the server is away"


async def test_with_a_backoff_the_retries_grow_and_a_success_resets_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    down = DatabaseUnavailable("down")
    step = Step(down, down, None, down)
    loop = periodic(step, backoff=Backoff((0.02, 0.04)))
    async with running(loop):
        await step.reached(3)  # two retries, far sooner than the interval
        loop.poke()  # past the success's hour-long wait
        await step.reached(4)
        await asyncio.sleep(0)  # the fault's record is written as the step returns
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert messages == [
        "testing failed, retrying in 0.02s: down",
        "testing failed, retrying in 0.04s: down",
        "testing failed, retrying in 0.02s: down",  # reset by the success
    ]
    assert step.times[1] - step.times[0] >= 0.019
    assert step.times[2] - step.times[1] >= 0.039


async def test_a_restarted_loop_backs_off_from_the_shortest_delay_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    down = DatabaseUnavailable("down")
    step = Step(down, ValueError("a bug"), down, Finished())
    loop = periodic(step, backoff=Backoff((0.01, 0.02)))
    with pytest.raises(ValueError):
        await asyncio.wait_for(loop.run(), 10)
    await asyncio.wait_for(loop.run(), 10)  # as the node's supervisor restarts it
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert messages == ["testing failed, retrying in 0.01s: down"] * 2


async def test_any_other_error_ends_the_loop_for_the_supervisor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    step = Step(ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await asyncio.wait_for(periodic(step).run(), 10)
    assert step.calls == 1
    assert not [r for r in caplog.records if r.name == LOGGER]  # the supervisor logs it


async def test_finished_ends_the_loop() -> None:
    step = Step(None, Finished())
    loop = periodic(step, interval=0.01)
    assert await asyncio.wait_for(loop.run(), 10) is None
    assert step.calls == 2


async def test_a_gated_step_runs_only_while_the_gate_is_open() -> None:
    step = Step()
    asked = Calls()  # the gate's questions
    leading = False

    def gate() -> bool:
        asked.note()
        return leading

    async with running(periodic(step, interval=0.01, only_if=gate)):
        await asked.reached(3)  # three rounds of the loop, each waited out
        assert step.calls == 0
        leading = True
        await step.reached(2)


async def test_cancelling_ends_the_wait_or_the_step_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    step = Step()
    task = asyncio.create_task(periodic(step).run())
    await step.reached(1)
    task.cancel()  # in its hour-long wait
    with pytest.raises(asyncio.CancelledError):
        await task

    entered, cleaned_up = asyncio.Event(), asyncio.Event()

    async def blocking_step() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    task = asyncio.create_task(periodic(blocking_step).run())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()  # in the step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned_up.is_set()
    assert not [r for r in caplog.records if r.name == LOGGER]


async def test_a_leader_that_cannot_reach_the_database_says_so_and_keeps_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real component against a real fault: nothing listens on port 9."""
    caplog.set_level(logging.WARNING, logger="shigoto.leader")
    app = Shigoto(dsn="postgresql://postgres@127.0.0.1:9/nowhere", connect_timeout=0.2)
    leader = Leader(app.database.run, app.queries, "n", role="leader", lease=0.3)
    task = asyncio.create_task(leader.run())

    async def failed_twice() -> bool:
        return sum("leader election failed" in r.getMessage() for r in caplog.records) >= 2

    try:
        await wait_until(failed_twice, timeout=20)
        assert not task.done() and not leader.is_leader
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await app.close()
