"""`Shigoto`: configuration, worker registry, the node, and the async API.

    app = Shigoto()                      # SHIGOTO_DSN, or the embedded PostgreSQL
    @app.worker(queue="emails")
    async def send_email(to: str) -> None: ...
    job = await send_email.enqueue({"to": "a@b.c"})

Non-async code has the same calls on `app.sync` (`SyncShigoto`). Each call's input is
checked and made an operation by `app.commands`, and run by `app.database`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar, Unpack, overload

import psycopg

from shigoto.admin import BulkWhere, JobPage, ListWhere, Status
from shigoto.app_hooks import AppHooks
from shigoto.commands import Commands, needs_transaction
from shigoto.config import Config
from shigoto.db.database import Database
from shigoto.db.queries import Queries
from shigoto.events import EventBus
from shigoto.features.batches import Batch
from shigoto.health import Health, check_health
from shigoto.job import FINAL_STATES, Job, JobSpec
from shigoto.outcomes import ConfigurationError
from shigoto.runtime import drain
from shigoto.runtime.node import Node
from shigoto.schedules import Schedule, ScheduleInfo
from shigoto.sync import SyncShigoto
from shigoto.worker import FunctionWorker, Worker, WorkerRegistry

W = TypeVar("W", bound=type[Worker])


class Shigoto(AppHooks):
    """A shigoto application: configuration, workers, and the async API (`middleware`,
    `on`, `events`, `emit` and the hook decorators are `AppHooks`'s).

    Keyword options are `Config` fields (dsn, schema, queues, poll_interval, pool sizes,
    prepared_statements, home); unset ones come from `SHIGOTO_*` variables.
    """

    def __init__(self, dsn: str | None = None, *, config: Config | None = None, **options: Any):
        if config is not None and (dsn is not None or options):
            raise ConfigurationError("pass either config= or keyword options, not both")
        self.config = config or Config.from_env(dsn=dsn, **options)
        self.workers = WorkerRegistry()
        self.queries = Queries.for_schema(self.config.schema)
        self.bus = EventBus()  # every event of this process (see `shigoto.events`)
        self.commands = Commands(self.config, self.workers, self.queries, self.bus)
        self.database = Database(self.config, self.queries)
        self.sync = SyncShigoto(self)
        self._node: Node | None = None

    def __repr__(self) -> str:
        return f"<Shigoto schema={self.config.schema!r} workers={len(self.workers)}>"

    # -- workers ---------------------------------------------------------------------------

    @overload
    def worker(self, target: W, /) -> W: ...
    @overload
    def worker(self, target: Callable[..., Any], /) -> FunctionWorker: ...
    @overload
    def worker(self, /, **options: Any) -> Callable[[Any], Any]: ...

    def worker(self, target: Any = None, /, **options: Any) -> Any:
        """Register a function or a `Worker` subclass; usable bare or with options.

        Options: name, queue, max_attempts (3), priority (0), timeout (300 s), tags,
        backoff(attempt, error) -> seconds, on_discard(job), unique, cron.
        """
        return self.workers.decorate(self, target, options)

    # -- connections -----------------------------------------------------------------------

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection from the app's pool (autocommit), for work of your own.

        async with app.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO users ...")
            await send_email.enqueue({"to": ...}, conn=conn)   # commits with the user

        Waits at most `connect_timeout` for one, then raises `PoolExhausted` (all in use:
        `pool_max_size` is too small for what holds them) or `DatabaseUnavailable`. A
        node's own statements never wait for these connections.
        """
        async with self.database.connection() as conn:
            yield conn

    async def close(self) -> None:
        """Close the connection pools (the async one and, if used, the sync facade's)."""
        await self.database.close()
        await asyncio.to_thread(self.sync.close)

    # -- running jobs ----------------------------------------------------------------------

    @property
    def node(self) -> Node | None:
        """The node running jobs in this process, once `start()` was called."""
        return self._node

    async def start(self, *, queues: Mapping[str, int] | None = None) -> None:
        """Start a node in this process: it claims and runs jobs until `stop()`. `queues`
        (name -> concurrency) defaults to the configured `queues`."""
        if self._node is not None and self._node.started:
            raise ConfigurationError("start: this app's node is already running")
        self._node = Node(
            self.database,
            self.workers,
            self.config,
            self.bus,
            queues=queues,
            declare_schedules=self.commands.declare_schedules,
        )
        await self._node.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the node gracefully: running jobs get `timeout` seconds (default
        `shutdown_timeout`); unfinished ones return to the queue at once, attempt refunded."""
        if self._node is not None:
            await self._node.stop(timeout)

    async def __aenter__(self) -> Shigoto:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
        await self.close()

    async def add_queue(self, name: str, limit: int, *, everywhere: bool = False) -> None:
        """Start working `name` with `limit` concurrent jobs (on every node if `everywhere`)."""
        await self._queue_change(name, limit, everywhere)

    async def scale_queue(self, name: str, limit: int, *, everywhere: bool = False) -> None:
        """Change a queue's concurrency limit (on every node that works it, if `everywhere`)."""
        await self._queue_change(name, limit, everywhere)

    async def remove_queue(self, name: str, *, everywhere: bool = False) -> None:
        """Stop working `name`: no new claims; running jobs finish (up to shutdown_timeout)."""
        await self._queue_change(name, None, everywhere)

    async def _queue_change(self, name: str, limit: int | None, everywhere: bool) -> None:
        self.commands.queue_change(name, limit)
        if everywhere:
            await self.database.run(self.commands.queue_signal(name, limit))
        else:
            node = self._running_node(
                "queues: no node runs in this process; call app.start() first"
            )
            await node.change_queue(name, limit)

    def pause(self, mode: str = "graceful") -> None:
        """Pause this process's node: it claims nothing until `resume()`. "graceful" lets
        running jobs finish; "aggressive" interrupts them and returns them to the queue
        without using an attempt."""
        self._running_node().pause(mode)

    def resume(self) -> None:
        """Let this process's node claim again after `pause()`."""
        self._running_node().resume()

    def _running_node(self, error: str = "no node runs in this process: start() it first") -> Node:
        if self._node is None or not self._node.started:
            raise ConfigurationError(error)
        return self._node

    async def drain_queue(
        self, queue: str = "default", *, with_scheduled: bool = False
    ) -> dict[str, int]:
        """Run the queue's jobs in this task until none is left; counts per outcome. For
        tests and scripts (see `shigoto.testing`): jobs inserted by the jobs run too;
        `with_scheduled` runs scheduled jobs and retries now instead of when due."""
        return await drain.drain_queue(
            self.database, self.workers, self.config, self.bus, queue, with_scheduled=with_scheduled
        )

    async def migrate(self) -> list[str]:
        """Apply pending migrations; safe to run concurrently. Returns the applied names."""
        return await self.database.run(self.commands.migrate(), transaction=True)

    async def migration_sql(self) -> str:
        """The SQL `migrate()` would run now, without running it (`shigoto migrate --dry-run`)."""
        return await self.database.run(self.commands.migration_sql())

    # -- schema and enqueueing -------------------------------------------------------------

    def new_job(
        self, worker: str, args: Mapping[str, Any] | None = None, **options: Any
    ) -> JobSpec:
        """A `JobSpec` for the worker registered under `worker`; raises `UnknownWorkerError`."""
        return self.commands.new_job(worker, args, **options)

    async def insert(self, spec: JobSpec, *, conn: Any = None) -> Job:
        """Insert one job; with `conn=` it commits or rolls back with the caller's transaction."""
        with self.commands.inserting([self.commands.job(spec)]) as call:
            (spec,) = call.specs
            if self.commands.intercept is not None:
                return call.done(await self.commands.intercept.insert([spec]))[0]
            unique = spec.unique is not None  # its lock lasts until the transaction ends
            job = await self.database.run(self.commands.insert(spec), conn, transaction=unique)
            return call.done(self.commands.inserted([job]))[0]

    async def insert_all(self, specs: Iterable[JobSpec], *, conn: Any = None) -> list[Job]:
        """Insert many jobs in one statement; returns them in the order given."""
        with self.commands.inserting([self.commands.job(spec) for spec in specs]) as call:
            if self.commands.intercept is not None:
                return call.done(await self.commands.intercept.insert(call.specs))
            run = self.commands.insert_all(call.specs)
            jobs = await self.database.run(run, conn, transaction=needs_transaction(call.specs))
            return call.done(self.commands.inserted(jobs))

    async def insert_many(
        self, template: JobSpec, args: Iterable[Mapping[str, Any]], *, conn: Any = None
    ) -> list[int]:
        """Insert one job per item of `args`, each otherwise like `template` (whose args
        are defaults), in one statement; returns their ids. The quickest way: no `Job`
        comes back, and the options are checked once.

            ids = await app.insert_many(send_email.new(priority=5), [{"to": a} for a in to])
        """
        template, each = self.commands.many(template, args)
        if self.commands.intercept is not None or self.commands.one_by_one(template):
            specs = self.commands.specs_of(template, each)
            return [job.id for job in await self.insert_all(specs, conn=conn)]
        with self.commands.inserting([template], len(each)) as call:
            ids = await self.database.run(self.commands.insert_many(call.specs[0], each), conn)
            return call.done(self.commands.inserted_many(call.specs[0], ids))

    async def enqueue(
        self,
        worker: str,
        args: Mapping[str, Any] | None = None,
        *,
        conn: Any = None,
        **options: Any,
    ) -> Job:
        """Insert a job for the worker registered under `worker` (by name)."""
        return await self.insert(self.new_job(worker, args, **options), conn=conn)

    async def batch(
        self,
        specs: Iterable[JobSpec],
        *,
        on_complete: Any = None,
        on_discard: Any = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Insert jobs as a batch, in one transaction (see `shigoto.features.batches`).

        `on_complete`/`on_discard`: workers (or names) whose job is inserted once every job
        of the batch has finished (`on_discard` only if one was discarded), with
        `batch={"id", "total", "completed", "discarded", "cancelled", "meta"}`.
        """
        operation = self.commands.batch(specs, on_complete, on_discard, meta)
        return await self.database.run(operation, transaction=True)

    # -- admin -----------------------------------------------------------------------------

    async def get_job(self, job_id: int) -> Job | None:
        """The job of that id, or None."""
        return await self.database.run(self.commands.get_job(job_id))

    async def get_batch(self, batch_id: int) -> Batch | None:
        """A batch with its counts (live while it runs)."""
        return await self.database.run(self.commands.get_batch(batch_id))

    async def wait_for(self, job_id: int, timeout: float | None = None) -> Job:
        """Wait until a job is finished (completed, discarded or cancelled) and return it.

            job = await app.wait_for(job.id, timeout=30)

        Woken by a notification when the job ends (LISTEN on a connection of its own) or,
        where shigoto may not LISTEN, by looks at growing intervals up to `poll_interval`.
        Raises `TimeoutError` after `timeout` seconds, `JobNotFoundError` if there is none.
        """
        return await self.database.wait_for(job_id, timeout)

    async def list_jobs(
        self, *, limit: int = 50, after: int | None = None, **where: Unpack[ListWhere]
    ) -> JobPage:
        """Jobs newest first; `after=page.next_cursor` fetches the next page. Filters
        (`ListWhere`): `state`, `queue`, `worker` (each one or several), `tags` (jobs that
        carry all of them), `since`/`until` (bounds on `inserted_at`)."""
        page = self.commands.list_jobs(limit=limit, after=after, **where)
        return await self.database.run(page)

    async def cancel(self, job_id: int) -> bool:
        """Cancel one unfinished job; False if it does not exist or had already finished."""
        done = await self.database.run(self.commands.change_job("cancel", job_id))
        return self.commands.cancelled(job_id, done)

    async def retry(self, job_id: int) -> bool:
        """Make a scheduled, retryable or finished job available now (with one more attempt)."""
        return await self.database.run(self.commands.change_job("retry", job_id))

    async def delete(self, job_id: int) -> bool:
        """Delete one job that is not executing; False if there was none to delete."""
        return await self.database.run(self.commands.change_job("delete", job_id))

    async def cancel_by(self, **where: Unpack[BulkWhere]) -> int:
        """Cancel every matching job (default: all not executing or finished); returns a count.
        Filters (`BulkWhere`, at least one): `queue`, `worker`, `tags`, `states`, `since`,
        `until` (bounds on `inserted_at`). Works in batches of 5,000, each a short
        transaction of its own, so that a million matching jobs never hold locks for long."""
        return await self.database.run(self.commands.cancel_by(**where))

    async def retry_by(self, **where: Unpack[BulkWhere]) -> int:
        """Retry every matching job (default states: discarded, cancelled); returns a count.
        Filters and batches as `cancel_by`'s."""
        return await self.database.run(self.commands.retry_by(**where))

    async def delete_by(self, **where: Unpack[BulkWhere]) -> int:
        """Delete every matching job (default states: completed, discarded, cancelled; never
        an executing one); returns a count. Filters and batches as `cancel_by`'s."""
        return await self.database.run(self.commands.delete_by(**where))

    async def delete_finished(
        self, *, older_than: float | timedelta = 0, queue: str | Iterable[str] | None = None
    ) -> int:
        """Delete completed, discarded and cancelled jobs finished at least `older_than` ago."""
        return await self.database.run(self.commands.delete_finished(older_than, queue))

    async def status(self) -> Status:
        """Job counts by queue and state, and each queue's oldest available job age."""
        return await self.database.run(self.commands.status())

    async def health(self, *, timeout: float | None = None) -> Health:
        """Whether the database answers, jobs are stuck, this process's node works: see
        `shigoto.health`. Never raises; bounded by `timeout` (connect_timeout + 2 s)."""
        return await check_health(self, timeout=timeout)

    async def prune(self, *, dry_run: bool = False) -> tuple[int, int]:
        """Archive jobs finished more than `prune_after` ago and delete archived ones older
        than `archive_retention`, now, in short batches; returns (archived, deleted). With
        `dry_run`, only counts what it would do. (The leading node does this every
        `prune_interval` seconds by itself.)"""
        return await self.database.run(self.commands.prune(dry_run))

    # -- schedules, pause and resume -------------------------------------------------------

    async def schedule(
        self,
        name: str,
        schedule: Schedule | str,
        worker: Any,
        args: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ScheduleInfo:
        """Create or redefine a persisted schedule; the leader node fires it.

        await app.schedule("nightly", Cron("0 3 * * *", tz="Europe/Berlin"), cleanup,
                           {"days": 7}, queue="maintenance", catch_up="latest")

        `options` are job options for each firing, plus `catch_up`: a window (seconds or
        timedelta, default 60 minutes), "latest" or "none".
        """
        entry = self.commands.schedule_entry(name, schedule, worker, args, options)
        return await self.database.run(self.commands.schedule(entry))

    async def unschedule(self, name: str) -> bool:
        """Delete a schedule; False if there was none of that name."""
        return await self.database.run(self.commands.unschedule(name))

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule with its last and next moments."""
        return await self.database.run(self.commands.schedules())

    async def pause_job(self, job_id: int) -> bool:
        """Keep a job from being claimed (a running one is interrupted and paused, its
        attempt refunded); False if it is finished or missing."""
        return await self.database.run(self.commands.change_job("pause", job_id))

    async def resume_job(self, job_id: int) -> bool:
        """Let a paused job run again; False if it was not paused."""
        return await self.database.run(self.commands.change_job("resume", job_id))

    async def is_job_paused(self, job_id: int) -> bool:
        """Whether the job is paused."""
        return await self.database.run(self.commands.is_job_paused(job_id))

    async def pause_queue(self, queue: str) -> None:
        """Stop every node from claiming jobs of `queue` (persisted); running jobs finish."""
        await self.database.run(self.commands.pause_queue(queue))
        self.commands.queue_paused(queue, True)

    async def resume_queue(self, queue: str) -> None:
        """Let every node claim jobs of `queue` again."""
        await self.database.run(self.commands.pause_queue(queue, paused=False))
        self.commands.queue_paused(queue, False)

    async def is_queue_paused(self, queue: str) -> bool:
        """Whether `queue` is paused."""
        return await self.database.run(self.commands.is_queue_paused(queue))


__all__ = ["FINAL_STATES", "Shigoto", "SyncShigoto"]
