"""Which database errors are waited out (the database is unreachable) and which are about
the request, and so are never retried."""

from __future__ import annotations

import psycopg
import pytest

from shigoto import DatabaseUnavailable, Shigoto
from shigoto.db.faults import describe, is_connection_fault


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
        with pytest.raises(DatabaseUnavailable):
            app.sync.get_job(1)
    finally:
        await app.close()


def test_describe_names_the_primary_message_only() -> None:
    error = psycopg.OperationalError("connection failed: server closed the connection\nDETAIL: x")
    assert describe(error) == "OperationalError: connection failed: server closed the connection"
