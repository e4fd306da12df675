"""Helpers for testing code that enqueues jobs, in your own test suite.

Three ways to test, from most to least real:

    counts = await app.drain_queue("emails")        # run the queue's jobs here, now
    assert counts["completed"] == 1

    with shigoto.testing.inline(app):              # insert runs the job at once, no database
        job = await send_email.enqueue({"to": "a@b.c"})
        assert job.state == "completed"

    with shigoto.testing.manual(app) as jobs:      # inserts are recorded, not written or run
        await signup("a@b.c")
        jobs.assert_enqueued(worker=send_email, args={"to": "a@b.c"})

`pytest_plugins = ["shigoto.pytest_plugin"]` adds fixtures (`shigoto_inline`,
`shigoto_manual`) built on a `shigoto_app` fixture you define to return your app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shigoto import _validate as check
from shigoto.commands import Intercept
from shigoto.db import execution, faults
from shigoto.events import batch_event, job_event
from shigoto.job import Job, JobSpec, JobState, job_states
from shigoto.outcomes import ConfigurationError, InvalidJobError, ShigotoError
from shigoto.runtime.acker import Acker
from shigoto.runtime.context import JobRun
from shigoto.runtime.executor import Executor
from shigoto.runtime.finish import Finisher, queue_wait, stopped_job
from shigoto.runtime.node import new_node_id
from shigoto.worker import Worker

if TYPE_CHECKING:
    from shigoto.app import Shigoto

logger = logging.getLogger("shigoto.testing")
logger.addFilter(faults.SCRUBBED)  # hooks may fail with a database error

MAX_RUNS_PER_JOB = 100  # a drain that re-runs one job this often is looping (a snooze, say)

_fake_ids = itertools.count(1)


class InlineJobFailed(ShigotoError):
    """In inline mode, the job raised; the original error is the `__cause__`."""

    def __init__(self, job: Job, error: dict[str, Any] | None) -> None:
        self.job = job
        detail = f"{error['error']}: {error['message']}" if error else "failed"
        super().__init__(f"job {job.worker} failed inline: {detail}")


# -- drain_queue ------------------------------------------------------------------------------


async def drain_queue(app: Shigoto, queue: str, *, with_scheduled: bool = False) -> dict[str, int]:
    """Run `queue`'s jobs one by one in the calling task until none is left to run.

    Jobs inserted by the jobs are run too, jobs waiting on dependencies once those complete,
    and batch callbacks once their batch is done. Each job gets its worker's own timeout. With
    `with_scheduled`, scheduled jobs and retries run now rather than when due. Returns how
    many runs ended each way: completed, retryable, discarded, cancelled, snoozed.
    """
    check.queue(queue)
    q = app.queries
    node_id = f"drain-{new_node_id()}"
    # A node row, so that a running node's lifeline does not take these jobs for orphans.
    await app.database.run(execution.register_node(q, node_id, {queue: 1}, {"drain": True}))
    executor = _executor(app, node_id)
    finisher = Finisher(app.bus, node_id, on_discard=executor.on_discard)
    acker = Acker(app.database.run, q, node_id, bus=app.bus)
    outlet = _Drained(acker)
    bus = app.bus
    counts: Counter[str] = Counter()
    runs: Counter[int] = Counter()

    async def results(ids: list[int]) -> dict[int, object]:
        found: dict[int, object] = await app.database.run(execution.results_of(q, ids))
        return found

    try:
        while True:
            await app.database.run(execution.stage(q, queue=queue, everything=with_scheduled))
            await app.database.run(execution.resolve_dependencies(q))  # release waiting jobs
            closed = await app.database.run(
                execution.finish_batches(q)
            )  # and insert batch callbacks
            if bus.wants("batch.completed"):
                for batch in closed:
                    bus.publish(batch_event(batch, node_id))
            claimed = await app.database.run(
                execution.claim(
                    q, queue=queue, limit=1, node=node_id, fresh_for=app.config.claim_window
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
            await app.database.run(execution.heartbeat(q, node_id, {queue: 1}))
    finally:
        executor.close()
        await app.database.run(execution.remove_node(q, node_id))
    return {name: counts[name] for name in _OUTCOMES}


_OUTCOMES = ("completed", "retryable", "discarded", "cancelled", "snoozed")


class _Drained:
    """drain_queue's outlet: the acker, each outcome written before the next claim."""

    def __init__(self, acker: Acker) -> None:
        self._acker = acker
        self._last: asyncio.Future[execution.Ack | None] | None = None

    def post(self, ack: execution.Ack) -> None:
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


class _Inline:
    """Inline mode's outlet: no database, so every outcome "applies" as it is."""

    def post(self, ack: execution.Ack) -> None:
        pass

    async def write(self, ack: execution.Ack) -> execution.Ack | None:
        return ack


def _executor(app: Shigoto, node_id: str) -> Executor:
    return Executor(
        app.workers,
        threads=1,
        node_id=node_id,
        max_result_bytes=app.config.max_result_bytes,
        bus=app.bus,
    )


def _outcome_name(ack: execution.Ack) -> str:
    if ack.refund:
        return "snoozed"
    if ack.state in (JobState.RETRYABLE, JobState.AVAILABLE):
        return "retryable"
    return ack.state.value


# -- inline mode ------------------------------------------------------------------------------


