"""The database server goes away, or drops connections, while a node works and a client
calls: the node rides it out, nothing is lost, and calls fail fast while it is away and
work again as soon as it is back.

These tests restart a server, so they always use a private embedded PostgreSQL of their own
(never the shared test server or SHIGOTO_TEST_DSN).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from shigoto import DatabaseUnavailable, JobSpec, JobState, Shigoto
from shigoto.db.embedded import embedded_dsn, stop_embedded
from shigoto.db.faults import describe
from tests.conftest import FAST, ROOT, SUBPROCESS_PATH, start_node, wait_until
from tests.nodeapp import LEDGER, ledger_table, noop


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("outage")
    embedded_dsn(home)
    yield home
    stop_embedded(home)


async def test_jobs_survive_a_database_restart(private_server: Path) -> None:
    dsn = embedded_dsn(private_server)
    app = Shigoto(dsn=dsn, schema="outage", **{**FAST, "heartbeat_interval": 0.5})  # type: ignore[arg-type]
    await app.migrate()
    done: list[int] = []

    @app.worker(name="step")
    async def step(n: int) -> None:
        await asyncio.sleep(0.02)
        done.append(n)

    jobs = await app.insert_all([step.new({"n": n}) for n in range(400)])
    try:
        await app.start(queues={"default": 10})
        await wait_until(lambda: asyncio.sleep(0, result=len(done) >= 50))
        await asyncio.to_thread(stop_embedded, private_server)
        await asyncio.sleep(3)  # longer than the node's timeout: its jobs get fenced
        assert await asyncio.to_thread(embedded_dsn, private_server) == dsn

        async def all_completed() -> bool:
            try:
                return (await app.status()).count(JobState.COMPLETED) == len(jobs)
            except Exception:
                return False

        await wait_until(all_completed, timeout=60, every=0.25)
        assert set(done) == set(range(400))
    finally:
        await app.stop()
        await app.close()


async def test_sigterm_while_the_database_is_down_exits_within_the_shutdown_timeout(
    private_server: Path, nodes
) -> None:
    """A node told to stop while PostgreSQL is away cannot write its last outcomes nor
    deregister: it exits within shutdown_timeout plus a few seconds anyway, says what it
    left, and leaves its jobs claimed for a rescue (they are not lost)."""
    dsn = embedded_dsn(private_server)
    app = Shigoto(dsn=dsn, schema="outage_stop")
    await app.migrate()
    jobs = await app.insert_all([JobSpec.build("ledger.nap", {"seconds": 60}) for _ in range(4)])
    node = start_node(nodes, dsn, "outage_stop", queues="default=4", shutdown_timeout=2)

    async def all_running() -> bool:
        return (await app.status()).count(JobState.EXECUTING) == 4

    try:
        await wait_until(all_running, timeout=30)
        await app.close()
        await asyncio.to_thread(stop_embedded, private_server)
        began = time.monotonic()
        node.send_signal(signal.SIGTERM)
        await asyncio.to_thread(node.wait, 30)
        took = time.monotonic() - began
    finally:
        await asyncio.to_thread(embedded_dsn, private_server)
    output = node.stdout.read().decode() if node.stdout else ""
    assert took < 2 + 5, output
    assert "4 outcome(s) were not written" in output, output
    assert "until another node rescues them" in output, output
    for job in jobs:  # left as they were, for a rescue: nothing was lost
        left = await app.get_job(job.id)
        assert left is not None and left.state is JobState.EXECUTING
    await app.close()


async def _purge(dsn: str) -> int:
    """Terminate every pooled connection of the private server (as an operator's
    `pg_terminate_backend` does), waiting until they are gone; how many there were."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM pg_stat_activity"
            " WHERE application_name = 'shigoto' AND pid <> pg_backend_pid()"
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def test_every_call_works_after_its_pooled_connections_were_terminated(
    private_server: Path,
) -> None:
    dsn = embedded_dsn(private_server)
    app = Shigoto(dsn=dsn, schema="purge", pool_min_size=3)
    try:
        await app.migrate()
        job = await app.insert(JobSpec.build("purge.x"))
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "insert": lambda: app.insert(JobSpec.build("purge.x")),
            "insert_all": lambda: app.insert_all([JobSpec.build("purge.x")] * 2),
            "insert_many": lambda: app.insert_many(JobSpec.build("purge.x"), [{}, {}]),
            "get_job": lambda: app.get_job(job.id),
            "list_jobs": lambda: app.list_jobs(limit=5),
            "status": app.status,
            "cancel": lambda: app.cancel(job.id),
            "retry": lambda: app.retry(job.id),
            "cancel_by": lambda: app.cancel_by(queue="default"),
        }
        sync_calls: dict[str, Callable[[], object]] = {
            "insert": lambda: app.sync.insert(JobSpec.build("purge.x")),
            "insert_all": lambda: app.sync.insert_all([JobSpec.build("purge.x")] * 2),
            "insert_many": lambda: app.sync.insert_many(JobSpec.build("purge.x"), [{}, {}]),
            "get_job": lambda: app.sync.get_job(job.id),
            "list_jobs": lambda: app.sync.list_jobs(limit=5),
            "status": app.sync.status,
            "cancel": lambda: app.sync.cancel(job.id),
            "retry": lambda: app.sync.retry(job.id),
            "cancel_by": lambda: app.sync.cancel_by(queue="default"),
        }
        # Several connections in each pool, as a busy web app has.
        await asyncio.gather(*(app.status() for _ in range(4)))
        await asyncio.gather(*(asyncio.to_thread(app.sync.status) for _ in range(4)))
        for name, call in calls.items():
            assert await _purge(dsn) >= 2, name  # the async pool's and the sync pool's
            await call()  # no AdminShutdown: the dead connections are replaced first
        for name, sync_call in sync_calls.items():
            assert await _purge(dsn) >= 1, name
            await asyncio.to_thread(sync_call)
        async with app.connection() as conn:  # a connection of your own, too
            await _purge(dsn)
        async with app.connection() as conn:
            await conn.execute("SELECT 1")
    finally:
        await app.close()


