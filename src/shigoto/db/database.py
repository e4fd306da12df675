"""The way to the database: pools, statements, the listener and heartbeat connections.

    database = Database(config, queries)
    job = await database.run(reading.get_job(queries, 42))     # on the app's pool
    job = await database.run(reading.get_job(queries, 42), conn)   # on the caller's
    await database.close()

`Database` is the async one (the app's, and a node's own pools); `SyncDatabase` its twin
for the sync facade. Both check a caller's connection (`conn=`) for its kind, turn a
connection fault into `DatabaseUnavailable`, and wait for a job's end by LISTEN.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from shigoto import _json
from shigoto import _validate as check
from shigoto.config import Config
from shigoto.db import reading
from shigoto.db.embedded import embedded_dsn
from shigoto.db.faults import describe, is_connection_fault, unavailable_on_faults
from shigoto.db.operations import Operation, run_async, run_sync
from shigoto.db.pools import LifoAsyncConnectionPool, LifoConnectionPool
from shigoto.db.queries import Queries
from shigoto.job import Job
from shigoto.outcomes import ConfigurationError, DatabaseUnavailable, JobNotFoundError

T = TypeVar("T")
C = TypeVar("C")

EXHAUSTED_HINT = (
    "; each app.connection() block (yours, or a job's) holds one until it ends: "
    "raise pool_max_size, or hold connections for less time"
)
RECHECK = 5.0  # seconds between looks at a waited-for job when no notification comes


def _callers(conn: object, kind: type[C], operation: Operation[Any], instead: str) -> C:
    """The caller's connection `conn`, if it is of the `kind` this database runs on; else
    `operation` is dropped unsent and a `ConfigurationError` says what to do `instead`."""
    if isinstance(conn, kind):
        return conn
    operation.close()
    raise ConfigurationError(
        f"conn: expected a psycopg.{kind.__name__}, got {type(conn).__name__}; with {instead}"
    )


class _Settings:
    """What both databases derive from the configuration: the DSN, connection options."""

    def __init__(self, config: Config, queries: Queries) -> None:
        self.config = config
        self.queries = queries

    def dsn(self) -> str:
        """The configured DSN, or the embedded server's (started on first use: blocks)."""
        return self.config.dsn or embedded_dsn(self.config.home)

    def connection_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"autocommit": True, "application_name": "shigoto"}
        if not self.config.prepared_statements:
            kwargs["prepare_threshold"] = None  # PgBouncer in transaction pooling mode
        return kwargs

    def pool_kwargs(self, dsn: str) -> dict[str, Any]:
        """Connection options of a pool (or a listener): also a bound on each attempt to
        connect (libpq counts whole seconds, at least 2), so that a server that does not
        answer at all cannot keep the pool's workers (or the listener) waiting for minutes;
        a `connect_timeout` in the DSN wins."""
        kwargs = self.connection_kwargs()
        if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(dsn):
            kwargs["connect_timeout"] = max(2, math.ceil(self.config.connect_timeout))
        return kwargs

    def listener_kwargs(self, dsn: str) -> dict[str, Any]:
        return {**self.pool_kwargs(dsn), "application_name": "shigoto-listener"}

    @property
    def utc_session(self) -> bool:
        """Whether a pooled connection is set to UTC (session_utc.sql). Not behind PgBouncer
        in transaction pooling mode (prepared statements off): a session's setting would
        stay with a server connection that other clients get next."""
        return self.config.prepared_statements

    def poll_pauses(self) -> Iterator[float]:
        """How long `wait_for` sleeps between looks where it may not LISTEN: from 10 ms,
        doubling up to `poll_interval` (a short job is seen soon, a long one costs little)."""
        pause = min(0.01, self.config.poll_interval)
        while True:
            yield pause
            pause = min(2 * pause, self.config.poll_interval)


