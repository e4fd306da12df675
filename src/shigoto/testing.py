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

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shigoto import _validate as check
from shigoto.commands import Intercept
from shigoto.job import Job, JobSpec, JobState, job_states
from shigoto.outcomes import ConfigurationError, InvalidJobError
from shigoto.runtime.drain import Inline, InlineJobFailed, fake_id
from shigoto.worker import Worker

if TYPE_CHECKING:
    from shigoto.app import Shigoto


async def drain_queue(app: Shigoto, queue: str, *, with_scheduled: bool = False) -> dict[str, int]:
    """Run `queue`'s jobs one by one in the calling task until none is left to run
    (`app.drain_queue`).

    Jobs inserted by the jobs are run too, jobs waiting on dependencies once those complete,
    and batch callbacks once their batch is done. Each job gets its worker's own timeout. With
    `with_scheduled`, scheduled jobs and retries run now rather than when due. Returns how
    many runs ended each way: completed, retryable, discarded, cancelled, snoozed.
    """
    return await app.drain_queue(queue, with_scheduled=with_scheduled)


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
            id=fake_id(),
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
    with _mode(app, Inline(app.workers, app.config, app.bus)):
        yield


@contextmanager
def manual(app: Shigoto) -> Iterator[Recorder]:
    """Within the block, inserts are recorded (not written, not run): assert on them."""
    recorder = Recorder()
    with _mode(app, _ManualMode(recorder)):
        yield recorder


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


__all__ = ["InlineJobFailed", "Recorder", "drain_queue", "inline", "manual"]
