"""`Shigoto`: configuration, worker registry, and the facade over the job store.

    app = Shigoto()                      # SHIGOTO_DSN, or the embedded PostgreSQL
    await app.migrate()

    @app.worker(queue="emails")
    async def send_email(to: str) -> None: ...

    job = await send_email.enqueue({"to": "a@b.c"})
    page = await app.list_jobs(state="available")

Non-async code uses the same calls on `app.sync` (see `SyncShigoto`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from shigoto import _json, events
from shigoto import _validate as check
from shigoto.admin import CANCELLABLE_STATES, RETRYABLE_STATES, JobFilter, JobPage, Status
from shigoto.config import Config
from shigoto.db import migrator, scheduling, store
from shigoto.db.embedded import embedded_dsn
from shigoto.db.faults import describe, is_connection_fault, unavailable_on_faults
from shigoto.db.operations import Operation, run_async, run_sync
from shigoto.db.pools import LifoAsyncConnectionPool, LifoConnectionPool
from shigoto.db.queries import Queries
from shigoto.events import EventBus, EventStream
from shigoto.features.batches import Batch
from shigoto.health import Health, check_health, check_health_sync
from shigoto.job import FINAL_STATES, Job, JobSpec, JobState
from shigoto.outcomes import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidJobError,
    InvalidScheduleError,
    JobNotFoundError,
)
from shigoto.pipeline import Middleware
from shigoto.schedules import Cron, Schedule, ScheduleInfo, catch_up_policy
from shigoto.worker import FunctionWorker, Worker, WorkerRegistry

if TYPE_CHECKING:
    from shigoto.runtime.node import Node
    from shigoto.testing import Recorder

T = TypeVar("T")
W = TypeVar("W", bound=type[Worker])
H = TypeVar("H", bound=Callable[..., object])
M = TypeVar("M", bound=Middleware)

logger = logging.getLogger("shigoto.app")

MAX_PAGE = 1000
EXHAUSTED_HINT = (
    "; each app.connection() block (yours, or a job's) holds one until it ends: "
    "raise pool_max_size, or hold connections for less time"
)
RECHECK = 5.0  # seconds between looks at a waited-for job when no notification comes


def _many(
    workers: WorkerRegistry, template: object, args: Iterable[Mapping[str, Any]]
) -> tuple[JobSpec, list[dict[str, Any]]]:
    """insert_many's input, checked: the template, and each job's args (over its own)."""
    template = Shigoto._spec(template)
    if isinstance(args, Mapping) or not isinstance(args, Iterable):
        raise InvalidJobError("args", "expected a list of JSON objects, one per job")
    each = [check.json_object(item, f"args[{i}]") for i, item in enumerate(args)]
    if template.args:
        each = [{**template.args, **item} for item in each]
    if template.worker in workers.signatures:
        for i, item in enumerate(each):
            workers.check_args(template.worker, item, f"args[{i}]")
    return template, each


def _needs_one_by_one(template: JobSpec) -> bool:
    """Unique keys and dependencies take insert_all's way (a key per job, links)."""
    return template.unique is not None or bool(template.depends_on)


def _specs_of(template: JobSpec, each: list[dict[str, Any]]) -> list[JobSpec]:
    return [dataclasses.replace(template, args=item) for item in each]


def _needs_transaction(spec: JobSpec) -> bool:
    """A unique job (its key's lock lasts the transaction) or one depending on a job of the
    same call (linked after the insert) must be written in one transaction."""
    return spec.unique is not None or any(not isinstance(d, int) for d in spec.depends_on)


