"""Connection pools that hand out the most recently used idle connection first (LIFO).

psycopg_pool hands out its idle connections in turn (FIFO), so a node's statements visit
every server process of the pool one after the other, each one cold: its caches, and the
operating system's scheduler, favour the process that just ran. Taking the connection
returned last keeps a busy node on one or two warm server processes. Measured with
`python -m bench compare` (two nodes draining no-op jobs): 4,600 → 7,400 jobs/s, and a
third less PostgreSQL CPU per job. The idle connections left at the back are the ones the
pool closes first when it shrinks, as before.

    pool = LifoAsyncConnectionPool(dsn, min_size=1, max_size=10)
"""

from __future__ import annotations

from collections import deque
from time import monotonic
from typing import Any

from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool


def _most_recent_first(pool: object) -> None:
    # psycopg_pool keeps its idle connections in a deque, oldest returned on the left,
    # and takes from the left: bring the newest there. (Should a later psycopg_pool keep
    # them otherwise, this does nothing and the pool hands them out in its own order.)
    idle = getattr(pool, "_pool", None)
    if isinstance(idle, deque) and len(idle) > 1:
        idle.rotate(1)


# How long a connection may stay out of the pool as the spare before it goes back through
# it (which checks it and retires it once past its lifetime).
SPARE_FOR = 1.0


class LifoAsyncConnectionPool(AsyncConnectionPool):
    """An `AsyncConnectionPool` handing out its most recently returned connection first.

    It keeps that connection aside, the spare, when nobody waits for one: the next
    `getconn` takes it back at once, without the pool's locks and bookkeeping, which cost
    about as much as a short statement does (a get and a put: 42,000 instructions before,
    8,000 with the spare, callgrind; a single insert is 255,000). The spare counts as in
    use for the pool; it goes back through the pool when it is not idle, and at least once
    a second.
    """

    _spare: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._taken_at: dict[int, float] = {}  # id(conn) -> when it last left the pool

    async def getconn(self, timeout: float | None = None) -> Any:
        spare, self._spare = self._spare, None
        if spare is not None:
            if _still_good(spare, self._taken_at):
                return spare
            await self._back_to_pool(spare)
        conn = await super().getconn(timeout)
        self._taken_at[id(conn)] = monotonic()
        return conn

    async def putconn(self, conn: Any) -> None:
        # The one returned last becomes the spare, unless someone waits inside the pool
        # (the spare would keep them waiting) or it is broken or in a transaction (the
        # pool deals with those).
        if not self._waiting and not self.closed and _idle(conn):
            conn, self._spare = self._spare, conn
            if conn is None:
                return
        await self._back_to_pool(conn)

    async def close(self, timeout: float = 5.0) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            await self._back_to_pool(spare)
        await super().close(timeout)

    async def _back_to_pool(self, conn: Any) -> None:
        self._taken_at.pop(id(conn), None)
        await super().putconn(conn)

    async def _get_ready_connection(self, timeout: float | None) -> Any:
        _most_recent_first(self)
        return await super()._get_ready_connection(timeout)


# (An enum member read once: reading it off its class costs more than the whole check.)
_IDLE = TransactionStatus.IDLE


def _idle(conn: Any) -> bool:
    """Open and not in a transaction: a closed connection's status is UNKNOWN, not IDLE."""
    status: int = conn.pgconn.transaction_status
    return status == _IDLE


def _still_good(spare: Any, taken_at: dict[int, float]) -> bool:
    """Whether the spare may be handed out again as it is: idle, and out of the pool for
    less than SPARE_FOR."""
    return monotonic() - taken_at.get(id(spare), 0.0) < SPARE_FOR and _idle(spare)


class LifoConnectionPool(ConnectionPool):
    """A `ConnectionPool` handing out its most recently returned connection first, with a
    spare as `LifoAsyncConnectionPool` keeps one (a get and a put: 40,000 instructions
    fewer, callgrind). Threads share it, so the spare changes hands under the pool's own
    lock, the one under which a client finds no connection ready and starts to wait: a
    client that would wait takes the spare instead, and one already waiting is never
    passed over by a connection kept aside."""

    _spare: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._taken_at: dict[int, float] = {}

    def getconn(self, timeout: float | None = None) -> Any:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            if _still_good(spare, self._taken_at):
                return spare
            self._back_to_pool(spare)
        conn = super().getconn(timeout)
        self._taken_at[id(conn)] = monotonic()
        return conn

    def putconn(self, conn: Any) -> None:
        if _idle(conn):
            with self._lock:
                if not self._waiting and not self.closed:
                    conn, self._spare = self._spare, conn
            if conn is None:
                return
        self._back_to_pool(conn)

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            self._back_to_pool(spare)
        super().close(timeout)

    def _back_to_pool(self, conn: Any) -> None:
        self._taken_at.pop(id(conn), None)
        super().putconn(conn)

    def _get_ready_connection(self, timeout: float | None) -> Any:
        # (Called under self._lock.) A client about to wait takes the spare rather than
        # wait for its return.
        _most_recent_first(self)
        conn = super()._get_ready_connection(timeout)
        if conn is None:
            conn, self._spare = self._spare, None
        return conn