async def test_calls_fail_fast_while_the_database_is_down_and_work_once_it_is_back(
    private_server: Path, nodes: list[subprocess.Popen[bytes]]
) -> None:
    dsn = embedded_dsn(private_server)
    app = Shigoto(dsn=dsn, schema="down", connect_timeout=2.0)
    await app.migrate()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL(LEDGER).format(ledger_table("down")))
    # A node with the default heartbeat's proportions: a restart shorter than the time
    # after which a node counts as dead does not stop its jobs.
    start_node(nodes, dsn, "down", heartbeat_interval=5, rescue_after=60)
    first = (
        await asyncio.to_thread(app.sync.insert, JobSpec.build("ledger.noop")),
        await app.insert(JobSpec.build("ledger.noop")),
    )
    try:
        for job in first:
            await app.wait_for(job.id, timeout=30)
        await asyncio.to_thread(stop_embedded, private_server)
        down_at = time.monotonic()
        for call in (lambda: app.get_job(1), lambda: asyncio.to_thread(app.sync.get_job, 1)):
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable) as caught:
                await call()
            assert time.monotonic() - started < 2.0 + 1.5
            assert "within 2s" in str(caught.value)
            assert isinstance(caught.value.__cause__, psycopg.OperationalError)
            assert describe(caught.value.__cause__) in str(caught.value)  # the last error
        # An outage longer than psycopg_pool's reconnect delays grow in a few attempts.
        await asyncio.sleep(max(0.0, 12.0 - (time.monotonic() - down_at)))
        assert await asyncio.to_thread(embedded_dsn, private_server) == dsn
        back_at = time.monotonic()  # the server accepts connections again
        job = await app.insert(JobSpec.build("ledger.noop"))
        assert time.monotonic() - back_at < 1.5
        started = time.monotonic()
        assert await asyncio.to_thread(app.sync.get_job, job.id) is not None
        assert time.monotonic() - started < 1.5
        done = await app.wait_for(job.id, timeout=30)  # the node claims and acks again
        assert done.state is JobState.COMPLETED
        assert time.monotonic() - back_at < 3.0
    finally:
        for process in nodes:
            process.terminate()
            process.wait(timeout=30)
        await app.close()


async def test_a_node_works_on_after_its_pooled_connections_were_terminated(
    private_server: Path, nodes: list[subprocess.Popen[bytes]]
) -> None:
    dsn = embedded_dsn(private_server)
    app = Shigoto(dsn=dsn, schema="purge_node")
    await app.migrate()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL(LEDGER).format(ledger_table("purge_node")))
    # Its periodic statements (staging, schedules, the lease, the poll) seconds apart, so
    # that a purge finds the node idle, as this test means it to: a statement on its way
    # when its connection is cut fails whatever the pool does (and is retried).
    quiet = {"stage_interval": 5, "schedule_tick": 5, "leader_lease": 60, "poll_interval": 5}
    node = start_node(nodes, dsn, "purge_node", heartbeat_interval=5, rescue_after=60, **quiet)
    try:
        for _ in range(3):
            jobs = await app.insert_all([JobSpec.build("ledger.noop") for _ in range(10)])
            for job in jobs:
                done = await app.wait_for(job.id, timeout=30)
                assert (done.state, done.errors) == (JobState.COMPLETED, [])
            # Every pooled connection of the node's, the app's and the jobs': an operator
            # purging the server's sessions, while the node idles between jobs.
            assert await _purge(dsn) >= 2
    finally:
        node.terminate()
        output = (await asyncio.to_thread(node.communicate, timeout=30))[0].decode()
        await app.close()
    # Nothing failed on the way: no claim, outcome or job statement met a dead connection.
    assert "AdminShutdown" not in output and "retrying" not in output, output


# Seconds the server is down: at least 30, and past psycopg_pool's fifth reconnect attempt
# after the first failure (31 s, give or take its 10% jitter), so that a pool whose
# backoff doubles without a cap would idle until its sixth (~63 s), whatever the jitter.
OUTAGE = 36.0
RESUME_WITHIN = 2.0  # seconds after the server accepts connections again
GIVE_UP_AFTER = 45.0  # seconds after its return: long enough to measure a slow recovery


