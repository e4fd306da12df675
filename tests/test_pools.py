"""The app's connection pools hand out the connection returned last (see db/pools.py)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import UTC

import psycopg
import psycopg_pool
import pytest

from shigoto import JobSpec, Shigoto
from shigoto.db import pools
from tests.conftest import wait_until


async def _backend(conn) -> int:  # type: ignore[no-untyped-def]
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    return int(row[0])


async def test_the_connection_returned_last_is_handed_out_first(app: Shigoto) -> None:
    """Sequential work stays on one warm server process instead of visiting each in turn."""
    async with app.connection() as first, app.connection() as second:
        used = [await _backend(first), await _backend(second)]
    # `second` went back first, then `first`: the next one out is `first`'s, every time.
    for _ in range(3):
        async with app.connection() as again:
            assert await _backend(again) == used[0]
    assert used[0] != used[1]


def test_the_sync_facade_hands_out_the_connection_returned_last(app: Shigoto) -> None:
    def backend(conn) -> int:  # type: ignore[no-untyped-def]
        return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])

    with app.sync.connection() as first, app.sync.connection() as second:
        used = [backend(first), backend(second)]
    for _ in range(3):
        with app.sync.connection() as again:
            assert backend(again) == used[0]
    assert used[0] != used[1]


async def test_a_client_waiting_for_the_pool_gets_the_connection_given_back(
    dsn: str, schema: str
) -> None:
    """The connection given back does not stay aside as the spare while someone waits."""
    app = Shigoto(dsn=dsn, schema=schema, pool_min_size=1, pool_max_size=1)
    try:
        async with app.connection() as held:
            pool = await app.database.pool()
            waiter = asyncio.create_task(_one_statement(app))
            # Until the waiter is queued inside the pool.
            await wait_until(lambda: asyncio.sleep(0, pool.get_stats().get("requests_waiting")))
            assert not waiter.done()
            await held.execute("SELECT 1")
        assert await asyncio.wait_for(waiter, 5) == 1  # not the pool's 30 s timeout
    finally:
        await app.close()


async def _one_statement(app: Shigoto) -> int:
    async with app.connection() as conn:
        cur = await conn.execute("SELECT 1")
        row = await cur.fetchone()
        return int(row[0])  # type: ignore[index]


async def test_a_broken_connection_is_never_kept_as_the_spare(app: Shigoto) -> None:
    async with app.connection() as conn:
        await conn.close()  # broken while in use (a restart, a killed backend)
    assert await _one_statement(app) == 1


async def test_the_spare_goes_back_through_the_pool_now_and_then(
    app: Shigoto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pools, "SPARE_FOR", 0.2)
    await _one_statement(app)
    pool = await app.database.pool()
    requests = pool.get_stats()["requests_num"]
    for _ in range(20):
        await _one_statement(app)
    assert pool.get_stats()["requests_num"] == requests  # the spare, every time
    await asyncio.sleep(0.3)  # past SPARE_FOR: the pool checks it (and retires it if old)
    await _one_statement(app)
    assert pool.get_stats()["requests_num"] == requests + 1


def _one_connection_sync_pool(dsn: str) -> pools.LifoConnectionPool:
    pool = pools.LifoConnectionPool(
        dsn, min_size=1, max_size=1, timeout=2, kwargs={"autocommit": True}, open=False
    )
    pool.open(wait=True)
    return pool


def test_a_thread_waiting_for_the_sync_pool_gets_the_connection_given_back(dsn: str) -> None:
    pool = _one_connection_sync_pool(dsn)
    try:
        held = pool.getconn()
        got: list[object] = []
        waiter = threading.Thread(target=lambda: got.append(pool.getconn()))
        waiter.start()
        deadline = time.monotonic() + 5
        while not pool.get_stats().get("requests_waiting"):  # until it is queued in the pool
            assert time.monotonic() < deadline, "the waiter never asked the pool"
            time.sleep(0.005)
        assert waiter.is_alive()
        pool.putconn(held)
        waiter.join(1.5)  # well before the pool's 2 s timeout
        assert got == [held]
        pool.putconn(held)
    finally:
        pool.close()


def test_a_thread_that_would_wait_takes_the_sync_pools_spare(dsn: str) -> None:
    """The spare is set aside under the pool's lock, so a client that missed it (it looked
    before the connection came back) and asks the pool itself, which has nothing idle,
    takes the spare rather than wait for it."""
    pool = _one_connection_sync_pool(dsn)
    try:
        conn = pool.getconn()
        pool.putconn(conn)  # the spare now: the pool itself has no idle connection
        # (ConnectionPool.getconn: the pool's own path, past the spare's fast path)
        again = psycopg_pool.ConnectionPool.getconn(pool, timeout=1)
        assert again is conn
        pool.putconn(again)
    finally:
        pool.close()


async def test_pooled_connections_read_timestamps_in_utc(dsn: str, schema: str) -> None:
    """The app's connections are set to UTC (session_utc.sql); behind PgBouncer in
    transaction pooling mode (prepared_statements=False) they keep the server's zone, since
    a session setting there would reach other clients."""
    # A server whose sessions start in another zone (as set here for every connection).
    paris = psycopg.conninfo.make_conninfo(dsn, options="-c TimeZone=Europe/Paris")
    assert await _time_zone(Shigoto(dsn=paris, schema=schema)) == ("UTC", "UTC")
    behind_pgbouncer = Shigoto(dsn=paris, schema=schema, prepared_statements=False)
    assert await _time_zone(behind_pgbouncer) == ("Europe/Paris", "Europe/Paris")


async def _time_zone(app: Shigoto) -> tuple[str, str]:
    try:
        async with app.connection() as conn:
            cur = await conn.execute("SHOW TimeZone")
            row = await cur.fetchone()
        with app.sync.connection() as sync_conn:
            sync_row = sync_conn.execute("SHOW TimeZone").fetchone()
        assert row is not None and sync_row is not None
        return str(row[0]), str(sync_row[0])
    finally:
        await app.close()
        app.sync.close()


@pytest.mark.parametrize("prepared_statements", [True, False])
async def test_jobs_come_back_in_utc_whatever_the_sessions_zone(
    dsn: str, schema: str, prepared_statements: bool
) -> None:
    """In UTC sessions or in the server's own zone, a job's timestamps are UTC datetimes
    of the stored instants."""
    paris = psycopg.conninfo.make_conninfo(dsn, options="-c TimeZone=Europe/Paris")
    app = Shigoto(dsn=paris, schema=schema, prepared_statements=prepared_statements)
    try:
        await app.migrate()
        inserted = await app.insert(JobSpec.build("w", scheduled_in=60))
        stored = await app.get_job(inserted.id)
        assert stored is not None
        for job in (inserted, stored):
            assert job.inserted_at.tzinfo is UTC and job.scheduled_at.tzinfo is UTC
        assert (stored.inserted_at, stored.scheduled_at) == (
            inserted.inserted_at,
            inserted.scheduled_at,
        )
        assert inserted.state == "scheduled"
    finally:
        await app.close()


async def test_connections_whose_descriptors_are_past_1024_are_handed_out(
    dsn: str, schema: str, app: Shigoto
) -> None:
    """A busy process has many files open; the look at an idle connection's socket before
    it is handed out works whatever the descriptor's number (select() refuses 1024 on)."""
    import resource  # (POSIX: the descriptors' limit)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2048), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    busy = Shigoto(dsn=dsn, schema=schema)
    try:
        job = await busy.insert(JobSpec.build("pools.x"))
        assert await busy.get_job(job.id) is not None  # the spare: its socket looked at
        assert await asyncio.to_thread(busy.sync.get_job, job.id) is not None
        assert await asyncio.to_thread(busy.sync.get_job, job.id) is not None
    finally:
        await busy.close()
        for fd in filler:
            os.close(fd)
