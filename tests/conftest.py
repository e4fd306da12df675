"""Fixtures: every test gets its own schema on a real PostgreSQL.

The server is the embedded one (database `shigoto_test`), or `SHIGOTO_TEST_DSN` when set.
With `SHIGOTO_TEST_PGBOUNCER` (set by `python -m tests.pgbouncer`), the apps and nodes the
tests make connect through PgBouncer in transaction pooling mode (see `app_settings`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from shigoto import Event, Job, JobState, Shigoto
from shigoto.db.embedded import embedded_dsn
from shigoto.db.migrator import all_migrations
from tests.nodeapp import LEDGER, ledger_table

# The migrations this version ships, as `migrate` reports them and as they are recorded.
SHIPPED = [f"{m.version:04d}_{m.name}" for m in all_migrations("shigoto")]
SHIPPED_ROWS = [(m.version, m.name) for m in all_migrations("shigoto")]

pytest_plugins = ["pytester"]

ROOT = Path(__file__).parent.parent
# What a test's subprocesses import: this checkout's shigoto (before an installed one, which
# may be another checkout's), and its tests package.
SUBPROCESS_PATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])

TEST_DATABASE = "shigoto_test"


def _embedded_test_dsn() -> str:
    home = Path(os.environ.get("SHIGOTO_HOME", ".shigoto"))
    admin_dsn = embedded_dsn(home)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [TEST_DATABASE]
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEST_DATABASE)))
    return psycopg.conninfo.make_conninfo(admin_dsn, dbname=TEST_DATABASE)


def database_dsn() -> str:
    """The DSN of the test database, straight to the server."""
    return os.environ.get("SHIGOTO_TEST_DSN") or _embedded_test_dsn()


PGBOUNCER = os.environ.get("SHIGOTO_TEST_PGBOUNCER")


def app_settings(dsn: str) -> dict[str, Any]:
    """How the tests' apps and nodes connect: to `dsn`, or, in the PgBouncer run, as a
    deployment behind PgBouncer in transaction pooling mode does (docs/running-jobs.md).

        app = Shigoto(**app_settings(dsn), schema=schema, poll_interval=60)
    """
    if not PGBOUNCER:
        return {"dsn": dsn}
    return {"dsn": PGBOUNCER, "prepared_statements": False, "listen_dsn": dsn}


@pytest.fixture(scope="session")
def dsn() -> str:
    """The DSN of the test database, straight to the server: for looking at it directly
    (apps connect with `app_settings(dsn)`)."""
    return database_dsn()


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    """A fresh schema name for this test; the schema is dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
async def app(dsn: str, schema: str) -> AsyncIterator[Shigoto]:
    """A migrated app on this test's schema."""
    shigoto = Shigoto(**app_settings(dsn), schema=schema)
    await shigoto.migrate()
    yield shigoto
    await shigoto.close()


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[psycopg.AsyncConnection[tuple[object, ...]]]:
    """A plain autocommit connection, for looking at the tables directly."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def count_jobs(
    db: psycopg.AsyncConnection[tuple[object, ...]], schema: str
) -> Callable[[], Awaitable[int]]:
    """`await count_jobs()`: how many rows this test's jobs table holds."""

    async def count() -> int:
        query = sql.SQL("SELECT count(*) FROM {}.jobs").format(sql.Identifier(schema))
        row = await (await db.execute(query)).fetchone()
        assert row is not None
        return int(row[0])  # type: ignore[call-overload]

    return count


FAST = {
    "poll_interval": 0.2,
    "heartbeat_interval": 0.3,
    "stage_interval": 0.1,
    "shutdown_timeout": 2.0,
    "probe_interval": 1.0,
    "leader_lease": 1.0,
    "schedule_tick": 0.2,
}


