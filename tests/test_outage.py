"""The database server goes away while a node works: the node rides it out, nothing is lost.

This test restarts a server, so it always uses a private embedded PostgreSQL of its own
(never the shared test server or SHIGOTO_TEST_DSN).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shigoto import JobSpec, JobState, Shigoto
from shigoto.db.embedded import embedded_dsn, stop_embedded
from tests.conftest import FAST, start_node, wait_until


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
