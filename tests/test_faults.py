"""Which database errors are waited out (the database is unreachable) and which are about
the request, and so are never retried."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg import sql

from shigoto import DatabaseUnavailable, JobSpec, Shigoto
from shigoto.db.faults import describe, is_connection_fault
from tests.conftest import wait_until


async def test_a_lost_connection_is_a_connection_fault(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as victim:
        pid = victim.info.backend_pid
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.OperationalError) as caught:
            await victim.execute("SELECT 1")
    assert is_connection_fault(caught.value)


async def test_a_value_too_large_is_not_a_connection_fault(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        # PostgreSQL's "program limit exceeded" is an OperationalError to psycopg.
        with pytest.raises(psycopg.OperationalError) as caught:
            await conn.execute("SELECT repeat('x', 1073741824)")
        assert not is_connection_fault(caught.value)
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)


async def test_an_unreachable_server_is_database_unavailable() -> None:
    # A port nothing listens on: the pool never gets a connection.
    app = Shigoto(dsn="postgresql://postgres@127.0.0.1:9/nowhere?connect_timeout=1")
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            await app.get_job(1)
        assert isinstance(caught.value.__cause__, psycopg.OperationalError)
        assert not caught.value.may_have_run  # nothing was sent: safe to retry
        with pytest.raises(DatabaseUnavailable) as caught:
            app.sync.get_job(1)
        assert not caught.value.may_have_run
    finally:
        await app.close()


async def test_a_connection_lost_mid_statement_may_have_run(
    app: Shigoto, db: psycopg.AsyncConnection[Any], dsn: str, schema: str
) -> None:
    job = await app.insert(JobSpec.build("faults.x"))
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:

        async def waiting_pid() -> Any:  # (each look a snapshot of its own: autocommit)
            cur = await admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE %s AND pid <> pg_backend_pid()",
                [f"%{schema}%"],
            )
            return await cur.fetchone()

        async with db.transaction():
            # The job's row locked, so that the cancel waits on its way; then its
            # connection is terminated: the caller cannot know whether it ran.
            await db.execute(
                sql.SQL("SELECT 1 FROM {} WHERE id = %s FOR UPDATE").format(
                    sql.Identifier(schema, "jobs")
                ),
                [job.id],
            )
            cancel = asyncio.ensure_future(app.cancel(job.id))
            row = await wait_until(waiting_pid)
            await admin.execute("SELECT pg_terminate_backend(%s)", [row[0]])  # type: ignore[index]
            with pytest.raises(DatabaseUnavailable) as caught:
                await cancel
    assert caught.value.may_have_run


async def test_wait_for_on_a_server_that_never_answers_is_database_unavailable(
    silent_server: str,
) -> None:
    app = Shigoto(dsn=silent_server, connect_timeout=1)
    try:
        async with asyncio.timeout(15):  # bounded: the listener's connect once never ended
            with pytest.raises(DatabaseUnavailable):
                await app.wait_for(1)
            with pytest.raises(DatabaseUnavailable):
                await asyncio.to_thread(app.sync.wait_for, 1)
    finally:
        await app.close()


def test_describe_names_the_primary_message_only() -> None:
    error = psycopg.OperationalError("connection failed: server closed the connection\nDETAIL: x")
    assert describe(error) == "OperationalError: connection failed: server closed the connection"
