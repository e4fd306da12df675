"""Running jobs in the calling task, without a node: `drain_queue`'s loop, and inline
mode's single run without the database. Both go through a node's executor and finish
path, so a job ends here as it would on a node.

    counts = await drain_queue(database, workers, config, bus, "emails")
    job = await Inline(workers, config, bus).run(send_email.new({"to": "a@b.c"}))

`shigoto.testing` (and `app.drain_queue`) are the user-facing way to these.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from shigoto import _validate as check
from shigoto.config import Config
from shigoto.db import execution
from shigoto.db.database import Database
from shigoto.events import EventBus, batch_event, job_event
from shigoto.job import Job, JobSpec, JobState
from shigoto.outcomes import ConfigurationError, ShigotoError
from shigoto.runtime.acker import Acker
from shigoto.runtime.context import JobRun
from shigoto.runtime.executor import Executor
from shigoto.runtime.finish import Finisher, Telling, Waiter, queue_wait, stopped_job
from shigoto.runtime.node import new_node_id
from shigoto.worker import WorkerRegistry

MAX_RUNS_PER_JOB = 100  # a drain that re-runs one job this often is looping (a snooze, say)
OUTCOMES = ("completed", "retryable", "discarded", "cancelled", "snoozed")

_fake_ids = itertools.count(1)


def fake_id() -> int:
    """An id for a job that has no row (inline and manual modes), unique in the process."""
    return next(_fake_ids)


class InlineJobFailed(ShigotoError):
    """In inline mode, the job raised; the original error is the `__cause__`."""

    def __init__(self, job: Job, error: dict[str, Any] | None) -> None:
        self.job = job
        detail = f"{error['error']}: {error['message']}" if error else "failed"
        super().__init__(f"job {job.worker} failed inline: {detail}")


def _executor(workers: WorkerRegistry, config: Config, bus: EventBus, node_id: str) -> Executor:
    return Executor(
        workers, threads=1, node_id=node_id, max_result_bytes=config.max_result_bytes, bus=bus
    )


# -- drain_queue ------------------------------------------------------------------------------


async def drain_queue(
    database: Database,
    workers: WorkerRegistry,
    config: Config,
    bus: EventBus,
    queue: str,
    *,
    with_scheduled: bool = False,
) -> dict[str, int]:
    """Run `queue`'s jobs one by one in the calling task until none is left to run.

    Jobs inserted by the jobs are run too, jobs waiting on dependencies once those complete,
    and batch callbacks once their batch is done. Each job gets its worker's own timeout. With
    `with_scheduled`, scheduled jobs and retries run now rather than when due. Returns how
    many runs ended each way: completed, retryable, discarded, cancelled, snoozed.
    """
    check.queue(queue)
    q, run_here = database.queries, database.run
    node_id = f"drain-{new_node_id()}"
    # A node row, so that a running node's lifeline does not take these jobs for orphans.
    await run_here(execution.register_node(q, node_id, {queue: 1}, {"drain": True}))
    executor = _executor(workers, config, bus, node_id)
    finisher = Finisher(bus, node_id, on_discard=executor.on_discard)
    acker = Acker(run_here, q, node_id, bus=bus)
    outlet = _Drained(acker)
    counts: Counter[str] = Counter()
    runs: Counter[int] = Counter()

    async def results(ids: list[int]) -> dict[int, object]:
        found: dict[int, object] = await run_here(execution.results_of(q, ids))
        return found

    try:
        while True:
            await run_here(execution.stage(q, queue=queue, everything=with_scheduled))
            await run_here(execution.resolve_dependencies(q))  # release waiting jobs
            closed = await run_here(execution.finish_batches(q))  # and insert batch callbacks
            if bus.wants("batch.completed"):
                for batch in closed:
                    bus.publish(batch_event(batch, node_id))
            claimed = await run_here(
                execution.claim(
                    q, queue=queue, limit=1, node=node_id, fresh_for=config.claim_window
                )
            )
            if not claimed:
                break
            job = claimed[0]
            if bus.wants("job.claimed"):
                bus.publish(job_event("job.claimed", job, node=node_id, queue_wait=queue_wait(job)))
            runs[job.id] += 1
            if runs[job.id] > MAX_RUNS_PER_JOB:
                raise ShigotoError(
                    f"drain_queue: job {job.id} ran {MAX_RUNS_PER_JOB} times in one drain "
                    "(a job that always snoozes, with with_scheduled=True?)"
                )
            run = JobRun(job, report=acker.report_progress, results=results)
            ack = await executor.execute(run)
            if ack is None:
                continue
            pending = finisher.finish(run, ack, outlet)
            if pending is not None:
                await pending
            await acker.drain()
            await bus.settle()  # the hooks and async handlers have heard of it
            counts[_outcome_name(outlet.written(ack))] += 1
            await run_here(execution.heartbeat(q, node_id, {queue: 1}))
    finally:
        executor.close()
        await run_here(execution.remove_node(q, node_id))
    return {name: counts[name] for name in OUTCOMES}


class _Drained:
    """drain_queue's outlet: the acker, each outcome written before the next claim."""

    untold: dict[int, Telling] | None = None  # each run waits for its write, then tells

    def __init__(self, acker: Acker) -> None:
        self._acker = acker
        self._last: asyncio.Future[execution.Ack | None] | None = None

    def post(self, ack: execution.Ack, told: Waiter | None = None) -> None:
        self._last = asyncio.get_running_loop().create_future()
        self._acker.add(ack, self._last)

    async def write(self, ack: execution.Ack) -> execution.Ack | None:
        self.post(ack)
        await self._acker.drain()
        return self.written(ack)

    def written(self, ack: execution.Ack) -> execution.Ack:
        """What was written for `ack` (the failure that replaced it, if it was refused)."""
        last = self._last
        return (last.result() if last is not None and last.done() else None) or ack


