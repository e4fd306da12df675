"""Connection pools that hand out the most recently used idle connection first (LIFO).

psycopg_pool hands out its idle connections in turn (FIFO), so a node's statements visit
every server process of the pool one after the other, each one cold: its caches, and the
operating system's scheduler, favour the process that just ran. Taking the connection
returned last keeps a busy node on one or two warm server processes. Measured with
`python -m bench compare` (two nodes draining no-op jobs): 4,600 → 7,400 jobs/s, and a
third less PostgreSQL CPU per job. The idle connections left at the back are the ones the
pool closes first when it shrinks, as before.

    pool = LifoAsyncConnectionPool(dsn, min_size=1, max_size=10, timeout=5.0)

They also ride out faults of the server:

- A connection the server closed while it sat idle in the pool (a restart, a purge with
  `pg_terminate_backend`, `idle_session_timeout`) is never handed out: the server's
  goodbye is already waiting on its socket, which `getconn` looks at before handing the
  connection out (a poll that does not wait, about a microsecond, for the spare too: a
  web app's next statement often follows its last within milliseconds, and a purge
  can fall between them). Such a connection is replaced, and the caller gets a
  working one. No statement is ever sent on it, so none needs to be sent twice.
- A lost connection is replaced with attempts at most `RECONNECT_EVERY` apart
  (psycopg_pool doubles the wait after each failed attempt, without a cap: after a 30 s
  outage its next attempt could come 30 s after the server is back).
- `getconn` that gets no connection within its timeout raises `DatabaseUnavailable`
  naming the last connection error, or `PoolExhausted` when the server answers but every
  connection of the pool is in use, rather than psycopg_pool's `PoolTimeout`.
- Cancelled (asyncio.run ends the loop of a script that did not close the app), the async
  pool's tasks end, also while a connection attempt is under way, rather than take the
  cancellation for a failed attempt and keep asyncio.run from returning.
"""

from __future__ import annotations

import asyncio
import logging
import select
from collections import deque
from time import monotonic
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
from psycopg_pool._acompat import AEvent
from psycopg_pool.base import AttemptWithBackoff
from psycopg_pool.pool_async import StopWorker

from shigoto.db.faults import describe
from shigoto.outcomes import DatabaseUnavailable, PoolExhausted

logger = logging.getLogger("shigoto.pools")

