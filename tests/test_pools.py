"""The app's connection pools hand out the connection returned last (see db/pools.py)."""

from __future__ import annotations

import asyncio

import pytest

from shigoto import Shigoto
from shigoto.db import pools


async def _backend(conn) -> int:  # type: ignore[no-untyped-def]
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    return int(row[0])


async def test_the_connection_returned_last_is_handed_out_first(app: Shigoto) -> None:
    """Sequential work stays on one warm server process instead of visiting each in turn."""
    async with app.connection() as first, app.connection() as second:
        used = [await _backend(first), await _backend(second)]
    # `second` went back first, then `first`: the next one out is `first`'s, every time.
    for _ in range(3):
        async with app.connection() as again:
            assert await _backend(again) == used[0]
    assert used[0] != used[1]


def test_the_sync_facade_hands_out_the_connection_returned_last(app: Shigoto) -> None:
    def backend(conn) -> int:  # type: ignore[no-untyped-def]
        return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])

    with app.sync.connection() as first, app.sync.connection() as second:
        used = [backend(first), backend(second)]
    for _ in range(3):
        with app.sync.connection() as again:
            assert backend(again) == used[0]
    assert used[0] != used[1]


async def test_a_client_waiting_for_the_pool_gets_the_connection_given_back(
    dsn: str, schema: str
) -> None:
    """The connection given back does not stay aside as the spare while someone waits."""
    app = Shigoto(dsn=dsn, schema=schema, pool_min_size=1, pool_max_size=1)
    try:
        async with app.connection() as held:
            waiter = asyncio.create_task(_one_statement(app))
            await asyncio.sleep(0.1)  # the waiter is queued inside the pool
            assert not waiter.done()
            await held.execute("SELECT 1")
        assert await asyncio.wait_for(waiter, 5) == 1  # not the pool's 30 s timeout
    finally:
        await app.close()


async def _one_statement(app: Shigoto) -> int:
    async with app.connection() as conn:
        cur = await conn.execute("SELECT 1")
        row = await cur.fetchone()
        return int(row[0])  # type: ignore[index]


async def test_a_broken_connection_is_never_kept_as_the_spare(app: Shigoto) -> None:
    async with app.connection() as conn:
        await conn.close()  # broken while in use (a restart, a killed backend)
    assert await _one_statement(app) == 1


async def test_the_spare_goes_back_through_the_pool_now_and_then(
    app: Shigoto, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pools, "SPARE_FOR", 0.2)
    await _one_statement(app)
    pool = await app._get_pool()
    requests = pool.get_stats()["requests_num"]
    for _ in range(20):
        await _one_statement(app)
    assert pool.get_stats()["requests_num"] == requests  # the spare, every time
    await asyncio.sleep(0.3)  # past SPARE_FOR: the pool checks it (and retires it if old)
    await _one_statement(app)
    assert pool.get_stats()["requests_num"] == requests + 1