class _Facade:
    """What the async app and its sync twin share: configuration and the operations."""

    config: Config
    workers: WorkerRegistry
    queries: Queries

    def _dsn(self) -> str:
        return self.config.dsn or embedded_dsn(self.config.home)

    def _connection_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": "shigoto"}
        if not self.config.prepared_statements:
            kwargs["prepare_threshold"] = None  # PgBouncer in transaction pooling mode
        return kwargs

    def _listener_kwargs(self, dsn: str) -> dict[str, Any]:
        return {**self._pool_kwargs(dsn), "application_name": "shigoto-listener"}

    def _poll_pauses(self) -> Iterator[float]:
        """How long `wait_for` sleeps between looks where it may not LISTEN: from 10 ms,
        doubling up to `poll_interval` (a short job is seen soon, a long one costs little)."""
        pause = min(0.01, self.config.poll_interval)
        while True:
            yield pause
            pause = min(2 * pause, self.config.poll_interval)

    def _pool_kwargs(self, dsn: str) -> dict[str, Any]:
        """Connection options of a pool (or a listener): also a bound on each attempt to
        connect (libpq counts whole seconds, at least 2), so that a server that does not
        answer at all cannot keep the pool's workers (or the listener) waiting for minutes;
        a `connect_timeout` in the DSN wins."""
        kwargs = self._connection_kwargs()
        if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(dsn):
            kwargs["connect_timeout"] = max(2, math.ceil(self.config.connect_timeout))
        return kwargs

    @property
    def _utc_session(self) -> bool:
        """Whether a pooled connection is set to UTC (session_utc.sql). Not behind PgBouncer
        in transaction pooling mode (prepared statements off): a session's setting would
        stay with a server connection that other clients get next."""
        return self.config.prepared_statements

    def new_job(
        self, worker: str, args: Mapping[str, Any] | None = None, **options: Any
    ) -> JobSpec:
        """A `JobSpec` for the worker registered under `worker`; raises `UnknownWorkerError`."""
        return self.workers.get(check.worker_name(worker)).new(args, **options)

    @staticmethod
    def _spec(spec: object) -> JobSpec:
        if not isinstance(spec, JobSpec):
            raise InvalidJobError(
                "spec", f"expected a JobSpec (from Worker.new), got {type(spec).__name__}"
            )
        return spec

    def _job(self, spec: object) -> JobSpec:
        """A spec about to be inserted as a job: a `JobSpec` whose args its function worker,
        if this app registers one by that name, can be called with."""
        spec = self._spec(spec)
        self.workers.check_args(spec.worker, spec.args)
        return spec

    def _schedule_entry(
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

    def _prune_op(self, dry_run: bool) -> Operation[tuple[int, int]]:
        if self.config.prune_after is None:
            raise ConfigurationError("prune: pruning is off (prune_after=None)")
        after, retention = self.config.prune_after, self.config.archive_retention
        if dry_run:
            return store.prune_preview(self.queries, prune_after=after, retention=retention)
        return store.prune(self.queries, prune_after=after, retention=retention)

    def _batch_op(
        self,
        specs: Iterable[JobSpec],
        on_complete: Any,
        on_discard: Any,
        meta: Mapping[str, Any] | None,
    ) -> Operation[Batch]:
        checked = [self._job(spec) for spec in specs]
        if not checked:
            raise InvalidJobError("specs", "a batch needs at least one job")
        return store.insert_batch(
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

    def _declared_schedules(self) -> list[ScheduleInfo]:
        """The entries of `cron=` and of workers declared with `cron=`."""
        entries = []
        for item in self.config.cron:
            if not 4 <= len(item) <= 5:
                raise ConfigurationError(
                    f"cron: expected (name, schedule, worker, args[, options]), got {item!r}"
                )
            entries.append(self._schedule_entry(*item))
        for worker_name in self.workers:
            declared = self.workers.get(worker_name).cron
            if declared is not None:
                assert isinstance(declared, Schedule)  # checked at registration
                entries.append(self._schedule_entry(worker_name, declared, worker_name))
        return entries

    def _insert_all_op(self, specs: Iterable[JobSpec]) -> Operation[list[Job]]:
        return store.insert_all(self.queries, [self._spec(spec) for spec in specs])

    def _list_op(self, limit: int, after: int | None, where: dict[str, Any]) -> Operation[JobPage]:
        check.integer(limit, "limit", (1, MAX_PAGE))
        if after is not None:
            check.integer(after, "after", (1, 2**63 - 1))
        return store.list_jobs(self.queries, JobFilter.build(**where), limit=limit, after=after)

    @staticmethod
    def _bulk_filter(
        where: dict[str, Any], allowed: Sequence[JobState], default: Sequence[JobState]
    ) -> JobFilter:
        states = where.pop("states", None)
        filter_ = JobFilter.build(state=states, **where)
        if filter_.is_empty():
            raise InvalidJobError(
                "filter", "give at least one of queue, worker, tags, states, since or until"
            )
        return filter_.only_states(allowed, default)

    def _cancel_by_op(self, where: dict[str, Any]) -> Operation[int]:
        default = [s for s in CANCELLABLE_STATES if s is not JobState.EXECUTING]
        return store.cancel_by(self.queries, self._bulk_filter(where, CANCELLABLE_STATES, default))

    def _retry_by_op(self, where: dict[str, Any]) -> Operation[int]:
        default = [JobState.DISCARDED, JobState.CANCELLED]
        return store.retry_by(self.queries, self._bulk_filter(where, RETRYABLE_STATES, default))

    def _delete_by_op(self, where: dict[str, Any]) -> Operation[int]:
        deletable = [s for s in JobState if s is not JobState.EXECUTING]
        finished = [s for s in JobState if s in FINAL_STATES]
        return store.delete_by(self.queries, self._bulk_filter(where, deletable, finished))

    def _delete_finished_op(
        self, older_than: float | timedelta, queue: str | Iterable[str] | None
    ) -> Operation[int]:
        age = timedelta(seconds=check.seconds(older_than, "older_than"))
        queues = JobFilter.build(queue=queue).queues
        return store.delete_finished(self.queries, age, queues)


class Shigoto(_Facade):
    """A shigoto application: configuration, workers, and the async API.

    Keyword options are `Config` fields (dsn, schema, queues, poll_interval, pool sizes,
    prepared_statements, home); unset ones come from `SHIGOTO_*` variables.
    """

    def __init__(self, dsn: str | None = None, *, config: Config | None = None, **options: Any):
        if config is not None and (dsn is not None or options):
            raise ConfigurationError("pass either config= or keyword options, not both")
        self.config = config or Config.from_env(dsn=dsn, **options)
        self.workers = WorkerRegistry()
        self.queries = Queries.for_schema(self.config.schema)
        self.sync = SyncShigoto(self)
        self._pool: AsyncConnectionPool | None = None
        self._pool_lock = asyncio.Lock()
        self._node: Node | None = None
        self._testing: str | Recorder | None = None  # set by shigoto.testing.inline/manual
        self.bus = EventBus()  # every event of this process (see `shigoto.events`)

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

        def register(obj: Any) -> Any:
            if isinstance(obj, type):
                return self.workers.register_class(self, obj, options)
            return self.workers.register_function(self, obj, options)

        return register if target is None else register(target)

    def middleware(self, middleware: M) -> M:
        """Run `middleware(job, call_next)` around every job, inside the middleware added
        before it and outside the worker's own (see `shigoto.pipeline`). A decorator.

            @app.middleware
            async def timing(job: Job, call_next):
                started = time.monotonic()
                try:
                    return await call_next()
                finally:
                    log.info("%s took %.3fs", job.worker, time.monotonic() - started)
        """
        self.workers.add_middleware(middleware)
        return middleware

    # -- events ------------------------------------------------------------------------------

    def on(self, pattern: str) -> Callable[[H], H]:
        """Call the decorated function (sync or async) with each event matching `pattern`:
        a name ("job.completed"), a prefix ("job.*") or "*". Errors are logged.

            @app.on("job.failed")
            def alert(event: Event) -> None:
                print(event.job_id, event.data["kind"], event.data["will_retry"])
        """
        events.check_pattern(pattern)

        def subscribe(handler: H) -> H:
            self.bus.subscribe(pattern, handler)
            return handler

        return subscribe

    def events(self, pattern: str = "*", *, size: int = events.DEFAULT_BUFFER) -> EventStream:
        """A live stream of this process's events matching `pattern` (and custom events
        from every node), from now on; at most `size` wait unread (the oldest are dropped,
        counted in `stream.dropped`).

            async with app.events("job.*") as stream:
                async for event in stream:
                    ...
        """
        return self.bus.stream(pattern, size=size)

    async def emit(
        self, job_id: int | None, name: str, data: Mapping[str, Any] | None = None
    ) -> None:
        """Publish a custom event, `custom.<name>`, here at once and on every node (it is
        not stored: whoever listens now hears it). `data` is a small JSON object.

            await app.emit(current_job().id, "progress", {"pct": 75})
        """
        message = events.custom_message(self.bus.origin, job_id, name, data)
        event = events.custom_event(message)
        assert event is not None
        if self.bus.wants(event.name):
            self.bus.publish(event)
        if self.config.listens:
            await self._run(store.signal(self.queries, message))

    def on_job_stopped(self, hook: H) -> H:
        """Call `hook(job, will_retry)` (sync or async) where a job ran, once its outcome is
        written: for every run that ended it (completed, discarded, cancelled by its worker)
        and for every failed run (`will_retry` is True when it will run again). A hook that
        takes one argument gets the job alone. Runs on a node, in `drain_queue` and inline.
        A decorator; errors are logged.

            @app.on_job_stopped
            def count(job: Job, will_retry: bool) -> None:
                metrics.count(job.worker, "retry" if will_retry else job.state)
        """
        handler = events.stopped_handler(hook)
        for name in events.STOPPED_EVENTS:
            self.bus.subscribe(name, handler, buffer=events.HOOK_BUFFER)
        return hook

    def on_batch_stopped(self, hook: H) -> H:
        """Call `hook(batch)` (sync or async) on the node that closes a batch, once per batch,
        with its final counts. A decorator; errors are logged."""
        handler = events.hook_handler(hook, events.batch_args)
        self.bus.subscribe("batch.completed", handler, buffer=events.HOOK_BUFFER)
        return hook

    def on_job_start(self, hook: H) -> H:
        """Call `hook(job)` (sync or async) as each run of a job starts. A decorator."""
        handler = events.hook_handler(hook, events.job_args)
        self.bus.subscribe("job.started", handler, buffer=events.HOOK_BUFFER)
        return hook

    def on_job_complete(self, hook: H) -> H:
        """Call `hook(job)` (sync or async) once a job completed (`job.result` is set)."""
        handler = events.hook_handler(hook, events.job_args)
        self.bus.subscribe("job.completed", handler, buffer=events.HOOK_BUFFER)
        return hook

    def on_job_fail(self, hook: H) -> H:
        """Call `hook(job, error)` (sync or async) after every failed run: `error` is what it
        raised (None for a run lost with its node), `job.state` says whether it will run
        again ("retryable", "available") or not ("discarded")."""
        handler = events.hook_handler(hook, events.failure_args)
        self.bus.subscribe("job.failed", handler, buffer=events.HOOK_BUFFER)
        return hook

    def _inserted(self, jobs: Sequence[Job]) -> None:
        if self.bus.wants("job.inserted"):
            for job in jobs:
                self.bus.publish(events.job_event("job.inserted", job))

    def _inserted_many(self, template: JobSpec, ids: Sequence[int]) -> None:
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

    # -- connections -----------------------------------------------------------------------

    async def _configure_connection(self, conn: psycopg.AsyncConnection[Any]) -> None:
        _json.use_on(conn)
        if self._utc_session:
            await conn.execute(self.queries.sql("session_utc"))

    async def _get_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await self._open_pool(
                        "shigoto",
                        self.config.pool_min_size,
                        self.config.pool_max_size,
                        exhausted_hint=EXHAUSTED_HINT,
                    )
        return self._pool

    async def _open_pool(
        self, name: str, min_size: int, max_size: int, *, exhausted_hint: str = ""
    ) -> LifoAsyncConnectionPool:
        """A pool of connections to this app's database: the app's, or a node's own. It
        connects in the background: a `getconn` waits at most `connect_timeout` for a
        connection, then raises `DatabaseUnavailable` (see `shigoto.db.pools`)."""
        dsn = await asyncio.to_thread(self._dsn)
        pool = LifoAsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs=self._pool_kwargs(dsn),
            configure=self._configure_connection,
            open=False,
            name=name,
            timeout=self.config.connect_timeout,
            exhausted_hint=exhausted_hint,
        )
        await pool.open()
        return pool

    async def _run(
        self, operation: Operation[T], conn: Any = None, *, transaction: bool = False
    ) -> T:
        if conn is not None:
            if not isinstance(conn, psycopg.AsyncConnection):
                operation.close()
                raise ConfigurationError(
                    f"conn: expected a psycopg.AsyncConnection, got {type(conn).__name__}; "
                    "with a sync connection use app.sync"
                )
            return await run_async(conn, operation, transaction=transaction)
        pool = self._pool or await self._get_pool()
        return await self._run_in(pool, operation, transaction=transaction)

    @staticmethod
    async def _run_in(
        pool: AsyncConnectionPool, operation: Operation[T], *, transaction: bool = False
    ) -> T:
        """Run `operation` on a connection of `pool`; a connection fault is raised as
        `DatabaseUnavailable`, and the statement is not sent again (it may have run)."""
        try:
            # getconn/putconn rather than `pool.connection()`: the same, without a context
            # manager's generator on every statement of a busy node.
            pooled = await pool.getconn()
            try:
                return await run_async(pooled, operation, transaction=transaction)
            finally:
                await pool.putconn(pooled)
        except psycopg.OperationalError as error:
            if not is_connection_fault(error):
                raise  # about the request, not the connection
            raise DatabaseUnavailable(describe(error), may_have_run=True) from error

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection from the app's pool (autocommit), for work of your own.

        async with app.connection() as conn, conn.transaction():
            await conn.execute("INSERT INTO users ...")
            await send_email.enqueue({"to": ...}, conn=conn)   # commits with the user

        Waits at most `connect_timeout` for one, then raises `PoolExhausted` (every
        connection is in use: `pool_max_size` is too small for what holds them) or
        `DatabaseUnavailable` (the server cannot be reached). A node's own statements
        never wait for these connections.
        """
        pool = self._pool or await self._get_pool()
        async with pool.connection() as conn:
            yield conn

    async def close(self) -> None:
        """Close the connection pools (the async one and, if used, the sync facade's)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await asyncio.to_thread(self.sync.close)

    async def _connect_listener(self) -> psycopg.AsyncConnection[Any]:
        """A dedicated connection for LISTEN: `listen_dsn` (past PgBouncer) or the DSN; only
        where `config.listens`."""
        dsn = self.config.listen_dsn
        if not dsn:
            dsn = await asyncio.to_thread(self._dsn)
        return await psycopg.AsyncConnection.connect(dsn, **self._listener_kwargs(dsn))

    def _connect_heartbeat(self, timeout: float) -> psycopg.Connection[Any]:
        """A node's heartbeat connection: direct (no pool, so no job can hold it), bounded
        by `timeout` seconds on the client side (a connect timeout, and a TCP user timeout
        for a server gone silent), which needs no session setting and passes PgBouncer."""
        kwargs: dict[str, Any] = {
            **self._connection_kwargs(),
            "application_name": "shigoto-heartbeat",
            "connect_timeout": max(2, math.ceil(timeout)),
            "tcp_user_timeout": int(timeout * 1000),
        }
        return psycopg.connect(self._dsn(), **kwargs)

    # -- running jobs ----------------------------------------------------------------------

    @property
    def node(self) -> Node | None:
        """The node running jobs in this process, once `start()` was called."""
        return self._node

    async def start(self, *, queues: Mapping[str, int] | None = None) -> None:
        """Start a node in this process: it claims and runs jobs until `stop()`.

        `queues` (name -> concurrency) defaults to the configured `queues`.
        """
        from shigoto.runtime.node import Node

        if self._node is not None and self._node.started:
            raise ConfigurationError("start: this app's node is already running")
        self._node = Node(self, queues)
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
        check.queue(name)
        if limit is not None:
            check.integer(limit, "limit", (1, 10_000))
        if everywhere:
            if not self.config.listens:
                raise ConfigurationError(
                    "everywhere: needs the notifier (LISTEN/NOTIFY); it is turned off, or "
                    "prepared statements are off and there is no listen_dsn"
                )
            await self._run(
                store.signal(self.queries, {"action": "queue", "queue": name, "limit": limit})
            )
            return
        node = self._require_node()
        if limit is None:
            await node.remove_queue(name)
        elif name in node.producers:
            node.scale_queue(name, limit)
        else:
            node.add_queue(name, limit)

    def _require_node(self) -> Node:
        if self._node is None or not self._node.started:
            raise ConfigurationError("queues: no node runs in this process; call app.start() first")
        return self._node

    async def drain_queue(
        self, queue: str = "default", *, with_scheduled: bool = False
    ) -> dict[str, int]:
        """Run the queue's jobs in this task until none is left; counts per outcome.

        For tests and scripts: see `shigoto.testing`. Jobs inserted by the jobs run too;
        `with_scheduled` runs scheduled jobs and retries now instead of when due.
        """
        from shigoto.testing import drain_queue

        return await drain_queue(self, queue, with_scheduled=with_scheduled)

    # -- schema ----------------------------------------------------------------------------

    async def migrate(self) -> list[str]:
        """Apply pending migrations; safe to run concurrently. Returns the applied names."""
        done = await self._run(migrator.migrate(self.queries), transaction=True)
        return [f"{m.version:04d}_{m.name}" for m in done]

    async def migration_sql(self) -> str:
        """The SQL `migrate()` would run now, without running it (`shigoto migrate --dry-run`)."""
        todo = await self._run(migrator.pending(self.queries))
        return migrator.dry_run_script(self.queries, todo)

    # -- enqueueing ------------------------------------------------------------------------

    async def insert(self, spec: JobSpec, *, conn: Any = None) -> Job:
        """Insert one job; with `conn=` it commits or rolls back with the caller's transaction."""
        spec = self._job(spec)
        if self._testing is not None:
            return (await self._insert_for_testing([spec]))[0]
        unique = spec.unique is not None  # its lock lasts until the transaction ends
        job = await self._run(store.insert(self.queries, spec), conn, transaction=unique)
        self._inserted((job,))
        return job

    async def insert_all(self, specs: Iterable[JobSpec], *, conn: Any = None) -> list[Job]:
        """Insert many jobs in one statement; returns them in the order given."""
        specs = [self._job(spec) for spec in specs]
        if self._testing is not None:
            return await self._insert_for_testing(specs)
        together = any(_needs_transaction(spec) for spec in specs)
        jobs = await self._run(self._insert_all_op(specs), conn, transaction=together)
        self._inserted(jobs)
        return jobs

    async def insert_many(
        self, template: JobSpec, args: Iterable[Mapping[str, Any]], *, conn: Any = None
    ) -> list[int]:
        """Insert one job per item of `args`, each otherwise like `template` (its worker and
        options; its own args, if any, are the defaults of each job's), in one statement;
        returns their ids in order. The quickest way to insert many jobs: no `Job` comes
        back, and the options are checked once.

            ids = await app.insert_many(send_email.new(priority=5), [{"to": a} for a in to])
        """
        template, each = _many(self.workers, template, args)
        if self._testing is not None or _needs_one_by_one(template):
            jobs = await self.insert_all(_specs_of(template, each), conn=conn)
            return [job.id for job in jobs]
        ids = await self._run(store.insert_many(self.queries, template, each), conn)
        self._inserted_many(template, ids)
        return ids

    async def _insert_for_testing(self, specs: list[JobSpec]) -> list[Job]:
        from shigoto.testing import run_inline

        if self._testing == "inline":
            return [await run_inline(self, spec) for spec in specs]
        return [self._recorder().record(spec) for spec in specs]

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

    # -- admin -----------------------------------------------------------------------------

    async def get_job(self, job_id: int) -> Job | None:
        return await self._run(store.get_job(self.queries, check.job_id(job_id)))

    async def list_jobs(
        self,
        *,
        state: JobState | str | Iterable[JobState | str] | None = None,
        queue: str | Iterable[str] | None = None,
        worker: str | Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        after: int | None = None,
    ) -> JobPage:
        """Jobs newest first; `after=page.next_cursor` fetches the next page.

        `since`/`until` bound `inserted_at`; `tags` matches jobs that carry all of them.
        """
        where = {"state": state, "queue": queue, "worker": worker, "tags": tags}
        return await self._run(
            self._list_op(limit, after, {**where, "since": since, "until": until})
        )

    async def cancel(self, job_id: int) -> bool:
        """Cancel one unfinished job; False if it does not exist or had already finished."""
        cancelled = await self._run(store.cancel(self.queries, check.job_id(job_id)))
        if cancelled:
            self.bus.emit("job.cancelled", job_id=job_id, data={"by": "cancel"})
        return cancelled

    async def retry(self, job_id: int) -> bool:
        """Make a scheduled, retryable or finished job available now (with one more attempt)."""
        return await self._run(store.retry(self.queries, check.job_id(job_id)))

    async def cancel_by(
        self,
        *,
        queue: str | Iterable[str] | None = None,
        worker: str | Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        states: Iterable[JobState | str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """Cancel every matching job (default: all not executing or finished); returns a count.

        `since`/`until` bound `inserted_at`. Works in batches of 5,000, each a short
        transaction of its own, so that a million matching jobs never hold locks for long.
        """
        where = {"queue": queue, "worker": worker, "tags": tags, "states": states}
        return await self._run(self._cancel_by_op({**where, "since": since, "until": until}))

    async def retry_by(
        self,
        *,
        queue: str | Iterable[str] | None = None,
        worker: str | Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        states: Iterable[JobState | str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """Retry every matching job (default states: discarded, cancelled); returns a count.
        Batched like `cancel_by`."""
        where = {"queue": queue, "worker": worker, "tags": tags, "states": states}
        return await self._run(self._retry_by_op({**where, "since": since, "until": until}))

    async def delete_by(
        self,
        *,
        queue: str | Iterable[str] | None = None,
        worker: str | Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        states: Iterable[JobState | str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """Delete every matching job (default states: completed, discarded, cancelled; never
        an executing one); returns a count. Batched like `cancel_by`."""
        where = {"queue": queue, "worker": worker, "tags": tags, "states": states}
        return await self._run(self._delete_by_op({**where, "since": since, "until": until}))

    async def delete(self, job_id: int) -> bool:
        """Delete one job that is not executing; False if there was none to delete."""
        return await self._run(store.delete(self.queries, check.job_id(job_id)))

    async def delete_finished(
        self, *, older_than: float | timedelta = 0, queue: str | Iterable[str] | None = None
    ) -> int:
        """Delete completed, discarded and cancelled jobs finished at least `older_than` ago."""
        return await self._run(self._delete_finished_op(older_than, queue))

    async def status(self) -> Status:
        """Job counts by queue and state, and each queue's oldest available job age."""
        return await self._run(store.status(self.queries))

    async def health(self, *, timeout: float | None = None) -> Health:
        """Whether the database answers, jobs are stuck, this process's node works: see
        `shigoto.health`. Never raises; bounded by `timeout` (connect_timeout + 2 s)."""
        return await check_health(self, timeout=timeout)

    async def prune(self, *, dry_run: bool = False) -> tuple[int, int]:
        """Archive jobs finished more than `prune_after` ago and delete archived ones older
        than `archive_retention`, now, in short batches; returns (archived, deleted). With
        `dry_run`, only counts what it would do. (The leading node does this every
        `prune_interval` seconds by itself.)"""
        return await self._run(self._prune_op(dry_run))

    async def batch(
        self,
        specs: Iterable[JobSpec],
        *,
        on_complete: Any = None,
        on_discard: Any = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Insert jobs as a batch, in one transaction (see `shigoto.features.batches`).

        `on_complete`/`on_discard` are workers (or worker names) whose job is inserted once
        when every job of the batch has finished (`on_discard` only if one was discarded),
        with `batch={"id", "total", "completed", "discarded", "cancelled", "meta"}`.
        """
        op = self._batch_op(specs, on_complete, on_discard, meta)
        return await self._run(op, transaction=True)

    async def get_batch(self, batch_id: int) -> Batch | None:
        """A batch with its counts (live while it runs)."""
        return await self._run(store.get_batch(self.queries, check.job_id(batch_id, "batch_id")))

    async def wait_for(self, job_id: int, timeout: float | None = None) -> Job:
        """Wait until a job is finished (completed, discarded or cancelled) and return it.

        job = await app.wait_for(job.id, timeout=30)
        job.state, job.result

        Woken by a notification when the job ends (LISTEN on a connection of its own, no
        polling), or, where shigoto may not LISTEN (`notifier=False`, or prepared statements
        off without `listen_dsn`), by a look at growing intervals up to `poll_interval`.
        Raises `TimeoutError` after `timeout` seconds and `JobNotFoundError` if there is no
        such job.
        """
        check.integer(job_id, "job_id", (1, 2**63 - 1))
        if timeout is not None:
            check.seconds(timeout, "timeout")
        async with (
            asyncio.timeout(timeout),
            contextlib.AsyncExitStack() as stack,
        ):
            stack.enter_context(unavailable_on_faults())  # the listener's faults too
            listener = None
            if self.config.listens:
                listener = await stack.enter_async_context(await self._connect_listener())
                await run_async(listener, store.listen_finished(self.queries))
                job = await self._run(store.await_job(self.queries, job_id))
            else:
                job = await self.get_job(job_id)
            pauses = self._poll_pauses()
            while job is not None and not job.state.is_final:
                if listener is None:
                    await asyncio.sleep(next(pauses))
                else:
                    # The notification, or a look every RECHECK seconds in case the listener
                    # missed it (a reconnect drops notifications).
                    async for note in listener.notifies(timeout=RECHECK):
                        if note.payload == str(job_id):
                            break
                job = await self.get_job(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    # -- schedules ---------------------------------------------------------------------------

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
        entry = self._schedule_entry(name, schedule, worker, args, options)
        return await self._run(scheduling.save(self.queries, entry))

    async def unschedule(self, name: str) -> bool:
        """Delete a schedule; False if there was none of that name."""
        return await self._run(scheduling.delete(self.queries, name))

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule with its last and next moments."""
        _, entries = await self._run(scheduling.list_all(self.queries))
        return entries

    async def _declare_schedules(self) -> None:
        """Save the declared schedules (a node does this as it starts) and report the
        entries no worker of this app can run."""
        for entry in self._declared_schedules():
            await self._run(scheduling.save(self.queries, entry))
        for entry in await self.schedules():
            if entry.worker not in self.workers:
                logger.warning(
                    "schedule %s fires worker %r, which this app does not register; "
                    "its jobs wait for a node that does",
                    entry.name,
                    entry.worker,
                )

    # -- pause and resume --------------------------------------------------------------------

    async def pause_job(self, job_id: int) -> bool:
        """Keep a job from being claimed (a running one is interrupted and paused, its
        attempt refunded); False if it is finished or missing."""
        return await self._run(store.pause_job(self.queries, check.job_id(job_id)))

    async def resume_job(self, job_id: int) -> bool:
        """Let a paused job run again; False if it was not paused."""
        return await self._run(store.resume_job(self.queries, check.job_id(job_id)))

    async def is_job_paused(self, job_id: int) -> bool:
        job = await self.get_job(job_id)
        return job is not None and job.state is JobState.PAUSED

    async def pause_queue(self, queue: str) -> None:
        """Stop every node from claiming jobs of `queue` (persisted); running jobs finish."""
        await self._run(store.set_queue_paused(self.queries, check.queue(queue), True))
        self.bus.emit("queue.paused", queue=queue)

    async def resume_queue(self, queue: str) -> None:
        """Let nodes claim jobs of a paused queue again."""
        await self._run(store.set_queue_paused(self.queries, check.queue(queue), False))
        self.bus.emit("queue.resumed", queue=queue)

    async def is_queue_paused(self, queue: str) -> bool:
        return check.queue(queue) in await self._run(store.paused_queues(self.queries))

    def pause(self, mode: str = "graceful") -> None:
        """Pause this process's node: it claims nothing until `resume()`. "graceful" lets
        running jobs finish; "aggressive" interrupts them and returns them to the queue
        without using an attempt."""
        self._running_node().pause(mode)

    def resume(self) -> None:
        self._running_node().resume()

    def _running_node(self) -> Node:
        if self._node is None or not self._node.started:
            raise ConfigurationError("no node runs in this process: start() it first")
        return self._node

    def _recorder(self) -> Recorder:
        from shigoto.testing import Recorder

        assert isinstance(self._testing, Recorder)
        return self._testing


class SyncShigoto(_Facade):
    """The same calls for code that is not async (Django/Flask views, scripts, the CLI).

        job = app.sync.insert(send_email.new({"to": "a@b.c"}), conn=django_psycopg_conn)

    It has its own small pool of sync connections, opened on first use.
    """

    def __init__(self, app: Shigoto) -> None:
        self.app = app
        self.config = app.config
        self.workers = app.workers
        self.queries = app.queries
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()

    def _configure_connection(self, conn: psycopg.Connection[Any]) -> None:
        _json.use_on(conn)
        if self._utc_session:
            conn.execute(self.queries.sql("session_utc"))

    def _get_pool(self) -> ConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                dsn = self._dsn()
                pool = LifoConnectionPool(
                    dsn,
                    min_size=min(self.config.pool_min_size, 1),
                    max_size=self.config.pool_max_size,
                    kwargs=self._pool_kwargs(dsn),
                    configure=self._configure_connection,
                    open=False,
                    name="shigoto-sync",
                    timeout=self.config.connect_timeout,
                    exhausted_hint=EXHAUSTED_HINT,
                )
                pool.open()  # connects in the background, as the async app's pool does
                self._pool = pool
            return self._pool

    def _run(self, operation: Operation[T], conn: Any = None, *, transaction: bool = False) -> T:
        if conn is not None:
            if not isinstance(conn, psycopg.Connection):
                operation.close()
                raise ConfigurationError(
                    f"conn: expected a psycopg.Connection, got {type(conn).__name__}; "
                    "with an async connection use the async API"
                )
            return run_sync(conn, operation, transaction=transaction)
        pool = self._pool or self._get_pool()
        try:
            # getconn/putconn, as the async app does: no context manager per statement
            pooled = pool.getconn()
            try:
                return run_sync(pooled, operation, transaction=transaction)
            finally:
                pool.putconn(pooled)
        except psycopg.OperationalError as error:
            if not is_connection_fault(error):
                raise  # about the request, not the connection
            raise DatabaseUnavailable(describe(error), may_have_run=True) from error

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A sync connection from the facade's pool (autocommit); see `Shigoto.connection`."""
        with self._get_pool().connection() as conn:
            yield conn

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def migrate(self) -> list[str]:
        done = self._run(migrator.migrate(self.queries), transaction=True)
        return [f"{m.version:04d}_{m.name}" for m in done]

    def migration_sql(self) -> str:
        return migrator.dry_run_script(self.queries, self._run(migrator.pending(self.queries)))

    def insert(self, spec: JobSpec, *, conn: Any = None) -> Job:
        spec = self._job(spec)
        if self.app._testing is not None:
            return self._insert_for_testing([spec])[0]
        unique = spec.unique is not None
        job = self._run(store.insert(self.queries, spec), conn, transaction=unique)
        self.app._inserted((job,))
        return job

    def insert_all(self, specs: Iterable[JobSpec], *, conn: Any = None) -> list[Job]:
        specs = [self._job(spec) for spec in specs]
        if self.app._testing is not None:
            return self._insert_for_testing(specs)
        together = any(_needs_transaction(spec) for spec in specs)
        jobs = self._run(self._insert_all_op(specs), conn, transaction=together)
        self.app._inserted(jobs)
        return jobs

    def insert_many(
        self, template: JobSpec, args: Iterable[Mapping[str, Any]], *, conn: Any = None
    ) -> list[int]:
        template, each = _many(self.workers, template, args)
        if self.app._testing is not None or _needs_one_by_one(template):
            return [job.id for job in self.insert_all(_specs_of(template, each), conn=conn)]
        ids = self._run(store.insert_many(self.queries, template, each), conn)
        self.app._inserted_many(template, ids)
        return ids

    def _insert_for_testing(self, specs: list[JobSpec]) -> list[Job]:
        from shigoto.testing import run_inline_sync

        if self.app._testing == "inline":
            return [run_inline_sync(self.app, spec) for spec in specs]
        recorder = self.app._recorder()
        return [recorder.record(spec) for spec in specs]

    def enqueue(
        self,
        worker: str,
        args: Mapping[str, Any] | None = None,
        *,
        conn: Any = None,
        **options: Any,
    ) -> Job:
        return self.insert(self.new_job(worker, args, **options), conn=conn)

    def get_job(self, job_id: int) -> Job | None:
        return self._run(store.get_job(self.queries, check.job_id(job_id)))

    def list_jobs(self, *, limit: int = 50, after: int | None = None, **where: Any) -> JobPage:
        return self._run(self._list_op(limit, after, where))

    def cancel(self, job_id: int) -> bool:
        cancelled = self._run(store.cancel(self.queries, check.job_id(job_id)))
        if cancelled:
            self.app.bus.emit("job.cancelled", job_id=job_id, data={"by": "cancel"})
        return cancelled

    def retry(self, job_id: int) -> bool:
        return self._run(store.retry(self.queries, check.job_id(job_id)))

    def cancel_by(self, **where: Any) -> int:
        return self._run(self._cancel_by_op(where))

    def retry_by(self, **where: Any) -> int:
        return self._run(self._retry_by_op(where))

    def delete_by(self, **where: Any) -> int:
        return self._run(self._delete_by_op(where))

    def prune(self, *, dry_run: bool = False) -> tuple[int, int]:
        return self._run(self._prune_op(dry_run))

    def batch(
        self,
        specs: Iterable[JobSpec],
        *,
        on_complete: Any = None,
        on_discard: Any = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Batch:
        op = self._batch_op(specs, on_complete, on_discard, meta)
        return self._run(op, transaction=True)

    def get_batch(self, batch_id: int) -> Batch | None:
        return self._run(store.get_batch(self.queries, check.job_id(batch_id, "batch_id")))

    def wait_for(self, job_id: int, timeout: float | None = None) -> Job:
        """`Shigoto.wait_for` for code that is not async (blocks the calling thread)."""
        check.integer(job_id, "job_id", (1, 2**63 - 1))
        deadline = None if timeout is None else time.monotonic() + check.seconds(timeout, "timeout")
        with contextlib.ExitStack() as stack:
            stack.enter_context(unavailable_on_faults())  # the listener's faults too
            listener = None
            if self.config.listens:
                dsn = self.config.listen_dsn or self._dsn()
                listener = stack.enter_context(psycopg.connect(dsn, **self._listener_kwargs(dsn)))
                run_sync(listener, store.listen_finished(self.queries))
                job = self._run(store.await_job(self.queries, job_id))
            else:
                job = self.get_job(job_id)
            pauses = self._poll_pauses()
            while job is not None and not job.state.is_final:
                pause = RECHECK if listener is not None else next(pauses)
                wait = pause if deadline is None else min(pause, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f"job {job_id} did not finish within {timeout}s")
                if listener is None:
                    time.sleep(wait)
                else:
                    for note in listener.notifies(timeout=wait):
                        if note.payload == str(job_id):
                            break
                job = self.get_job(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    def delete(self, job_id: int) -> bool:
        return self._run(store.delete(self.queries, check.job_id(job_id)))

    def delete_finished(
        self, *, older_than: float | timedelta = 0, queue: str | Iterable[str] | None = None
    ) -> int:
        return self._run(self._delete_finished_op(older_than, queue))

    def status(self) -> Status:
        return self._run(store.status(self.queries))

    def health(self) -> Health:
        """`Shigoto.health` for code that is not async; never raises."""
        return check_health_sync(self)

    def schedule(
        self,
        name: str,
        schedule: Schedule | str,
        worker: Any,
        args: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> ScheduleInfo:
        entry = self._schedule_entry(name, schedule, worker, args, options)
        return self._run(scheduling.save(self.queries, entry))

    def unschedule(self, name: str) -> bool:
        return self._run(scheduling.delete(self.queries, name))

    def schedules(self) -> list[ScheduleInfo]:
        return self._run(scheduling.list_all(self.queries))[1]

    def pause_job(self, job_id: int) -> bool:
        return self._run(store.pause_job(self.queries, check.job_id(job_id)))

    def resume_job(self, job_id: int) -> bool:
        return self._run(store.resume_job(self.queries, check.job_id(job_id)))

    def is_job_paused(self, job_id: int) -> bool:
        job = self.get_job(job_id)
        return job is not None and job.state is JobState.PAUSED

    def pause_queue(self, queue: str) -> None:
        self._run(store.set_queue_paused(self.queries, check.queue(queue), True))
        self.app.bus.emit("queue.paused", queue=queue)

    def resume_queue(self, queue: str) -> None:
        self._run(store.set_queue_paused(self.queries, check.queue(queue), False))
        self.app.bus.emit("queue.resumed", queue=queue)

    def is_queue_paused(self, queue: str) -> bool:
        return check.queue(queue) in self._run(store.paused_queues(self.queries))


__all__ = ["FINAL_STATES", "Shigoto", "SyncShigoto"]
