"""Archival and pruning (decision D15): by finish time, in batches, leader-only, and never
holding up inserts or claims for more than a moment."""

from __future__ import annotations

import asyncio
import time

from psycopg import sql
from typer.testing import CliRunner

from shigoto import JobSpec, JobState, Shigoto
from shigoto.cli import cli
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
        await asyncio.sleep(1.0)  # five pruning intervals
        assert await _count(db, schema, "jobs_archive") == 0
        await db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, "leaders")))
        await wait_until(lambda: _archived(db, schema, 10), timeout=10)
    finally:
        await app.stop(timeout=0)
        await app.close()


async def _archived(db, schema: str, count: int) -> bool:
    return await _count(db, schema, "jobs_archive") == count
