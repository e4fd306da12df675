"""The app's connection pools hand out the connection returned last (see db/pools.py)."""

from __future__ import annotations

from shigoto import Shigoto


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
