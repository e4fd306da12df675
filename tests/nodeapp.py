"""An app for tests that run nodes in other processes (`shigoto worker tests.nodeapp:app`).

Configured from SHIGOTO_* variables. Every worker records the start and end of each run in
`<schema>.ledger` (in its own transaction), so a test can prove what ran, where, and how
often; `ledger.blink`, too short for that, notes its runs in `runs_file(schema)` instead.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from psycopg import sql

from shigoto import Event, Shigoto, current_job

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


async def record(event: str, conn: Any = None) -> None:
    """Write `event` for the running job, on `conn` or on a connection from the pool."""
    if conn is None:
        async with app.connection() as pooled:
            return await record(event, pooled)
    job = current_job()
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


def runs_file(schema: str) -> Path:
    """Where `ledger.blink` notes each run it starts: one line "job_id attempt"."""
    return Path(tempfile.gettempdir()) / f"shigoto-{schema}.runs"


def note(event: str) -> None:
    """Append "job_id attempt event time" to `runs_file`: one small write, so whole lines
    even from two processes; no statement, so cheap and fine in a thread."""
    job = current_job()
    line = f"{job.id} {job.attempt} {event} {time.time()!r}\n".encode()
    descriptor = os.open(runs_file(app.config.schema), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


@app.worker(name="ledger.blink")
async def blink() -> None:
    """A 1 ms job, for draining a backlog; its runs go to the runs file."""
    note("start")
    await asyncio.sleep(0.001)


@app.worker(name="ledger.stuck", timeout=0.5, backoff=lambda attempt, error: 0)
def stuck(seconds: float) -> None:
    """A plain function that sleeps past its timeout (a thread cannot be interrupted)."""
    note("start")
    time.sleep(seconds)
    note("end")


@app.worker(name="ledger.nap")
async def nap(seconds: float) -> None:
    """Sleeps without touching the database (for a test that stops the server)."""
    await asyncio.sleep(seconds)


@app.worker(name="ledger.block")
async def block(seconds: float, spin: bool = False) -> None:
    """Holds the event loop: sleeps in `time.sleep`, or spins the CPU, never awaiting."""
    await record("start")
    if spin:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pass
    else:
        time.sleep(seconds)
    await record("end")


@app.worker(name="ledger.hold")
async def hold(seconds: float) -> None:
    """Holds one of the app's pooled connections for `seconds`."""
    async with app.connection() as conn:
        await record("start", conn)
        await asyncio.sleep(seconds)
        await record("end", conn)


@app.worker(name="ledger.emit")
async def emit(name: str) -> None:
    """Publishes the custom event `name` to every node."""
    await app.emit(current_job().id, name, {"from": os.getpid()})


if os.environ.get("NODEAPP_HEAR_CUSTOM"):

    @app.on("custom.*")
    async def heard(event: Event) -> None:
        """Notes each custom event this node hears (job_id 0 for one about no job)."""
        async with app.connection() as conn:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (job_id, node, attempt, event, pid) VALUES (%s, %s, 0, %s, %s)"
                ).format(ledger_table(app.config.schema)),
                [event.job_id or 0, event.node or "", event.name, os.getpid()],
            )