# The longest wait between two attempts to replace a lost connection: a server that is
# back is used again within this (plus the time a connection takes).
RECONNECT_EVERY = 0.5


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

    def __init__(self, *args: Any, exhausted_hint: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._taken_at: dict[int, float] = {}  # id(conn) -> when it last left the pool
        self.last_error: BaseException | None = None  # of the last attempt to connect
        self._exhausted_hint = exhausted_hint

    async def getconn(self, timeout: float | None = None) -> Any:
        spare, self._spare = self._spare, None
        if spare is not None:
            if _still_good(spare, self._taken_at):
                if not _has_news(spare) or await self._works(spare):
                    return spare
                self._taken_at.pop(id(spare), None)
            else:
                await self._back_to_pool(spare)
        wait = self.timeout if timeout is None else timeout
        deadline = monotonic() + wait
        while True:
            try:
                conn = await super().getconn(max(deadline - monotonic(), 0.001))
            except PoolTimeout as error:
                unavailable, cause = _no_connection(self, wait)
                raise unavailable from cause or error
            if not _has_news(conn) or await self._works(conn):
                self._taken_at[id(conn)] = monotonic()
                return conn

    async def _works(self, conn: Any) -> bool:
        """Whether a connection with unread input (a server's goodbye, mostly) still works;
        one that does not goes back to be replaced."""
        try:
            await self.check_connection(conn)
            return True
        except Exception:
            await self._putconn(conn, from_getconn=True)  # replaced, quietly
            return False

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

    def _open(self) -> None:
        super()._open()
        if not isinstance(self._sched._event, _Event):  # the scheduler's task waits on it
            self._sched._event = _Event()

    async def _connect(self, timeout: float | None = None) -> Any:
        try:
            conn = await super()._connect(timeout)
        except Exception as error:
            self.last_error = error
            raise
        self.last_error = None
        return conn

    async def _add_connection(
        self, attempt: AttemptWithBackoff | None, growing: bool = False
    ) -> None:
        await super()._add_connection(attempt or _Retry(timeout=self.reconnect_timeout), growing)

    @classmethod
    async def worker(cls, q: Any) -> None:
        # psycopg_pool's own loop, except for what it does when cancelled during a task: it
        # takes the cancellation for a failed attempt and waits for the next task, so that
        # asyncio.run (which cancels what is left and waits for it) would never return.
        me = asyncio.current_task()
        while True:
            task = await q.get()
            if isinstance(task, StopWorker):
                return
            try:
                await task.run()
            except Exception as error:
                logger.warning("pool task %s failed: %s", task, describe(error))
            if me is not None and me.cancelling():
                raise asyncio.CancelledError


# (An enum member read once: reading it off its class costs more than the whole check.)
_IDLE = TransactionStatus.IDLE


def _idle(conn: Any) -> bool:
    """Open and not in a transaction: a closed connection's status is UNKNOWN, not IDLE."""
    status: int = conn.pgconn.transaction_status
    return status == _IDLE


def _has_news(conn: Any) -> bool:
    """Whether an idle connection has input waiting: the server's goodbye (a terminated
    backend, a shutdown) or, rarely, a notice. A poll that does not wait."""
    try:
        socket = conn.pgconn.socket
    except psycopg.OperationalError:
        return True  # closed: news enough
    return _readable(socket)


if hasattr(select, "poll"):

    def _readable(fd: int) -> bool:
        # poll, not select: select refuses descriptors from 1024 on, which a busy server
        # process reaches (and poll is the quicker of the two here: 0.6 us against 0.9).
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

else:  # Windows, whose select has no such limit on descriptors' values

    def _readable(fd: int) -> bool:
        return bool(select.select((fd,), (), (), 0)[0])


class _Event(AEvent):
    """The event psycopg_pool's scheduler task sleeps on, waited for with
    `asyncio.timeout`: on Python 3.11 `asyncio.wait_for` swallows a cancellation that
    arrives as the event is set (a connection attempt scheduling its retry as asyncio.run
    cancels everything), and the task would then sleep until its next chore, up to ten
    minutes, holding asyncio.run up all that time."""

    async def wait_timeout(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.wait()
        except TimeoutError:
            return False
        return True


class _Retry(AttemptWithBackoff):
    """psycopg_pool's growing delays between attempts to connect, capped at
    RECONNECT_EVERY."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_EVERY)


def _no_connection(pool: Any, waited: float) -> tuple[DatabaseUnavailable, BaseException | None]:
    """What a caller who got no connection within `waited` seconds is told, and why: the
    server answers but every connection of the pool is in use, or it is unreachable
    (naming the last connection error, which is then the cause)."""
    if len(pool._taken_at) >= pool.max_size:
        message = (
            f"all {pool.max_size} connections of pool {pool.name!r} stayed in use for "
            f"{waited:g}s{pool._exhausted_hint}"
        )
        return PoolExhausted(message), None
    last = pool.last_error
    reason = describe(last) if last is not None else "no connection attempt finished"
    message = f"no connection to the database within {waited:g}s: {reason}"
    return DatabaseUnavailable(message), last


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

    def __init__(self, *args: Any, exhausted_hint: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._taken_at: dict[int, float] = {}
        self.last_error: BaseException | None = None
        self._exhausted_hint = exhausted_hint

    def getconn(self, timeout: float | None = None) -> Any:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            if _still_good(spare, self._taken_at):
                if not _has_news(spare) or self._works(spare):
                    return spare
                self._taken_at.pop(id(spare), None)
            else:
                self._back_to_pool(spare)
        wait = self.timeout if timeout is None else timeout
        deadline = monotonic() + wait
        while True:
            try:
                conn = super().getconn(max(deadline - monotonic(), 0.001))
            except PoolTimeout as error:
                unavailable, cause = _no_connection(self, wait)
                raise unavailable from cause or error
            if not _has_news(conn) or self._works(conn):
                self._taken_at[id(conn)] = monotonic()
                return conn

    def _works(self, conn: Any) -> bool:
        try:
            self.check_connection(conn)
            return True
        except Exception:
            self._putconn(conn, from_getconn=True)
            return False

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

    def _connect(self, timeout: float | None = None) -> Any:
        try:
            conn = super()._connect(timeout)
        except Exception as error:
            self.last_error = error
            raise
        self.last_error = None
        return conn

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        super()._add_connection(attempt or _Retry(timeout=self.reconnect_timeout), growing)
