"""Tests that need a real PgBouncer: `python -m tests.pgbouncer` runs them (their file name
keeps them out of the plain `pytest` run, which has no PgBouncer to go through).

A deployment behind PgBouncer in transaction pooling mode without `listen_dsn` polls: a
node, `wait_for` and the sync facade's `wait_for` must leave no LISTEN (nor any other
session state) on the server connections PgBouncer hands to other clients next.
"""

from __future__ import annotations

import asyncio

import pytest

from shigoto import JobState, Shigoto, Unique
from tests.conftest import FAST, PGBOUNCER
from tests.pgbouncer import leftovers


@pytest.fixture
def pgbouncer() -> str:
    if not PGBOUNCER:
        pytest.fail("needs PgBouncer: run `python -m tests.pgbouncer tests/through_pgbouncer.py`")
    return PGBOUNCER


@pytest.mark.parametrize("notifier", [True, False], ids=["notifier on", "notifier off"])
async def test_a_node_and_its_waiters_leave_no_session_state_behind(
    pgbouncer: str, schema: str, notifier: bool
) -> None:
    app = Shigoto(
        dsn=pgbouncer,
        schema=schema,
        prepared_statements=False,
        notifier=notifier,
        **{**FAST, "leader_lease": 0.5},  # type: ignore[arg-type]
    )

    @app.worker(name="add")
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0.2)
        return a + b

    try:
        await app.migrate()  # a transaction-level advisory lock
        await app.schedule("often", "* * * * *", add, {"a": 1, "b": 1})  # the leader's lease
        await app.start()
        first = await app.enqueue("add", {"a": 1, "b": 2})
        second = await app.insert(add.new({"a": 2, "b": 2}, unique=Unique()))
        waited = await asyncio.gather(
            app.wait_for(first.id, timeout=10),
            asyncio.to_thread(app.sync.wait_for, second.id, 10),
        )
        assert [job.state for job in waited] == [JobState.COMPLETED] * 2
        assert [job.result for job in waited] == [3, 4]
    finally:
        await app.stop(timeout=0)
        await app.close()
    seen, found = await asyncio.to_thread(leftovers, pgbouncer)
    assert seen > 1 and found == []
