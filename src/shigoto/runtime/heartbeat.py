"""The heartbeat: a node proves it is alive by updating its row every `heartbeat_interval`,
from a thread of its own, on a connection of its own.

Neither the event loop nor the pool is in its way: a job that holds the loop (`time.sleep`
in an `async def`, a computation that never awaits) or jobs that hold every pooled
connection cannot make a live node look dead, so its jobs are not rescued while they run.
It stops only when the database does not answer, which is what a heartbeat is meant to
tell the other nodes.

    heart = Heartbeat(connect=database.connect_heartbeat, queries=q, node_id=node, ...)
    heart.start()           # on the event loop: news is reported there
    heart.silence           # seconds since the database last answered a heartbeat
    heart.stop()            # blocks up to `timeout`: call it from a thread

The thread is a daemon and checks on the loop it reports to: it never keeps a process
alive, and it ends when that loop is closed, whether or not the node was stopped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg

from shigoto.db import execution, faults
from shigoto.db.operations import run_sync
from shigoto.db.queries import Queries
from shigoto.runtime.retrying import Backoff

logger = logging.getLogger("shigoto.heartbeat")

# Delays between tries while the database does not answer: short, so a node is back within
# about a second of the server's return, whatever the length of the outage.
RETRY_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0)


def statement_bound(interval: float) -> float:
    """How long one connect or heartbeat may take before it counts as failed: about an
    interval, at least 2 s (libpq's smallest connect timeout), at most 10 s."""
    return min(max(interval, 2.0), 10.0)


class Heartbeat:
    """Beats from its own daemon thread; `on_news` is called on the event loop whenever
    the lifeline should look again: a heartbeat failed or came back, or this node's row
    was found deleted (`declared_dead`), after which it waits for `rejoin()`."""

    def __init__(
        self,
        *,
        connect: Callable[[float], psycopg.Connection[Any]],
        queries: Queries,
        node_id: str,
        queues: Callable[[], Mapping[str, int]],
        meta: Mapping[str, Any],
        interval: float,
        on_news: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._q = queries
        self._node = node_id
        self._queues = queues  # called from the thread: must not iterate a changing dict
        self._meta = dict(meta)
        self._interval = interval
        self._on_news = on_news
        self._last = time.monotonic()  # the node registered just before it started
        self.declared_dead = False
        self._register = False  # rejoin() asked for the row to be written again
        self._stopping = False
        self._wake = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def silence(self) -> float:
        """Seconds since the database last answered a heartbeat (or the node registered)."""
        return time.monotonic() - self._last

    def start(self) -> None:
        """Start beating; call it on the event loop that `on_news` runs on."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="shigoto-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop beating; wait up to `timeout` for a heartbeat under way to end (a thread
        stuck on an unreachable server is left to end on its own, or with the process)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def rejoin(self) -> None:
        """After a node declared dead stopped its jobs: register again and beat on."""
        self.declared_dead = False
        self._register = True
        self._wake.set()

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(tuple(min(delay, self._interval) for delay in RETRY_DELAYS))
        delay = self._interval
        try:
            try:
                self._connection()  # now, so that the first heartbeat does not wait for it
            except Exception as error:
                self._missed(error, first=True)
            while True:
                self._wake.wait(min(delay, threading.TIMEOUT_MAX))
                self._wake.clear()
                if self._stopping or self._loop is None or self._loop.is_closed():
                    return
                if self.declared_dead or not self._loop.is_running():
                    delay = self._interval  # waiting for rejoin(), or for the loop to run
                    continue
                failing = backoff.failures > 0
                try:
                    self._beat()
                except Exception as error:  # any failure is a missed heartbeat, never the end
                    delay = backoff.next()
                    self._missed(error, first=not failing)
                    self._tell()
                    continue
                backoff.reset()
                delay = self._interval
                if failing:
                    logger.info("heartbeat: the database answers again")
                if failing or self.declared_dead:
                    self._tell()
        finally:
            self._close()

    def _beat(self) -> None:
        conn = self._connection()
        if self._register:
            operation = execution.register_node(self._q, self._node, self._queues(), self._meta)
            run_sync(conn, operation)
            self._register = False
        elif not run_sync(conn, execution.heartbeat(self._q, self._node, self._queues())):
            if not self._stopping:  # a node deregistering has no row: that is no death
                self.declared_dead = True
            return
        self._last = time.monotonic()

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._close()
            self._conn = self._connect(statement_bound(self._interval))
        return self._conn

    def _missed(self, error: Exception, *, first: bool) -> None:
        # Once per outage at warning level: retries come several times a second.
        level = logging.WARNING if first else logging.DEBUG
        reason = faults.describe(error)  # one line, never a statement's parameters
        logger.log(level, "heartbeat failed (%.1fs since the last one): %s", self.silence, reason)
        if faults.is_connection_fault(error):
            self._close()  # start afresh on a new connection

    def _tell(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._on_news)
        except RuntimeError:  # the loop was closed meanwhile: nobody to tell
            self._stopping = True

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing left to do
                logger.debug("heartbeat: closing the connection failed", exc_info=True)