class Database(_Settings):
    """The async way to the database: the app's pool (opened on first use), a node's own
    pools, statements run on either or on the caller's connection, and the listener's and
    heartbeat's connections of their own."""

    def __init__(self, config: Config, queries: Queries) -> None:
        super().__init__(config, queries)
        self._pool: AsyncConnectionPool | None = None
        self._pool_lock = asyncio.Lock()

    async def _configure_connection(self, conn: psycopg.AsyncConnection[Any]) -> None:
        _json.use_on(conn)
        if self.utc_session:
            await conn.execute(self.queries.sql("session_utc"))

    @property
    def opened_pool(self) -> AsyncConnectionPool | None:
        """The app's pool if it was opened, else None (to report on it without opening it)."""
        return self._pool

    async def pool(self) -> AsyncConnectionPool:
        """The app's pool, opened on first use."""
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await self.open_pool(
                        "shigoto",
                        self.config.pool_min_size,
                        self.config.pool_max_size,
                        exhausted_hint=EXHAUSTED_HINT,
                    )
        return self._pool

    async def open_pool(
        self, name: str, min_size: int, max_size: int, *, exhausted_hint: str = ""
    ) -> LifoAsyncConnectionPool:
        """A pool of connections to this app's database: the app's, or a node's own. It
        connects in the background: a `getconn` waits at most `connect_timeout` for a
        connection, then raises `DatabaseUnavailable` (see `shigoto.db.pools`)."""
        dsn = await asyncio.to_thread(self.dsn)
        pool = LifoAsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            kwargs=self.pool_kwargs(dsn),
            configure=self._configure_connection,
            open=False,
            name=name,
            timeout=self.config.connect_timeout,
            exhausted_hint=exhausted_hint,
        )
        await pool.open()
        return pool

    async def run(
        self, operation: Operation[T], conn: Any = None, *, transaction: bool = False
    ) -> T:
        """Run `operation` on the caller's connection `conn` (a `psycopg.AsyncConnection`,
        whose transaction it joins) or, without one, on a connection of the app's pool."""
        if conn is not None:
            conn = _callers(
                conn, psycopg.AsyncConnection, operation, "a sync connection use app.sync"
            )
            return await run_async(conn, operation, transaction=transaction)
        pool = self._pool or await self.pool()
        return await self.run_in(pool, operation, transaction=transaction)

    @staticmethod
    async def run_in(
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
        """A connection of the app's pool (autocommit), for the caller's own work."""
        pool = self._pool or await self.pool()
        async with pool.connection() as conn:
            yield conn

    async def connect_listener(self) -> psycopg.AsyncConnection[Any]:
        """A dedicated connection for LISTEN: `listen_dsn` (past PgBouncer) or the DSN; only
        where `config.listens`."""
        dsn = self.config.listen_dsn
        if not dsn:
            dsn = await asyncio.to_thread(self.dsn)
        return await psycopg.AsyncConnection.connect(dsn, **self.listener_kwargs(dsn))

    def connect_heartbeat(self, timeout: float) -> psycopg.Connection[Any]:
        """A node's heartbeat connection: direct (no pool, so no job can hold it), bounded
        by `timeout` seconds on the client side (a connect timeout, and a TCP user timeout
        for a server gone silent), which needs no session setting and passes PgBouncer."""
        kwargs: dict[str, Any] = {
            **self.connection_kwargs(),
            "application_name": "shigoto-heartbeat",
            "connect_timeout": max(2, math.ceil(timeout)),
            "tcp_user_timeout": int(timeout * 1000),
        }
        return psycopg.connect(self.dsn(), **kwargs)

    async def wait_for(self, job_id: int, timeout: float | None = None) -> Job:
        """Wait until a job is finished and return it (see `Shigoto.wait_for`)."""
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
                listener = await stack.enter_async_context(await self.connect_listener())
                await run_async(listener, reading.listen_finished(self.queries))
                job = await self.run(reading.await_job(self.queries, job_id))
            else:
                job = await self.run(reading.get_job(self.queries, job_id))
            pauses = self.poll_pauses()
            while job is not None and not job.state.is_final:
                if listener is None:
                    await asyncio.sleep(next(pauses))
                else:
                    # The notification, or a look every RECHECK seconds in case the listener
                    # missed it (a reconnect drops notifications).
                    async for note in listener.notifies(timeout=RECHECK):
                        if note.payload == str(job_id):
                            break
                job = await self.run(reading.get_job(self.queries, job_id))
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    async def close(self) -> None:
        """Close the app's pool (a node closes its own)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


class SyncDatabase(_Settings):
    """`Database` for the sync facade: a small pool of sync connections, opened on first
    use, and statements run on it or on the caller's `psycopg.Connection`."""

    def __init__(self, config: Config, queries: Queries) -> None:
        super().__init__(config, queries)
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()

    def _configure_connection(self, conn: psycopg.Connection[Any]) -> None:
        _json.use_on(conn)
        if self.utc_session:
            conn.execute(self.queries.sql("session_utc"))

    @property
    def opened_pool(self) -> ConnectionPool | None:
        """The facade's pool if it was opened, else None."""
        return self._pool

    def pool(self) -> ConnectionPool:
        """The facade's pool, opened on first use."""
        with self._pool_lock:
            if self._pool is None:
                dsn = self.dsn()
                pool = LifoConnectionPool(
                    dsn,
                    min_size=min(self.config.pool_min_size, 1),
                    max_size=self.config.pool_max_size,
                    kwargs=self.pool_kwargs(dsn),
                    configure=self._configure_connection,
                    open=False,
                    name="shigoto-sync",
                    timeout=self.config.connect_timeout,
                    exhausted_hint=EXHAUSTED_HINT,
                )
                pool.open()  # connects in the background, as the async app's pool does
                self._pool = pool
            return self._pool

    def run(self, operation: Operation[T], conn: Any = None, *, transaction: bool = False) -> T:
        """Run `operation` on the caller's `psycopg.Connection` or on the facade's pool."""
        if conn is not None:
            conn = _callers(
                conn, psycopg.Connection, operation, "an async connection use the async API"
            )
            return run_sync(conn, operation, transaction=transaction)
        pool = self._pool or self.pool()
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
        """A connection of the facade's pool (autocommit)."""
        with self.pool().connection() as conn:
            yield conn

    def wait_for(self, job_id: int, timeout: float | None = None) -> Job:
        """`Database.wait_for`, blocking the calling thread."""
        check.integer(job_id, "job_id", (1, 2**63 - 1))
        deadline = None if timeout is None else time.monotonic() + check.seconds(timeout, "timeout")
        with contextlib.ExitStack() as stack:
            stack.enter_context(unavailable_on_faults())  # the listener's faults too
            listener = None
            if self.config.listens:
                dsn = self.config.listen_dsn or self.dsn()
                listener = stack.enter_context(psycopg.connect(dsn, **self.listener_kwargs(dsn)))
                run_sync(listener, reading.listen_finished(self.queries))
                job = self.run(reading.await_job(self.queries, job_id))
            else:
                job = self.run(reading.get_job(self.queries, job_id))
            pauses = self.poll_pauses()
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
                job = self.run(reading.get_job(self.queries, job_id))
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    def close(self) -> None:
        """Close the facade's pool."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