def _outcome_name(ack: execution.Ack) -> str:
    if ack.refund:
        return "snoozed"
    if ack.state in (JobState.RETRYABLE, JobState.AVAILABLE):
        return "retryable"
    return ack.state.value


# -- inline mode ------------------------------------------------------------------------------


class _Unwritten:
    """Inline mode's outlet: no database, so every outcome "applies" as it is."""

    untold: dict[int, Telling] | None = None

    def post(self, ack: execution.Ack, told: Waiter | None = None) -> None:
        pass

    async def write(self, ack: execution.Ack) -> execution.Ack | None:
        return ack


class Inline:
    """Inline mode's hold on inserts (a `shigoto.commands.Intercept`): each job runs at
    once, in the calling task, without the database."""

    def __init__(self, workers: WorkerRegistry, config: Config, bus: EventBus) -> None:
        self.workers = workers
        self.config = config
        self.bus = bus

    async def insert(self, specs: list[JobSpec]) -> list[Job]:
        return [await self.run(spec) for spec in specs]

    def insert_sync(self, specs: list[JobSpec]) -> list[Job]:
        return [self.run_sync(spec) for spec in specs]

    async def run(self, spec: JobSpec) -> Job:
        """Run a spec's job at once; raises `InlineJobFailed` if it failed."""
        now = datetime.now(UTC)
        job = Job.from_spec(
            spec, id=fake_id(), state=JobState.EXECUTING, inserted_at=now, scheduled_at=now
        )
        job = dataclasses.replace(job, attempt=1, attempted_at=now)
        executor = _executor(self.workers, self.config, self.bus, "inline")
        run = JobRun(job)
        try:
            ack = await executor.execute(run)
            assert ack is not None
            finisher = Finisher(self.bus, "inline", on_discard=executor.on_discard)
            pending = finisher.finish(run, ack, _Unwritten())
            if pending is not None:
                await pending
            await self.bus.settle()
        finally:
            executor.close()
        finished = stopped_job(job, ack)
        if ack.refund:
            return dataclasses.replace(finished, attempt=0, state=JobState.SCHEDULED)
        if ack.state in (JobState.RETRYABLE, JobState.AVAILABLE) or (
            ack.state is JobState.DISCARDED and ack.error and ack.error["error"] != "Discard"
        ):
            raise InlineJobFailed(finished, ack.error) from run.error
        return finished

    def run_sync(self, spec: JobSpec) -> Job:
        """`run` for the sync facade (no event loop may be running in this thread)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run(spec))
        raise ConfigurationError(
            "testing: app.sync cannot run a job inline inside a running event loop; "
            "use the async API"
        )