def _drain(process: subprocess.Popen[bytes]) -> list[str]:
    """The child's output lines, read as they come (a full pipe would stall the child)."""
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.decode(errors="replace").rstrip())

    threading.Thread(target=read, daemon=True).start()
    return lines


def _first_accept(dsn: str) -> tuple[float, datetime]:
    """Connect as soon as the server accepts: that moment by this machine's monotonic
    clock (the client's too) and by the server's clock (the jobs' timestamps)."""
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=1) as conn:
                accepted = time.monotonic()
                row = conn.execute("SELECT clock_timestamp()").fetchone()
                assert row is not None
                return accepted, row[0]
        except psycopg.OperationalError:
            time.sleep(0.01)


async def _first_work_since(dsn: str, schema: str, moment: datetime) -> tuple[datetime, ...]:
    """When the node first claimed a job, and first completed one it claimed, at or after
    `moment`; () while it has not."""
    query = sql.SQL(
        "SELECT min(attempted_at), min(completed_at) FROM {}.jobs "
        "WHERE state = 'completed' AND attempted_at >= %s"
    ).format(sql.Identifier(schema))
    with contextlib.suppress(psycopg.OperationalError):
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            row = await (await conn.execute(query, [moment])).fetchone()
            if row is not None and row[0] is not None:
                return tuple(row)
    return ()


async def test_a_node_and_a_client_resume_within_2s_of_a_long_outage(
    private_server: Path, nodes: list[subprocess.Popen[bytes]]
) -> None:
    """A node process and a client process (inserting in a loop on pooled connections,
    async and sync) keep running while the server is down for over 30 s; within 2 s of
    the server accepting connections again, the node has claimed and completed a job and
    both kinds of client insert have succeeded, and no insert begun after that fails."""
    dsn = embedded_dsn(private_server)
    schema = "outage_long"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    app = Shigoto(dsn=dsn, schema=schema)
    await app.migrate()
    async with app.connection() as conn:
        await conn.execute(sql.SQL(LEDGER).format(ledger_table(schema)))  # type: ignore[arg-type]
    # Due while the server is down: work that waits for the node the moment it is back.
    await app.insert_all([noop.new({}, scheduled_in=OUTAGE / 2) for _ in range(20)])
    await app.close()

    node_output = _drain(start_node(nodes, dsn, schema, queues="default=4"))
    environment = {"SHIGOTO_DSN": dsn, "SHIGOTO_SCHEMA": schema, "PYTHONPATH": SUBPROCESS_PATH}
    client = subprocess.Popen(
        [sys.executable, "-m", "tests.outage_client"],
        env={**os.environ, **environment},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    nodes.append(client)  # killed at the end, as the node is
    client_output = _drain(client)

    def calls() -> list[dict[str, Any]]:
        said = []
        for line in list(client_output):
            with contextlib.suppress(ValueError):
                said.append(json.loads(line))
        return said

    def inserted(via: str, after: float) -> list[float]:
        """When the client's `via` inserts that succeeded after `after` returned."""
        return [c["at"] for c in calls() if c["via"] == via and c["ok"] and c["at"] > after]

    async def within(seconds: float, check: Any) -> Any:
        with contextlib.suppress(AssertionError):
            return await wait_until(check, timeout=seconds, every=0.05)
        return None

    def said() -> str:
        return f"node said: {node_output[-15:]}\nclient said: {client_output[-6:]}"

    # Both at work before the outage.
    for via in ("async", "sync"):
        await wait_until(lambda via=via: asyncio.sleep(0, inserted(via, 0)), timeout=30)
    assert await within(30, lambda: _first_work_since(dsn, schema, datetime.min)), said()

    await asyncio.to_thread(stop_embedded, private_server)
    await asyncio.sleep(OUTAGE)  # the fault itself: the server stays down this long
    accepting = asyncio.create_task(asyncio.to_thread(_first_accept, dsn))
    assert await asyncio.to_thread(embedded_dsn, private_server) == dsn
    back, db_back = await accepting

    for via in ("async", "sync"):
        await within(GIVE_UP_AFTER, lambda via=via: asyncio.sleep(0, inserted(via, back)))
        after = min(inserted(via, back), default=back + GIVE_UP_AFTER) - back
        assert after <= RESUME_WITHIN, f"first {via} insert {after:.1f}s after: {said()}"
    work = await within(GIVE_UP_AFTER, lambda: _first_work_since(dsn, schema, db_back))
    assert work, f"no job claimed and completed in {GIVE_UP_AFTER:g}s: {said()}"
    claimed, completed = ((moment - db_back).total_seconds() for moment in work)
    assert claimed <= RESUME_WITHIN, f"first claim {claimed:.1f}s after: {said()}"
    assert completed <= RESUME_WITHIN, f"first completion {completed:.1f}s after: {said()}"
    failed = [c for c in calls() if c["started"] >= back and not c["ok"]]
    assert not failed, f"inserts begun after the server was back failed: {failed[:3]}"
    assert nodes[0].poll() is None, said()
