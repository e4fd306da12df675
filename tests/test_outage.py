"""The database server goes away while a node works: the node rides it out, nothing is lost.

This test restarts a server, so it always uses a private embedded PostgreSQL of its own
(never the shared test server or SHIGOTO_TEST_DSN).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from shigoto import JobState, Shigoto
from shigoto.db.embedded import embedded_dsn, stop_embedded
from tests.conftest import FAST, wait_until


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
