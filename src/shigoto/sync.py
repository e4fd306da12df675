"""`SyncShigoto`: the app's calls for code that is not async (Django/Flask views, scripts,
the CLI), as `app.sync`.

    job = app.sync.insert(send_email.new({"to": "a@b.c"}), conn=django_psycopg_conn)
    app.sync.cancel_by(queue="emails", states=["scheduled"])

Each method takes the parameters of the `Shigoto` method of its name and does the same,
on a small pool of sync connections of its own (opened on first use) or on the caller's
`psycopg.Connection`. Running jobs (`start`, `drain_queue`) is async only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Protocol, Unpack

import psycopg

from shigoto.admin import BulkWhere, JobPage, ListWhere, Status
from shigoto.commands import Commands, needs_transaction
from shigoto.db.database import SyncDatabase
from shigoto.features.batches import Batch
from shigoto.health import Checked, Health, check_health_sync
from shigoto.job import Job, JobSpec
from shigoto.schedules import Schedule, ScheduleInfo


class _App(Checked, Protocol):
    """What the facade takes from its app (a `Shigoto`): the commands it shares, and what
    a health check reads."""

    @property
    def commands(self) -> Commands: ...


class SyncShigoto:
    """The same calls for code that is not async (Django/Flask views, scripts, the CLI).

        job = app.sync.insert(send_email.new({"to": "a@b.c"}), conn=django_psycopg_conn)

    It has its own small pool of sync connections, opened on first use.
    """

    def __init__(self, app: _App) -> None:
        self.app = app
        self.commands = app.commands
        self.config = self.commands.config
        self.workers = self.commands.workers
        self.queries = self.commands.queries
        self.database = SyncDatabase(self.config, self.queries)

    def __repr__(self) -> str:
        return f"<SyncShigoto schema={self.config.schema!r}>"

    # -- connections -----------------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A sync connection from the facade's pool (autocommit); see `Shigoto.connection`."""
        with self.database.connection() as conn:
            yield conn

    def close(self) -> None:
        """Close the facade's pool of sync connections."""
        self.database.close()

    # -- schema ----------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending migrations; safe to run concurrently. Returns the applied names."""
        return self.database.run(self.commands.migrate(), transaction=True)

    def migration_sql(self) -> str:
        """The SQL `migrate()` would run now, without running it."""
        return self.database.run(self.commands.migration_sql())

    # -- enqueueing ------------------------------------------------------------------------

    def new_job(
        self, worker: str, args: Mapping[str, Any] | None = None, **options: Any
    ) -> JobSpec:
        """A `JobSpec` for the worker registered under `worker`; raises `UnknownWorkerError`."""
        return self.commands.new_job(worker, args, **options)

    def insert(self, spec: JobSpec, *, conn: Any = None) -> Job:
        """Insert one job; with `conn=` it commits or rolls back with the caller's transaction."""
        with self.commands.inserting([self.commands.job(spec)]) as call:
            (spec,) = call.specs
            if self.commands.intercept is not None:
                return call.done(self.commands.intercept.insert_sync([spec]))[0]
            unique = spec.unique is not None  # its lock lasts until the transaction ends
            job = self.database.run(self.commands.insert(spec), conn, transaction=unique)
            return call.done(self.commands.inserted([job]))[0]

    def insert_all(self, specs: Iterable[JobSpec], *, conn: Any = None) -> list[Job]:
        """Insert many jobs in one statement; returns them in the order given."""
        with self.commands.inserting([self.commands.job(spec) for spec in specs]) as call:
            if self.commands.intercept is not None:
                return call.done(self.commands.intercept.insert_sync(call.specs))
            run = self.commands.insert_all(call.specs)
            jobs = self.database.run(run, conn, transaction=needs_transaction(call.specs))
            return call.done(self.commands.inserted(jobs))

    def insert_many(
        self, template: JobSpec, args: Iterable[Mapping[str, Any]], *, conn: Any = None
    ) -> list[int]:
        """Insert one job per item of `args`, each otherwise like `template`, in one
        statement; returns their ids in order (see `Shigoto.insert_many`)."""
        template, each = self.commands.many(template, args)
        if self.commands.intercept is not None or self.commands.one_by_one(template):
            specs = self.commands.specs_of(template, each)
            return [job.id for job in self.insert_all(specs, conn=conn)]
        with self.commands.inserting([template], len(each)) as call:
            ids = self.database.run(self.commands.insert_many(call.specs[0], each), conn)
            return call.done(self.commands.inserted_many(call.specs[0], ids))

    def enqueue(
        self,
        worker: str,
        args: Mapping[str, Any] | None = None,
        *,
        conn: Any = None,
        **options: Any,
    ) -> Job:
        """Insert a job for the worker registered under `worker` (by name)."""
        return self.insert(self.new_job(worker, args, **options), conn=conn)

    def batch(
        self,
        specs: Iterable[JobSpec],
        *,
        on_complete: Any = None,
        on_discard: Any = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Insert jobs as a batch, in one transaction (see `Shigoto.batch`)."""
        operation = self.commands.batch(specs, on_complete, on_discard, meta)
        return self.database.run(operation, transaction=True)

    def emit(self, job_id: int | None, name: str, data: Mapping[str, Any] | None = None) -> None:
        """Publish a custom event here and on every node (see `Shigoto.emit`); a sync job can
        send one this way."""
        to_every_node = self.commands.emit(job_id, name, data)
        if to_every_node is not None:
            self.database.run(to_every_node)

    # -- admin -----------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        """The job of that id, or None."""
        return self.database.run(self.commands.get_job(job_id))

    def get_batch(self, batch_id: int) -> Batch | None:
        """A batch with its counts (live while it runs)."""
        return self.database.run(self.commands.get_batch(batch_id))

    def wait_for(self, job_id: int, timeout: float | None = None) -> Job:
        """`Shigoto.wait_for` for code that is not async (blocks the calling thread)."""
        return self.database.wait_for(job_id, timeout)

    def list_jobs(
        self, *, limit: int = 50, after: int | None = None, **where: Unpack[ListWhere]
    ) -> JobPage:
        """Jobs newest first; `after=page.next_cursor` fetches the next page. Filters
        (`ListWhere`): `state`, `queue`, `worker`, `tags`, `since`, `until`."""
        return self.database.run(self.commands.list_jobs(limit=limit, after=after, **where))

    def cancel(self, job_id: int) -> bool:
        """Cancel one unfinished job; False if it does not exist or had already finished."""
        done = self.database.run(self.commands.change_job("cancel", job_id))
        return self.commands.cancelled(job_id, done)

    def retry(self, job_id: int) -> bool:
        """Make a scheduled, retryable or finished job available now (with one more attempt)."""
        return self.database.run(self.commands.change_job("retry", job_id))

    def delete(self, job_id: int) -> bool:
        """Delete one job that is not executing; False if there was none to delete."""
        return self.database.run(self.commands.change_job("delete", job_id))

    def cancel_by(self, **where: Unpack[BulkWhere]) -> int:
        """Cancel every matching job (default: all not executing or finished); returns a
        count. Filters (`BulkWhere`, at least one): `queue`, `worker`, `tags`, `states`,
        `since`, `until`. Batched as `Shigoto.cancel_by` is."""
        return self.database.run(self.commands.cancel_by(**where))

    def retry_by(self, **where: Unpack[BulkWhere]) -> int:
        """Retry every matching job (default states: discarded, cancelled); returns a count.
        Filters as `cancel_by`'s."""
        return self.database.run(self.commands.retry_by(**where))

    def delete_by(self, **where: Unpack[BulkWhere]) -> int:
        """Delete every matching job (default states: completed, discarded, cancelled; never
        an executing one); returns a count. Filters as `cancel_by`'s."""
        return self.database.run(self.commands.delete_by(**where))

    def delete_finished(
        self, *, older_than: float | timedelta = 0, queue: str | Iterable[str] | None = None
    ) -> int:
        """Delete completed, discarded and cancelled jobs finished at least `older_than` ago."""
        return self.database.run(self.commands.delete_finished(older_than, queue))

    def status(self) -> Status:
        """Job counts by queue and state, and each queue's oldest available job age."""
        return self.database.run(self.commands.status())

    def health(self) -> Health:
        """`Shigoto.health` for code that is not async; never raises."""
        return check_health_sync(self.app)

    def prune(self, *, dry_run: bool = False) -> tuple[int, int]:
        """Archive and delete old finished jobs now; returns (archived, deleted)."""
        return self.database.run(self.commands.prune(dry_run))

    # -- schedules -------------------------------------------------------------------------

    def schedule(
        self,
        name: str,
        schedule: Schedule | str,
        worker: Any,
        args: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ScheduleInfo:
        """Create or redefine a persisted schedule (see `Shigoto.schedule`)."""
        entry = self.commands.schedule_entry(name, schedule, worker, args, options)
        return self.database.run(self.commands.schedule(entry))

    def unschedule(self, name: str) -> bool:
        """Delete a schedule; False if there was none of that name."""
        return self.database.run(self.commands.unschedule(name))

    def schedules(self) -> list[ScheduleInfo]:
        """Every schedule with its last and next moments."""
        return self.database.run(self.commands.schedules())

    # -- pause and resume ------------------------------------------------------------------

    def pause_job(self, job_id: int) -> bool:
        """Keep a job from being claimed (a running one is interrupted and paused, its
        attempt refunded); False if it is finished or missing."""
        return self.database.run(self.commands.change_job("pause", job_id))

    def resume_job(self, job_id: int) -> bool:
        """Let a paused job run again; False if it was not paused."""
        return self.database.run(self.commands.change_job("resume", job_id))

    def is_job_paused(self, job_id: int) -> bool:
        """Whether the job is paused."""
        return self.database.run(self.commands.is_job_paused(job_id))

    def pause_queue(self, queue: str) -> None:
        """Stop every node from claiming jobs of `queue` (persisted); running jobs finish."""
        self.database.run(self.commands.pause_queue(queue))
        self.commands.queue_paused(queue, True)

    def resume_queue(self, queue: str) -> None:
        """Let every node claim jobs of `queue` again."""
        self.database.run(self.commands.pause_queue(queue, paused=False))
        self.commands.queue_paused(queue, False)

    def is_queue_paused(self, queue: str) -> bool:
        """Whether `queue` is paused."""
        return self.database.run(self.commands.is_queue_paused(queue))


__all__ = ["SyncShigoto"]
