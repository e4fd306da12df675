"""Archival and pruning: by finish time, in batches, leader-only, and never
holding up inserts or claims for more than a moment."""

from __future__ import annotations

import asyncio
import logging
import time

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from shigoto import JobSpec, JobState, Shigoto
from shigoto.cli import cli
from shigoto.runtime.leader import Leader
from shigoto.runtime.vacuumer import Vacuumer
from tests.conftest import FAST, wait_until

DAY = 86_400


async def _finished_long_ago(db, schema: str, count: int, days: int, state: str = "completed"):
    column = {"completed": "completed_at", "discarded": "discarded_at"}[state]
    await db.execute(
        sql.SQL(
            "INSERT INTO {} (state, worker, {}) "
            "SELECT %s::{}, 'old.job', now() - make_interval(days => %s) "
            "FROM generate_series(1, %s)"
        ).format(
            sql.Identifier(schema, "jobs"),
            sql.Identifier(column),
            sql.Identifier(schema, "job_state"),
        ),
        [state, days, count],
    )


async def _count(db, schema: str, table: str) -> int:
    cur = await db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_prune_archives_by_finish_time_then_deletes_old_archives(
    dsn: str, schema: str, db
) -> None:
    app = Shigoto(dsn=dsn, schema=schema, prune_after=7 * DAY, archive_retention=30 * DAY)
    await app.migrate()
    try:
        await _finished_long_ago(db, schema, 30, days=10)
        await _finished_long_ago(db, schema, 20, days=10, state="discarded")
        await _finished_long_ago(db, schema, 5, days=1)  # too recent
        waiting = await app.insert(JobSpec.build("pending.job"))  # never pruned
        assert await app.prune(dry_run=True) == (50, 0)
        assert await _count(db, schema, "jobs_archive") == 0
        assert await app.prune() == (50, 0)
        assert await _count(db, schema, "jobs") == 6
        assert await _count(db, schema, "jobs_archive") == 50
        assert (await app.get_job(waiting.id)).state is JobState.AVAILABLE  # type: ignore[union-attr]
        # Archived rows keep every column (here: the state) and go once older than retention.
        await db.execute(
            sql.SQL(
                "UPDATE {} SET archived_at = now() - interval '31 days' WHERE state = 'discarded'"
            ).format(sql.Identifier(schema, "jobs_archive"))
        )
        assert await app.prune() == (0, 20)
        assert await _count(db, schema, "jobs_archive") == 30
    finally:
        await app.close()


async def test_pruning_two_hundred_thousand_jobs_never_holds_up_a_working_node(
    dsn: str, schema: str, db
) -> None:
    app = Shigoto(dsn=dsn, schema=schema, prune_after=DAY, prune_interval=0.5, **FAST)  # type: ignore[arg-type]

    @app.worker(name="probe")
    async def probe() -> None: ...

    await app.migrate()
    await _finished_long_ago(db, schema, 200_000, days=3)
    slowest = 0.0
    rounds = 0
    try:
        await app.start()
        began = time.monotonic()
        # Insert a job and wait for it to complete, again and again, while the leader
        # (this node) archives the 200,000: each round is an insert and a claim.
        while await _count(db, schema, "jobs_archive") < 200_000:
            start = time.monotonic()
            job = await app.insert(JobSpec.build("probe"))
            await app.wait_for(job.id, timeout=10)
            slowest = max(slowest, time.monotonic() - start)
            rounds += 1
            assert time.monotonic() - began < 120, "pruning did not finish"
    finally:
        await app.stop(timeout=0)
        await app.close()
    assert await _count(db, schema, "jobs_archive") == 200_000
    assert rounds >= 5
    assert slowest < 1.0, slowest


def test_prune_dry_run_from_the_command_line(dsn: str, schema: str, app: Shigoto) -> None:
    result = CliRunner().invoke(
        cli, ["prune", "--dry-run"], env={"SHIGOTO_DSN": dsn, "SHIGOTO_SCHEMA": schema}
    )
    assert result.exit_code == 0, result.output
    assert "would archive 0 job(s) finished over 14 day(s) ago" in " ".join(result.output.split())


