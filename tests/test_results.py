"""Results and waiting: a job's return value is stored; `wait_for` returns the finished job,
woken by a notification (never by polling) where it may LISTEN, by polling where it may not,
and only waited-for jobs cost a NOTIFY."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from psycopg import sql

from shigoto import JobNotFoundError, JobSpec, JobState, Shigoto
from tests.conftest import FAST, wait_until


async def test_wait_for_returns_the_finished_job_with_its_result(fast_app: Shigoto) -> None:
    @fast_app.worker(name="add")
    async def add(a: int, b: int) -> dict[str, int]:
        await asyncio.sleep(0.3)
        return {"sum": a + b}

    job = await fast_app.enqueue("add", {"a": 2, "b": 3})
    await fast_app.start()
    began = time.monotonic()
    done = await fast_app.wait_for(job.id, timeout=10)
    waited = time.monotonic() - began
    assert done.state is JobState.COMPLETED and done.result == {"sum": 5}
    # Woken by the notification: well before the 5-second safety look.
    assert waited < 2.0, waited


async def _marked(db, schema: str, job_id: int) -> None:  # type: ignore[no-untyped-def]
    """Until a waiter has marked the job as waited for (it listens before it marks)."""

    async def marked() -> bool:
        query = sql.SQL("SELECT awaited FROM {} WHERE id = %s").format(
            sql.Identifier(schema, "jobs")
        )
        row = await (await db.execute(query, [job_id])).fetchone()
        return bool(row and row[0])

    await wait_until(marked)


async def test_wait_for_sees_a_cancel_and_an_already_finished_job(
    fast_app: Shigoto, db, schema: str
) -> None:
    job = await fast_app.insert(JobSpec.build("nobody.runs.this"))
    waiter = asyncio.create_task(fast_app.wait_for(job.id, timeout=10))
    await _marked(db, schema, job.id)
    began = time.monotonic()
    assert await fast_app.cancel(job.id)
    cancelled = await waiter
    assert cancelled.state is JobState.CANCELLED and time.monotonic() - began < 2.0
    again = await fast_app.wait_for(job.id, timeout=1)  # finished already: at once
    assert again.state is JobState.CANCELLED


async def test_wait_for_times_out_and_knows_missing_jobs(app: Shigoto) -> None:
    job = await app.insert(JobSpec.build("nobody.runs.this"))
    with pytest.raises(TimeoutError):
        await app.wait_for(job.id, timeout=0.3)
    with pytest.raises(JobNotFoundError):
        await app.wait_for(10**12, timeout=1)


async def test_jobs_nobody_waits_for_send_no_notification(
    fast_app: Shigoto, dsn: str, schema: str, db
) -> None:
    @fast_app.worker(name="noop")
    async def noop() -> None: ...

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener:
        await listener.execute(f'LISTEN "{schema}.jobs_finished"')
        waited_for = await fast_app.enqueue("noop")
        others = [await fast_app.enqueue("noop") for _ in range(20)]
        waiter = asyncio.create_task(fast_app.wait_for(waited_for.id, timeout=10))
        await _marked(db, schema, waited_for.id)
        await fast_app.start()
        await waiter
        for job in others:
            await fast_app.wait_for(job.id, timeout=10)  # marks each, but after it finished
        # Notifications come in the order their transactions committed: once this one is
        # here, every outcome's would have been.
        await db.execute("SELECT pg_notify(%s, 'end')", [f"{schema}.jobs_finished"])
        payloads: list[str] = []
        async for note in listener.notifies(timeout=10):
            if note.payload == "end":
                break
            payloads.append(note.payload)
    assert payloads == [str(waited_for.id)]


@pytest.mark.parametrize(
    ("settings", "listens"),
    [
        ({"notifier": False}, False),
        ({"prepared_statements": False}, False),  # PgBouncer, transaction pooling
        ({"prepared_statements": False, "listen_dsn": "direct"}, True),
    ],
    ids=["notifier off", "transaction pooling", "transaction pooling with listen_dsn"],
)
async def test_wait_for_and_the_node_listen_only_where_they_may(
    dsn: str, schema: str, db, caplog, settings: dict[str, object], listens: bool
) -> None:
    """With the notifier off, or with prepared statements off (a transaction pooler, where
    a LISTEN stays with a server connection other clients get next) and no listen_dsn,
    neither `wait_for` (async and sync) nor the node LISTENs: they poll, and a waiter still
    returns promptly; a node that would have listened says so. With listen_dsn they LISTEN
    there."""
    if settings.get("listen_dsn"):
        settings = {**settings, "listen_dsn": dsn}
    app = Shigoto(dsn=dsn, schema=schema, **{**FAST, **settings})  # type: ignore[arg-type]
    try:
        await app.migrate()
        job = await app.insert(JobSpec.build("nobody.runs.this", queue="elsewhere"))
        waiters = [
            asyncio.create_task(app.wait_for(job.id, timeout=10)),
            asyncio.create_task(asyncio.to_thread(app.sync.wait_for, job.id, 10)),
        ]

        async def backends(pattern: str) -> list[object]:
            cur = await db.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE %s",
                [pattern],
            )
            return list(await cur.fetchall())

        # Both waiters have looked at the job (any LISTEN of theirs comes before), each on
        # its own pool's connection; then a node starts, and its listener, if any, is up.
        async def both_looked() -> bool:
            return len(await backends(f"% {schema}.jobs %WHERE id = $1%")) >= 2

        await wait_until(both_looked)
        await app.start()
        if app.node is not None and app.node.notifier is not None:
            await asyncio.wait_for(app.node.notifier.connected.wait(), 10)
        warned = "not listening for new jobs" in caplog.text
        assert warned == (settings == {"prepared_statements": False})
        listening = await backends(f'LISTEN "{schema}.%')
        # The node's listener and the two waiters', or none at all.
        assert len(listening) == (3 if listens else 0), listening
        began = time.monotonic()
        assert await app.cancel(job.id)
        for waiter in waiters:
            assert (await waiter).state is JobState.CANCELLED
        assert time.monotonic() - began < 2.0
    finally:
        await app.stop(timeout=0)
        await app.close()
