"""Commands: each call of the API, its input checked, as the `Operation` that does it.

The async app and the sync facade share one `Commands`, so that both check the same way,
send the same statements and publish the same events; each only runs the operation on
its own connections:

    commands = Commands(config, workers, queries, bus)
    job = await database.run(commands.get_job(42))        # Shigoto.get_job
    job = sync_database.run(commands.get_job(42))         # SyncShigoto.get_job
    return commands.cancelled(job_id, done)               # publishes job.cancelled if done
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, TypeVar, Unpack

from shigoto import _validate as check
from shigoto import events
from shigoto.admin import (
    CANCELLABLE_STATES,
    RETRYABLE_STATES,
    BulkWhere,
    JobFilter,
    JobPage,
    ListWhere,
    Status,
)
from shigoto.config import Config
from shigoto.db import batches, inserting, maintenance, managing, migrator, reading, scheduling
from shigoto.db.operations import Operation
from shigoto.db.queries import Queries
from shigoto.events import EventBus
from shigoto.features.batches import Batch
from shigoto.job import FINAL_STATES, Job, JobSpec, JobState
from shigoto.outcomes import ConfigurationError, InvalidJobError, InvalidScheduleError
from shigoto.schedules import Cron, Schedule, ScheduleInfo, catch_up_policy
from shigoto.worker import WorkerRegistry

logger = logging.getLogger("shigoto.app")

MAX_PAGE = 1000
R = TypeVar("R", bound=Sequence[Job | int])


class Intercept(Protocol):
    """What a testing mode (`shigoto.testing.inline` or `manual`) makes of inserted jobs
    instead of rows: the jobs it ran or recorded."""

    async def insert(self, specs: list[JobSpec]) -> list[Job]: ...

    def insert_sync(self, specs: list[JobSpec]) -> list[Job]: ...


class Inserting:
    """One insert call under way (`insert`, `insert_all`, `insert_many`, `enqueue`, async
    or sync), as an insert hook sees it: `specs`, the jobs about to be inserted (for
    `insert_many`, its template alone), which a hook may replace (a tracer adds its context
    to their `meta`); `count`, how many jobs the call inserts; `ids`, the jobs' ids once
    inserted (empty if the insert failed).

    The app enters it around the insert; it enters the hooks in the order they were added.
    """

    __slots__ = ("_hooks", "_stack", "count", "ids", "specs")

    def __init__(self, specs: list[JobSpec], hooks: list[InsertHook], count: int) -> None:
        self.specs = specs
        self.count = count
        self.ids: list[int] = []
        self._hooks = hooks
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> Inserting:
        if self._hooks:
            with contextlib.ExitStack() as stack:
                for hook in self._hooks:
                    stack.enter_context(hook(self))
                self._stack = stack.pop_all()  # exited by __exit__, with the insert's error
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        # The insert's error goes on whatever the hooks say: a hook cannot swallow it.
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.__exit__(kind, error, trace)

    def done(self, inserted: R) -> R:
        """Note what was inserted (jobs or their ids) for the hooks; returns it."""
        self.ids = [item if isinstance(item, int) else item.id for item in inserted]
        return inserted


# A hook around each insert call: called with the `Inserting`, it returns a context manager
# that the insert runs inside (see `Commands.around_insert`).
InsertHook = Callable[[Inserting], AbstractContextManager[object]]


def needs_transaction(specs: Iterable[JobSpec]) -> bool:
    """Whether inserting `specs` together takes one transaction: a unique job (its key's
    lock lasts the transaction) or one depending on a job of the same call (linked after
    the insert)."""
    return any(
        spec.unique is not None or any(not isinstance(d, int) for d in spec.depends_on)
        for spec in specs
    )


def _spec(spec: object) -> JobSpec:
    if not isinstance(spec, JobSpec):
        raise InvalidJobError(
            "spec", f"expected a JobSpec (from Worker.new), got {type(spec).__name__}"
        )
    return spec


class Commands:
    """Validate the input of each API call and build its `Operation`.

    `intercept` is set while a testing mode holds inserts (see `shigoto.testing`).
    """

    def __init__(
        self, config: Config, workers: WorkerRegistry, queries: Queries, bus: EventBus
    ) -> None:
        self.config = config
        self.workers = workers
        self.queries = queries
        self.bus = bus
        self.intercept: Intercept | None = None
        self.insert_hooks: list[InsertHook] = []

    # -- jobs to insert ----------------------------------------------------------------------

    def around_insert(self, hook: InsertHook) -> InsertHook:
        """Run every insert call of the app (async and sync, in testing modes too) inside
        `hook(inserting)`, a context manager: it may replace `inserting.specs` before the
        insert, sees `inserting.ids` after it, and sees the insert's error if it fails.
        Hooks added later run inside those added earlier. Jobs the database inserts itself
        (batch callbacks, schedules' firings) pass no hook.

            @app.commands.around_insert
            @contextlib.contextmanager
            def tenant(inserting: Inserting) -> Iterator[None]:
                inserting.specs = [dataclasses.replace(s, meta={**s.meta, "tenant": T})
                                   for s in inserting.specs]
                yield
        """
        self.insert_hooks.append(hook)
        return hook

    def inserting(self, specs: list[JobSpec], count: int | None = None) -> Inserting:
        """The insert call of `specs` (of `count` jobs, for insert_many's template), to
        enter around it (next to free when no hook is added)."""
        return Inserting(specs, self.insert_hooks, len(specs) if count is None else count)

    def new_job(
        self, worker: str, args: Mapping[str, Any] | None = None, **options: Any
    ) -> JobSpec:
        """A `JobSpec` for the worker registered under `worker`; raises `UnknownWorkerError`."""
        return self.workers.get(check.worker_name(worker)).new(args, **options)

    def job(self, spec: object) -> JobSpec:
        """A spec about to be inserted as a job: a `JobSpec` whose args its function worker,
        if this app registers one by that name, can be called with."""
        spec = _spec(spec)
        self.workers.check_args(spec.worker, spec.args)
        return spec

    def insert(self, spec: JobSpec) -> Operation[Job]:
        return inserting.insert(self.queries, spec)

    def insert_all(self, specs: Sequence[JobSpec]) -> Operation[list[Job]]:
        return inserting.insert_all(self.queries, [_spec(spec) for spec in specs])

    def many(
        self, template: object, args: Iterable[Mapping[str, Any]]
    ) -> tuple[JobSpec, list[dict[str, Any]]]:
        """insert_many's input, checked: the template, and each job's args (over its own)."""
        template = _spec(template)
        if isinstance(args, Mapping) or not isinstance(args, Iterable):
            raise InvalidJobError("args", "expected a list of JSON objects, one per job")
        each = [check.json_object(item, f"args[{i}]") for i, item in enumerate(args)]
        if template.args:
            each = [{**template.args, **item} for item in each]
        if template.worker in self.workers.signatures:
            for i, item in enumerate(each):
                self.workers.check_args(template.worker, item, f"args[{i}]")
        return template, each

    @staticmethod
    def one_by_one(template: JobSpec) -> bool:
        """Whether insert_many takes insert_all's way: unique keys and dependencies (a key
        per job, links)."""
        return template.unique is not None or bool(template.depends_on)

    @staticmethod
    def specs_of(template: JobSpec, each: list[dict[str, Any]]) -> list[JobSpec]:
        return [dataclasses.replace(template, args=item) for item in each]

    def insert_many(self, template: JobSpec, each: list[dict[str, Any]]) -> Operation[list[int]]:
        return inserting.insert_many(self.queries, template, each)

    # Events of what a command did, published once it is done (after its transaction, if it
    # has one of its own); each returns what it is given.

    def inserted(self, jobs: list[Job]) -> list[Job]:
        if self.bus.wants("job.inserted"):
            for job in jobs:
                self.bus.publish(events.job_event("job.inserted", job))
        return jobs

    def inserted_many(self, template: JobSpec, ids: list[int]) -> list[int]:
        if self.bus.wants("job.inserted"):
            for job_id in ids:
                self.bus.emit(
                    "job.inserted",
                    job_id=job_id,
                    worker=template.worker,
                    queue=template.queue,
                    attempt=0,
                    priority=template.priority,
                )
        return ids

    def cancelled(self, job_id: int, done: bool) -> bool:
        if done:
            self.bus.emit("job.cancelled", job_id=job_id, data={"by": "cancel"})
        return done

    def queue_paused(self, queue: str, paused: bool) -> None:
        self.bus.emit("queue.paused" if paused else "queue.resumed", queue=queue)

    def batch(
        self,
        specs: Iterable[JobSpec],
        on_complete: Any,
        on_discard: Any,
        meta: Mapping[str, Any] | None,
    ) -> Operation[Batch]:
        """The batch's insert (run it in a transaction)."""
        checked = [self.job(spec) for spec in specs]
        if not checked:
            raise InvalidJobError("specs", "a batch needs at least one job")
        return batches.insert_batch(
            self.queries,
            checked,
            meta=check.json_object({} if meta is None else meta, "meta"),
            on_complete=self._callback(on_complete, "on_complete"),
            on_discard=self._callback(on_discard, "on_discard"),
        )

    def _spec_for(
        self,
        worker: Any,
        args: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> JobSpec | None:
        """A job for `worker` — a registered worker (its defaults apply) or any worker
        name (another service may run it) — or None if `worker` is neither."""
        if isinstance(worker, str) and worker not in self.workers:
            return JobSpec.build(worker, args, **(options or {}))
        name = worker if isinstance(worker, str) else getattr(worker, "name", None)
        if not isinstance(name, str) or name not in self.workers:
            return None
        return self.workers.get(name).new(args, **(options or {}))

    def _callback(self, worker: Any, field: str) -> dict[str, Any] | None:
        """A batch callback as stored: the worker's name and its job defaults."""
        if worker is None:
            return None
        spec = self._spec_for(worker)
        if spec is None:
            raise InvalidJobError(field, f"expected a worker or a worker name, got {worker!r}")
        return {
            "worker": spec.worker,
            "queue": spec.queue,
            "priority": spec.priority,
            "max_attempts": spec.max_attempts,
            "tags": spec.tags,
        }

    # -- schema --------------------------------------------------------------------------------

    def migrate(self) -> Operation[list[str]]:
        """Apply the pending migrations (run it in a transaction); their names."""
        done = yield from migrator.migrate(self.queries)
        return [f"{m.version:04d}_{m.name}" for m in done]

    def migration_sql(self) -> Operation[str]:
        todo = yield from migrator.pending(self.queries)
        return migrator.dry_run_script(self.queries, todo)

    # -- one job ---------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Operation[Job | None]:
        return reading.get_job(self.queries, check.job_id(job_id))

    def change_job(self, change: managing.JobChange, job_id: int) -> Operation[bool]:
        """Cancel, retry, delete, pause or resume one job; whether it did."""
        return managing.change_job(self.queries, change, check.job_id(job_id))

    def is_job_paused(self, job_id: int) -> Operation[bool]:
        job = yield from reading.get_job(self.queries, check.job_id(job_id))
        return job is not None and job.state is JobState.PAUSED

    def get_batch(self, batch_id: int) -> Operation[Batch | None]:
        return batches.get_batch(self.queries, check.job_id(batch_id, "batch_id"))

    # -- many jobs -------------------------------------------------------------------------

    def list_jobs(
        self, *, limit: int, after: int | None, **where: Unpack[ListWhere]
    ) -> Operation[JobPage]:
        check.integer(limit, "limit", (1, MAX_PAGE))
        if after is not None:
            check.integer(after, "after", (1, 2**63 - 1))
        return reading.list_jobs(self.queries, JobFilter.build(**where), limit=limit, after=after)

    def cancel_by(self, **where: Unpack[BulkWhere]) -> Operation[int]:
        default = [s for s in CANCELLABLE_STATES if s is not JobState.EXECUTING]
        return managing.cancel_by(
            self.queries, JobFilter.bulk(CANCELLABLE_STATES, default, **where)
        )

    def retry_by(self, **where: Unpack[BulkWhere]) -> Operation[int]:
        default = [JobState.DISCARDED, JobState.CANCELLED]
        return managing.retry_by(self.queries, JobFilter.bulk(RETRYABLE_STATES, default, **where))

    def delete_by(self, **where: Unpack[BulkWhere]) -> Operation[int]:
        deletable = [s for s in JobState if s is not JobState.EXECUTING]
        finished = [s for s in JobState if s in FINAL_STATES]
        return managing.delete_by(self.queries, JobFilter.bulk(deletable, finished, **where))

    def delete_finished(
        self, older_than: float | timedelta, queue: str | Iterable[str] | None
    ) -> Operation[int]:
        age = timedelta(seconds=check.seconds(older_than, "older_than"))
        queues = JobFilter.build(queue=queue).queues
        return maintenance.delete_finished(self.queries, age, queues)

    def status(self) -> Operation[Status]:
        return reading.status(self.queries)

    def prune(self, dry_run: bool) -> Operation[tuple[int, int]]:
        if self.config.prune_after is None:
            raise ConfigurationError("prune: pruning is off (prune_after=None)")
        after, retention = self.config.prune_after, self.config.archive_retention
        if dry_run:
            return maintenance.prune_preview(self.queries, prune_after=after, retention=retention)
        return maintenance.prune(self.queries, prune_after=after, retention=retention)

    # -- queues ----------------------------------------------------------------------------

    def pause_queue(self, queue: str, paused: bool = True) -> Operation[None]:
        return managing.set_queue_paused(self.queries, check.queue(queue), paused)

    def is_queue_paused(self, queue: str) -> Operation[bool]:
        name = check.queue(queue)
        return name in (yield from reading.paused_queues(self.queries))

    def queue_change(self, name: str, limit: int | None) -> None:
        """Check a change of a queue's limit (None: stop working it)."""
        check.queue(name)
        if limit is not None:
            check.integer(limit, "limit", (1, 10_000))

    def queue_signal(self, name: str, limit: int | None) -> Operation[None]:
        """Tell every node to work `name` with `limit` (None: to stop working it)."""
        if not self.config.listens:
            raise ConfigurationError(
                "everywhere: needs the notifier (LISTEN/NOTIFY); it is turned off, or "
                "prepared statements are off and there is no listen_dsn"
            )
        return managing.signal(self.queries, {"action": "queue", "queue": name, "limit": limit})

    def emit(
        self, job_id: int | None, name: str, data: Mapping[str, Any] | None
    ) -> Operation[None] | None:
        """Publish the custom event `custom.<name>` here, now; the operation that sends it
        to every node, or None where nodes do not listen."""
        message = events.custom_message(self.bus.origin, job_id, name, data)
        event = events.custom_event(message)
        assert event is not None
        if self.bus.wants(event.name):
            self.bus.publish(event)
        return managing.signal(self.queries, message) if self.config.listens else None

    # -- schedules -------------------------------------------------------------------------

    def schedule(self, entry: ScheduleInfo) -> Operation[ScheduleInfo]:
        """Save a schedule (made by `schedule_entry`), created or redefined."""
        return scheduling.save(self.queries, entry)

    def unschedule(self, name: str) -> Operation[bool]:
        return scheduling.delete(self.queries, name)

    def schedules(self) -> Operation[list[ScheduleInfo]]:
        _, entries = yield from scheduling.list_all(self.queries)
        return entries

    def schedule_entry(
        self,
        name: str,
        schedule: Schedule | str,
        worker: Any,
        args: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ScheduleInfo:
        """A checked schedule: the worker's job defaults resolved now, so the leader can
        fire it whatever workers its own process registered."""
        name = check.text(name, "name", max_length=255)
        if isinstance(schedule, str):
            schedule = Cron(schedule)
        if not isinstance(schedule, Schedule):
            raise InvalidScheduleError(
                f"schedule: expected a cron expression or a Cron/Every/Daily/Weekly, "
                f"got {schedule!r}"
            )
        job_options = dict(options or {})
        policy, window = catch_up_policy(job_options.pop("catch_up", 3600.0))
        spec = self._spec_for(worker, args, job_options)
        if spec is None:
            raise ConfigurationError(
                f"schedule {name!r}: expected a registered worker or a worker name, got {worker!r}"
            )
        if spec.scheduled_at is not None:
            raise InvalidScheduleError("a schedule's jobs run at its moments: no scheduled_at")
        self.workers.check_args(spec.worker, spec.args)
        stored = {
            "queue": spec.queue,
            "priority": spec.priority,
            "max_attempts": spec.max_attempts,
            "tags": spec.tags,
            "meta": spec.meta,
            "partition_key": spec.partition_key,
        }
        if spec.origin is not None:
            stored["origin"] = spec.origin
        return ScheduleInfo(
            name=name,
            schedule=schedule,
            worker=spec.worker,
            args=spec.args,
            options=stored,
            catch_up_policy=policy,
            catch_up_window=window,
            next_fire_at=schedule.after(datetime.now(UTC)),
        )

    def declared_schedules(self) -> list[ScheduleInfo]:
        """The entries of `cron=` and of workers declared with `cron=`."""
        entries = []
        for item in self.config.cron:
            if not 4 <= len(item) <= 5:
                raise ConfigurationError(
                    f"cron: expected (name, schedule, worker, args[, options]), got {item!r}"
                )
            entries.append(self.schedule_entry(*item))
        for worker_name in self.workers:
            declared = self.workers.get(worker_name).cron
            if declared is not None:
                assert isinstance(declared, Schedule)  # checked at registration
                entries.append(self.schedule_entry(worker_name, declared, worker_name))
        return entries

    def declare_schedules(self) -> Operation[None]:
        """Save the declared schedules (a node does this as it starts) and report the
        entries no worker of this app can run."""
        for entry in self.declared_schedules():
            yield from scheduling.save(self.queries, entry)
        for entry in (yield from self.schedules()):
            if entry.worker not in self.workers:
                logger.warning(
                    "schedule %s fires worker %r, which this app does not register; "
                    "its jobs wait for a node that does",
                    entry.name,
                    entry.worker,
                )