@pytest.fixture
async def fast_app(dsn: str, schema: str) -> AsyncIterator[Shigoto]:
    """A migrated app with short intervals, for tests that run a node."""
    shigoto = Shigoto(**app_settings(dsn), schema=schema, **FAST)
    await shigoto.migrate()
    yield shigoto
    await shigoto.stop(timeout=0)
    await shigoto.close()


async def wait_until(
    check: Callable[[], Awaitable[object]], *, timeout: float = 10.0, every: float = 0.02
) -> object:
    """Await `check()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(every)


async def state_of(app: Shigoto, job_id: int) -> JobState | None:
    """The job's state now; None if there is no such job."""
    job = await app.get_job(job_id)
    return None if job is None else job.state


async def final(app: Shigoto, job_id: int, timeout: float = 10.0) -> Job:
    """The job once it is in a final state; fail after `timeout` seconds."""

    async def finished() -> Job | None:
        job = await app.get_job(job_id)
        return job if job is not None and job.state.is_final else None

    return await wait_until(finished, timeout=timeout)  # type: ignore[return-value]


class Seen:
    """Every event the app publishes (or those matching `patterns`), and a way to wait for
    one, instead of sleeping and hoping:

        seen = Seen(app, "job.*", "queue.poll")
        await seen.until(lambda: seen.named("job.completed", job_id=job.id))

    A subscriber on an outcome's event makes the node wait for the outcome's write before
    it publishes (the path hooks take); subscribe narrowly where a test is about the path
    taken when nobody listens."""

    def __init__(self, app: Shigoto, *patterns: str) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        for pattern in patterns or ("*",):
            app.bus.subscribe(pattern, self._add)

    def _add(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, job_id: int) -> list[Event]:
        return [e for e in self.events if e.job_id == job_id]

    def named(self, name: str, **fields: object) -> list[Event]:
        """The events called `name` whose attributes (job_id, queue, node, ...) equal
        `fields`."""
        return [
            e
            for e in self.events
            if e.name == name and all(getattr(e, k) == v for k, v in fields.items())
        ]

    async def more(self, name: str, count: int = 1, **fields: object) -> None:
        """Return once `count` more events called `name` (with `fields`) have come: two
        more queue.poll of a queue, say, are a whole poll interval from now."""
        now = len(self.named(name, **fields))
        await self.until(lambda: len(self.named(name, **fields)) >= now + count)

    async def until(self, condition: Callable[[], object], timeout: float = 20.0) -> None:
        """Return once `condition()` is true, checked after each event; fail after
        `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            names = [e.name for e in self.events[-10:]]
            raise AssertionError(
                f"condition not met within {timeout}s; last events: {names}"
            ) from None


@pytest.fixture
def nodes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Node processes started by the test; killed at the end whatever happens."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def start_node(
    nodes: list[subprocess.Popen[bytes]],
    dsn: str,
    schema: str,
    queues: str = "default=10",
    **settings: object,
) -> subprocess.Popen[bytes]:
    chosen = {**FAST, **app_settings(dsn), **settings, "schema": schema}
    environment = {
        **os.environ,
        **{f"SHIGOTO_{k.upper()}": str(v) for k, v in chosen.items()},
        "PYTHONPATH": SUBPROCESS_PATH,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "shigoto.cli", "worker", "tests.nodeapp:app", "--queues", queues],
        env=environment,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    nodes.append(process)
    return process


@pytest.fixture
async def ledger(db, schema: str, app: Shigoto):
    """`await ledger(query)`: rows of this test's ledger table (`{}` stands for it)."""
    await db.execute(sql.SQL(LEDGER).format(ledger_table(schema)))

    async def rows(query: str, params: list[Any] | None = None) -> list[Any]:
        composed = sql.SQL(query).format(ledger_table(schema))  # type: ignore[arg-type]
        cur = await db.execute(composed, params)
        return list(await cur.fetchall())

    return rows


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A DSN whose server accepts TCP connections and never says a word: an attempt to
    connect waits out its whole timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/nowhere"
