"""Schema migrations: versioned, recorded, idempotent, safe when processes race."""

from __future__ import annotations

import asyncio
import os
import sys

import psycopg
import pytest
from psycopg import sql

from shigoto import ConfigurationError, MigrationError, Shigoto
from tests.conftest import SHIPPED, SHIPPED_ROWS


async def _applied(db: psycopg.AsyncConnection, schema: str) -> list[tuple[int, str]]:
    query = sql.SQL("SELECT version, name FROM {}.migrations ORDER BY version")
    cur = await db.execute(query.format(sql.Identifier(schema)))
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def test_migrate_twice_applies_once(dsn: str, schema: str, db) -> None:
    app = Shigoto(dsn=dsn, schema=schema)
    try:
        assert await app.migrate() == SHIPPED
        assert await app.migrate() == []
        assert f"CREATE TABLE {schema}.jobs" not in await app.migration_sql()
    finally:
        await app.close()
    assert await _applied(db, schema) == SHIPPED_ROWS


async def test_dry_run_prints_the_sql_and_changes_nothing(dsn: str, schema: str, db) -> None:
    app = Shigoto(dsn=dsn, schema=schema)
    try:
        script = await app.migration_sql()
    finally:
        await app.close()
    assert script.startswith("BEGIN;") and script.rstrip().endswith("COMMIT;")
    assert f"CREATE TABLE {schema}.jobs" in script
    cur = await db.execute("SELECT to_regnamespace(%s) IS NULL", [schema])
    assert (await cur.fetchone()) == (True,)


async def test_using_an_unmigrated_schema_says_to_migrate(dsn: str, schema: str) -> None:
    app = Shigoto(dsn=dsn, schema=schema)
    try:
        with pytest.raises(MigrationError, match="run `shigoto migrate`"):
            await app.get_job(1)
    finally:
        await app.close()


async def test_processes_migrating_at_once_leave_one_correct_schema(
    dsn: str, schema: str, db
) -> None:
    env = {**os.environ, "SHIGOTO_DSN": dsn, "SHIGOTO_SCHEMA": schema}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shigoto.cli",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [await p.communicate() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], outputs
    messages = sorted(" ".join(out.decode().split()) for out, _ in outputs)  # unwrapped
    assert messages[0] == f"applied {len(SHIPPED)} migration(s): {', '.join(SHIPPED)}"
    assert messages[1:] == [f"schema '{schema}' is up to date"] * 3
    assert await _applied(db, schema) == SHIPPED_ROWS
    app = Shigoto(dsn=dsn, schema=schema)
    try:

        @app.worker(name="w")
        async def w() -> None: ...

        job = await w.enqueue()
        assert await app.get_job(job.id) == job
    finally:
        await app.close()


@pytest.mark.parametrize("name", ["Shigoto", "1abc", "a-b", "a;drop", "pg_catalog", "x" * 64, ""])
def test_schema_name_is_validated(name: str) -> None:
    with pytest.raises(ConfigurationError, match=r"schema: .* is not a valid schema name"):
        Shigoto(dsn="postgresql://unused", schema=name)