async def test_only_the_leader_prunes(dsn: str, schema: str, db) -> None:
    app = Shigoto(dsn=dsn, schema=schema, prune_after=DAY, prune_interval=0.2, **FAST)  # type: ignore[arg-type]
    await app.migrate()
    await _finished_long_ago(db, schema, 10, days=3)
    await db.execute(  # another node holds the lease for a while
        sql.SQL(
            "INSERT INTO {} (id, host, pid) VALUES ('other', 'h', 1);"
            "INSERT INTO {} (name, node_id, expires_at) "
            "VALUES ('leader', 'other', now() + interval '1 hour')"
        ).format(sql.Identifier(schema, "nodes"), sql.Identifier(schema, "leaders"))
    )
    try:
        await app.start()
        # A node that is not the leader does not prune, and so does nothing to wait for:
        # five pruning intervals in which it must archive nothing.
        await asyncio.sleep(1.0)
        assert await _count(db, schema, "jobs_archive") == 0
        await db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, "leaders")))
        await wait_until(lambda: _archived(db, schema, 10), timeout=10)
    finally:
        await app.stop(timeout=0)
        await app.close()


async def _archived(db, schema: str, count: int) -> bool:
    return await _count(db, schema, "jobs_archive") == count


async def _table_stats(db, schema: str) -> tuple[int, int]:
    """(dead row versions, manual vacuums) of the schema's jobs, as PostgreSQL counts them."""
    cur = await db.execute(
        "SELECT n_dead_tup, vacuum_count FROM pg_stat_user_tables "
        "WHERE schemaname = %s AND relname = 'jobs'",
        [schema],
    )
    row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def test_the_leader_vacuums_jobs_once_dead_rows_pile_up(dsn: str, schema: str, db) -> None:
    """Claimed and finished jobs leave dead row versions (and dead claim-index entries)
    behind; past `vacuum_after` the leader vacuums the table, without waiting for
    autovacuum. Below it, it does not."""
    settings = {**FAST, "vacuum_after": 300, "vacuum_interval": 0.1}
    app = Shigoto(dsn=dsn, schema=schema, **settings)  # type: ignore[arg-type]
    await app.migrate()

    @app.worker(name="noop")
    async def noop() -> None:
        pass

    async def dead_rows_counted(at_least: int) -> bool:
        return (await _table_stats(db, schema))[0] >= at_least

    async def vacuumed() -> bool:
        return (await _table_stats(db, schema))[1] > 0

    await app.insert_all([noop.new() for _ in range(100)])
    async with app:
        assert app.node is not None and app.node.vacuumer is not None
        vacuumer = app.node.vacuumer
        # 100 jobs claimed and completed: ~200 dead versions, under the 300 that vacuum.
        await wait_until(lambda: dead_rows_counted(150), timeout=20)
        assert await vacuumer.tidy()
        assert (await _table_stats(db, schema))[1] == 0
        await app.insert_all([noop.new() for _ in range(400)])
        # The leader's own count first (the table's statistics can show the VACUUM a
        # moment before the leader's coroutine resumes to count it), then the table's.
        await wait_until(lambda: asyncio.sleep(0, result=vacuumer.vacuums >= 1), timeout=20)
        await wait_until(vacuumed, timeout=20)
    await app.close()


async def test_a_role_that_may_not_vacuum_leaves_it_to_autovacuum(
    dsn: str, schema: str, db, caplog: pytest.LogCaptureFixture
) -> None:
    role = f"{schema}_user"
    await db.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        owner = Shigoto(dsn=dsn, schema=schema)
        await owner.migrate()
        await db.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )
        guest_dsn = psycopg.conninfo.make_conninfo(dsn, options=f"-c role={role}")
        app = Shigoto(dsn=guest_dsn, schema=schema, vacuum_after=0)
        leader = Leader(owner.database.run, owner.queries, "n", role="leader", lease=60)
        assert await leader.campaign()
        vacuumer = Vacuumer(app.database.run, app.queries, leader, after=0, interval=0.01)
        with caplog.at_level(logging.INFO, logger="shigoto.vacuumer"):
            assert await vacuumer.tidy() is False
            # The leader's loop says so once and ends, rather than look again forever.
            caplog.clear()
            await asyncio.wait_for(vacuumer.run(), 10)
        assert caplog.text.count("left to autovacuum") == 1 and vacuumer.vacuums == 0
        await app.close()
        await owner.close()
    finally:
        await db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        await db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