async def run_inline(app: Shigoto, spec: JobSpec) -> Job:
    """Run a spec's job at once, in this task, without the database."""
    now = datetime.now(UTC)
    job = Job.from_spec(
        spec, id=next(_fake_ids), state=JobState.EXECUTING, inserted_at=now, scheduled_at=now
    )
    job = _replace(job, attempt=1, attempted_at=now)
    executor = _executor(app, "inline")
    run = JobRun(job)
    try:
        ack = await executor.execute(run)
        assert ack is not None
        finisher = Finisher(app.bus, "inline", on_discard=executor.on_discard)
        pending = finisher.finish(run, ack, _Inline())
        if pending is not None:
            await pending
        await app.bus.settle()
    finally:
        executor.close()
    finished = stopped_job(job, ack)
    if ack.refund:
        return _replace(finished, attempt=0, state=JobState.SCHEDULED)
    if ack.state in (JobState.RETRYABLE, JobState.AVAILABLE) or (
        ack.state is JobState.DISCARDED and ack.error and ack.error["error"] != "Discard"
    ):
        raise InlineJobFailed(finished, ack.error) from run.error
    return finished


def _replace(job: Job, **changes: Any) -> Job:
    return dataclasses.replace(job, **changes)


# -- manual mode ------------------------------------------------------------------------------


class Recorder:
    """The jobs inserted while in manual mode, with assertions over them."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def record(self, spec: JobSpec) -> Job:
        now = datetime.now(UTC)
        scheduled = spec.scheduled_at is not None and spec.scheduled_at > now
        job = Job.from_spec(
            spec,
            id=next(_fake_ids),
            state=JobState.SCHEDULED if scheduled else JobState.AVAILABLE,
            inserted_at=now,
            scheduled_at=spec.scheduled_at or now,
        )
        self.jobs.append(job)
        return job

    def all_enqueued(
        self,
        *,
        worker: str | type[Worker] | Worker | None = None,
        queue: str | None = None,
        args: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        state: JobState | str | Iterable[JobState | str] | None = None,
    ) -> list[Job]:
        """The recorded jobs that match; `args` matches jobs whose args contain it."""
        name = _worker_name(worker)
        wanted_tags = None if tags is None else set(check.tags(tags))
        states = None if state is None else set(job_states(state))
        return [
            job
            for job in self.jobs
            if (name is None or job.worker == name)
            and (queue is None or job.queue == queue)
            and (args is None or _contains(job.args, args))
            and (wanted_tags is None or wanted_tags <= set(job.tags))
            and (states is None or job.state in states)
        ]

    def assert_enqueued(self, **filters: Any) -> Job:
        """Fail unless a matching job was enqueued; returns the first match."""
        found = self.all_enqueued(**filters)
        if not found:
            seen = ", ".join(f"{j.worker}({j.queue})" for j in self.jobs) or "nothing"
            raise AssertionError(f"no job enqueued matching {_describe(filters)}; enqueued: {seen}")
        return found[0]

    def refute_enqueued(self, **filters: Any) -> None:
        """Fail if a matching job was enqueued."""
        found = self.all_enqueued(**filters)
        if found:
            raise AssertionError(
                f"{len(found)} job(s) enqueued matching {_describe(filters)}: "
                + ", ".join(f"#{j.id} {j.worker}" for j in found)
            )

    def reset(self) -> None:
        self.jobs.clear()


def _worker_name(worker: str | type[Worker] | Worker | None) -> str | None:
    if worker is None or isinstance(worker, str):
        return worker
    if isinstance(worker, Worker) or (isinstance(worker, type) and issubclass(worker, Worker)):
        return worker._registered_name()
    raise InvalidJobError("worker", "must be a worker or its registered name")


def _contains(whole: Any, part: Any) -> bool:
    if isinstance(part, Mapping):
        return isinstance(whole, Mapping) and all(
            key in whole and _contains(whole[key], value) for key, value in part.items()
        )
    return bool(whole == part)


def _describe(filters: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in filters.items()) or "anything"


# -- switching modes --------------------------------------------------------------------------


@contextmanager
def inline(app: Shigoto) -> Iterator[None]:
    """Within the block, inserting a job runs it at once instead (no database row)."""
    with _mode(app, _InlineMode(app)):
        yield


@contextmanager
def manual(app: Shigoto) -> Iterator[Recorder]:
    """Within the block, inserts are recorded (not written, not run): assert on them."""
    recorder = Recorder()
    with _mode(app, _ManualMode(recorder)):
        yield recorder


class _InlineMode:
    """Inline mode's hold on inserts: each job runs at once."""

    def __init__(self, app: Shigoto) -> None:
        self._app = app

    async def insert(self, specs: list[JobSpec]) -> list[Job]:
        return [await run_inline(self._app, spec) for spec in specs]

    def insert_sync(self, specs: list[JobSpec]) -> list[Job]:
        return [run_inline_sync(self._app, spec) for spec in specs]


class _ManualMode:
    """Manual mode's hold on inserts: each job is recorded."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def insert(self, specs: list[JobSpec]) -> list[Job]:
        return self.insert_sync(specs)

    def insert_sync(self, specs: list[JobSpec]) -> list[Job]:
        return [self._recorder.record(spec) for spec in specs]


@contextmanager
def _mode(app: Shigoto, hold: Intercept) -> Iterator[None]:
    commands = app.commands
    if commands.intercept is not None:
        raise ConfigurationError("testing: a testing mode is already active for this app")
    commands.intercept = hold
    try:
        yield
    finally:
        commands.intercept = None


def run_inline_sync(app: Shigoto, spec: JobSpec) -> Job:
    """`run_inline` for the sync facade (no event loop may be running in this thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_inline(app, spec))
    raise ConfigurationError(
        "testing: app.sync cannot run a job inline inside a running event loop; use the async API"
    )
