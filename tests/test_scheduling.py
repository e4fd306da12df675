"""Cron and recurring schedules: one firing per moment across nodes, leader failover,
catch-up after downtime, and the schedule API."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import sql

from shigoto import (
    ConfigurationError,
    Cron,
    Daily,
    Every,
    InvalidScheduleError,
    Shigoto,
    Weekly,
)
from shigoto.db import scheduling
from shigoto.runtime.leader import Leader
from shigoto.runtime.scheduler import Scheduler
from tests.conftest import FAST, app_settings, start_node, wait_until


async def _fired(db, schema: str, name: str) -> list[datetime]:
    """The moments of the jobs a schedule inserted, oldest first (one row per job)."""
    cur = await db.execute(
        sql.SQL("SELECT scheduled_at FROM {} WHERE origin = %s ORDER BY scheduled_at").format(
            sql.Identifier(schema, "jobs")
        ),
        [f"schedule:{name}"],
    )
    return [row[0] for row in await cur.fetchall()]


async def _leader_pid(db, schema: str) -> int | None:
    cur = await db.execute(
        sql.SQL(
            "SELECT n.pid FROM {} AS l JOIN {} AS n ON n.id = l.node_id "
            "WHERE l.name = 'leader' AND l.expires_at > now()"
        ).format(sql.Identifier(schema, "leaders"), sql.Identifier(schema, "nodes")),
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def test_three_nodes_fire_each_moment_once_and_survive_the_leaders_death(
    app: Shigoto, db, schema: str, dsn: str, nodes, ledger
) -> None:
    await app.schedule("tick", Every(1), "ledger.noop")
    processes = [start_node(nodes, dsn, schema) for _ in range(3)]
    leader = await wait_until(lambda: _leader_pid(db, schema), timeout=30)
    await wait_until(lambda: _fired_at_least(db, schema, 4), timeout=30)

    victim = next(p for p in processes if p.pid == leader)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = datetime.now(UTC)

    async def new_leader() -> int | None:
        pid = await _leader_pid(db, schema)
        return pid if pid not in (None, leader) else None

    await wait_until(new_leader, timeout=10)
    took_over = datetime.now(UTC)
    assert (took_over - killed_at).total_seconds() < 5
    first = (await _fired(db, schema, "tick"))[0]
    until = max(took_over + timedelta(seconds=5), first + timedelta(seconds=10))
    await wait_until(lambda: _fired_after(db, schema, until), timeout=20)

    moments = await _fired(db, schema, "tick")
    assert len(moments) == len(set(moments)), "a moment fired twice"
    span = round((moments[-1] - moments[0]).total_seconds())
    # One job per second, not three; the failover lost no moment (catch-up filled it in).
    assert len(moments) == span + 1
    assert span >= 10


async def _fired_at_least(db, schema: str, count: int) -> bool:
    return len(await _fired(db, schema, "tick")) >= count


async def _fired_after(db, schema: str, moment: datetime) -> bool:
    moments = await _fired(db, schema, "tick")
    return bool(moments) and moments[-1] >= moment


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [
        (None, 0),  # "none": missed moments are skipped
        ("latest", 1),
        (timedelta(minutes=2), 2),
        (3600, 5),  # the default window: every missed moment of the last hour
    ],
)
async def test_catch_up_after_an_outage_fires_what_the_policy_allows(
    app: Shigoto, db, schema: str, catch_up: Any, expected: int
) -> None:
    entry = await app.schedule("minutely", Every(60), "report", catch_up=catch_up)
    assert entry.catch_up_policy == {None: "none", "latest": "latest"}.get(catch_up, "window")
    # A simulated outage: the schedule last fired 5 minutes (and a few seconds) ago.
    now = await _db_now(db)
    last = Every(60).latest(now - timedelta(minutes=5))
    await db.execute(
        sql.SQL("UPDATE {} SET last_fired_at = %s").format(sql.Identifier(schema, "schedules")),
        [last],
    )
    scheduler = await _leading_scheduler(app)
    await scheduler.fire_due()
    moments = await _fired(db, schema, "minutely")
    if (now - Every(60).latest(now)).total_seconds() <= 5 and catch_up is None:
        expected = 1  # the moment just past is on time, not missed
    assert len(moments) == expected
    assert all(m > last for m in moments)
    assert moments == sorted(set(moments))
    # Never the same moment twice: another pass (or another leader) fires nothing more.
    await scheduler.fire_due()
    await _leading_scheduler(app, node="another-node")
    assert await _fired(db, schema, "minutely") == moments


async def _db_now(db) -> datetime:
    cur = await db.execute("SELECT now()")
    row = await cur.fetchone()
    return row[0].astimezone(UTC)


async def _leading_scheduler(app: Shigoto, node: str = "test-node") -> Scheduler:
    """A scheduler whose leader holds the lease (the lease is taken from an absent node)."""
    leader = Leader(app.database.run, app.queries, node, role="leader", lease=30)
    await leader.campaign()
    return Scheduler(app.database.run, app.queries, leader)


async def test_two_leaders_at_once_still_fire_each_moment_once(app: Shigoto, db, schema) -> None:
    await app.schedule("often", Every(1), "report")
    await db.execute(
        sql.SQL("UPDATE {} SET last_fired_at = now() - interval '30 seconds'").format(
            sql.Identifier(schema, "schedules")
        )
    )
    _, [entry] = await app.database.run(scheduling.list_all(app.queries))
    now = await _db_now(db)
    moments = list(entry.schedule.between(now - timedelta(seconds=30), now))
    # Both "leaders" try the same moments at the same time, on two connections.
    results = await asyncio.gather(
        *(
            app.database.run(
                scheduling.fire(app.queries, entry, moments, last=now, next_at=None),
                transaction=True,
            )
            for _ in range(2)
        )
    )
    assert sorted(len(jobs) for jobs in results) == [0, len(moments)]
    assert len(await _fired(db, schema, "often")) == len(moments)


async def test_a_schedule_fires_its_worker_with_its_options(fast_app: Shigoto, db, schema) -> None:
    ran: list[dict[str, Any]] = []

    @fast_app.worker(name="report", queue="reports", priority=5)
    async def report(day: str) -> None:
        ran.append({"day": day})

    entry = await fast_app.schedule("daily-report", Every(1), report, {"day": "today"})
    assert entry.options["queue"] == "reports" and entry.options["priority"] == 5
    await fast_app.start(queues={"reports": 1})
    await wait_until(lambda: asyncio.sleep(0, ran), timeout=10)
    job = (await fast_app.list_jobs(worker="report")).jobs[-1]
    assert job.origin == "schedule:daily-report" and job.args == {"day": "today"}
    assert job.queue == "reports" and job.priority == 5
    [listed] = await fast_app.schedules()
    assert listed.last_fired_at is not None and listed.next_fire_at is not None
    assert listed.next_fire_at > listed.last_fired_at
    assert await fast_app.unschedule("daily-report") is True
    assert await fast_app.unschedule("daily-report") is False
    assert await fast_app.schedules() == []


async def test_declared_schedules_are_saved_at_start_and_unknown_workers_reported(
    dsn: str, schema: str, caplog
) -> None:
    app = Shigoto(
        **app_settings(dsn),
        schema=schema,
        cron=[("nightly", "0 3 * * *", "cleanup", {"days": 7}, {"catch_up": "latest"})],
        **FAST,  # type: ignore[arg-type]
    )

    @app.worker(name="cleanup")
    async def cleanup(days: int = 1) -> None: ...

    @app.worker(name="heartbeat", cron="*/5 * * * *")
    async def heartbeat() -> None: ...

    await app.migrate()
    await app.schedule("orphan", Daily(4), "gone.worker")
    try:
        await app.start()
        by_name = {entry.name: entry for entry in await app.schedules()}
    finally:
        await app.stop(timeout=0)
        await app.close()
    assert by_name["nightly"].schedule == Cron("0 3 * * *")
    assert by_name["nightly"].args == {"days": 7}
    assert by_name["nightly"].catch_up_policy == "latest"
    assert by_name["heartbeat"].schedule == Cron("*/5 * * * *")
    assert "orphan" in by_name
    assert any("gone.worker" in r.getMessage() for r in caplog.records)


async def test_bad_schedules_are_refused_clearly(app: Shigoto) -> None:
    with pytest.raises(InvalidScheduleError, match="Bad minute"):
        await app.schedule("x", "61 * * * *", "w")
    with pytest.raises(InvalidScheduleError, match="Bad day-of-month"):
        Cron("0 0 31 2 *")  # out of range for February: an error, never clamped
    with pytest.raises(InvalidScheduleError, match="unknown time zone"):
        Cron("0 3 * * *", tz="Mars/Olympus")
    with pytest.raises(InvalidScheduleError, match=r"at least 0\.1 s"):
        Every(0.01)
    with pytest.raises(InvalidScheduleError, match="weekday"):
        Weekly("someday", 9)
    with pytest.raises(InvalidScheduleError, match="catch_up"):
        await app.schedule("x", Every(5), "w", catch_up="sometimes")
    with pytest.raises(ConfigurationError, match="registered worker"):
        await app.schedule("x", Every(5), object())
    assert await app.schedules() == []


async def test_cron_list_shows_last_and_next_runs(app: Shigoto, schema: str, dsn: str) -> None:
    from typer.testing import CliRunner

    from shigoto.cli import cli

    await app.schedule("nightly", Cron("0 3 * * *", tz="Europe/Berlin"), "cleanup")
    env = {**os.environ, "SHIGOTO_DSN": dsn, "SHIGOTO_SCHEMA": schema, "COLUMNS": "200"}
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["cron", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert "nightly" in result.output and "0 3 * * *" in result.output
    assert "Europe/Berlin" in result.output and "cleanup" in result.output


async def test_a_paused_schedule_fires_nothing(app: Shigoto, db, schema: str) -> None:
    await app.schedule("often", Every(1), "report")
    await db.execute(
        sql.SQL("UPDATE {} SET paused = true, last_fired_at = now() - interval '10 s'").format(
            sql.Identifier(schema, "schedules")
        )
    )
    await (await _leading_scheduler(app)).fire_due()
    assert await _fired(db, schema, "often") == []
