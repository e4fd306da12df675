"""An app for tests that run nodes in other processes (`shigoto worker tests.nodeapp:app`).

Configured from SHIGOTO_* variables. Every worker records the start and end of each run in
`<schema>.ledger` (in its own transaction), so a test can prove what ran, where, and how
often.
"""

from __future__ import annotations

import asyncio
import os

from psycopg import sql

from shigoto import Shigoto, current_job

app = Shigoto()

LEDGER = """
CREATE TABLE IF NOT EXISTS {} (
    job_id bigint NOT NULL,
    node text NOT NULL,
    attempt integer NOT NULL,
    event text NOT NULL,
    pid integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


def ledger_table(schema: str) -> sql.Composable:
    return sql.Identifier(schema, "ledger")


async def record(event: str) -> None:
    job = current_job()
    async with app.connection() as conn:
        await conn.execute(
            sql.SQL(
                "INSERT INTO {} (job_id, node, attempt, event, pid) VALUES (%s, %s, %s, %s, %s)"
            ).format(ledger_table(app.config.schema)),
            [job.id, job.attempted_by, job.attempt, event, os.getpid()],
        )


@app.worker(name="ledger.noop")
async def noop() -> None:
    await record("start")
    await record("end")


@app.worker(name="ledger.sleep")
async def sleep(seconds: float) -> None:
    await record("start")
    await asyncio.sleep(seconds)
    await record("end")
