"""Writes job outcomes in batches: one statement for every outcome waiting, not one per job.

    acker.add(ack)                     # fire and forget; written with the next batch
    applied = await acker.write(ack)   # wait for it (True if the row still belonged to us)

While a batch is being written, new outcomes gather for the next one, so the batch size
follows the load with no added delay. A batch that cannot be written (the database is
down) is kept and retried with backoff, never dropped. Progress reports ride along.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from shigoto.db import execution
from shigoto.db.execution import Ack
from shigoto.db.operations import Operation
from shigoto.db.queries import Queries
from shigoto.job import Job, JobState
from shigoto.runtime.executor import error_entry
from shigoto.runtime.retrying import TRANSIENT, Backoff

logger = logging.getLogger("shigoto.acker")

Database = Callable[[Operation[Any]], Awaitable[Any]]

BATCH = 1_000


class Acker:
    """One per node; `run()` is its supervised loop."""

    def __init__(
        self,
        db: Database,
        queries: Queries,
        node_id: str,
        on_follow_up: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._on_follow_up = on_follow_up  # jobs just finished may release others or end a batch
        self._q = queries
        self._node = node_id
        self._pending: list[tuple[Ack, asyncio.Future[bool] | None]] = []
        self._progress: dict[tuple[int, int], float] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop = asyncio.get_running_loop()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, ack: Ack) -> None:
        self._pending.append((ack, None))
        self._idle.clear()
        self._wake.set()

    async def write(self, ack: Ack) -> bool:
        """Queue `ack` and wait until it is written; True if it applied to the job."""
        done: asyncio.Future[bool] = self._loop.create_future()
        self._pending.append((ack, done))
        self._idle.clear()
        self._wake.set()
        return await done

    def report_progress(self, job: Job, percent: float) -> None:
        """Thread-safe: sync workers report from their threads."""
        key = (job.id, job.attempt)
        try:
            running_here = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            running_here = False
        if running_here:
            self._record_progress(key, percent)
        else:
            self._loop.call_soon_threadsafe(self._record_progress, key, percent)

    def _record_progress(self, key: tuple[int, int], percent: float) -> None:
        self._progress[key] = percent
        self._idle.clear()
        self._wake.set()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.drain()

    async def drain(self) -> None:
        """Write everything queued, retrying through outages; `run` calls it on each wake."""
        backoff = Backoff()
        while self._pending or self._progress:
            try:
                await self._write_once()
                backoff.reset()
            except TRANSIENT as error:
                delay = backoff.next()
                logger.warning(
                    "could not write %d outcome(s), retrying in %.2fs: %s",
                    len(self._pending),
                    delay,
                    error,
                )
                await asyncio.sleep(delay)
        self._idle.set()

    async def _write_once(self) -> None:
        if self._progress:
            updates, self._progress = self._progress, {}
            try:
                await self._db(execution.record_progress(self._q, updates, node=self._node))
            except TRANSIENT:
                self._progress = {**updates, **self._progress}
                raise
        if not self._pending:
            return
        batch = self._pending[:BATCH]
        try:
            applied = await self._write([a for a, _ in batch])
        except TRANSIENT:
            raise
        except psycopg.Error as error:
            # Not the connection: something in this batch. Write each alone, so one bad
            # outcome cannot hold up the others.
            logger.error("a batch of outcomes was refused (%s); writing them one by one", error)
            applied = await self._write_singly(batch)
        del self._pending[: len(batch)]
        for ack, done in batch:
            if done is not None and not done.done():
                done.set_result(ack.id in applied)

    async def _write(self, acks: list[Ack]) -> set[int]:
        settled: execution.Settled = await self._db(execution.ack(self._q, acks, node=self._node))
        if settled.follow_up:
            self._on_follow_up()
        return settled.applied

    async def _write_singly(self, batch: list[tuple[Ack, asyncio.Future[bool] | None]]) -> set[int]:
        applied: set[int] = set()
        for ack, _ in batch:
            try:
                applied |= await self._write([ack])
            except TRANSIENT:
                raise
            except psycopg.Error as error:
                logger.error("the outcome of job %s could not be stored: %s", ack.id, error)
                fallback = _fallback(ack, error)
                applied |= await self._write([fallback])
        return applied


def _fallback(ack: Ack, error: psycopg.Error) -> Ack:
    """A failed attempt that says why the real outcome could not be stored."""
    message = f"the outcome ({ack.state.value}) could not be stored: {error}"
    entry = error_entry(ack.attempt, None, kind="OutcomeNotStored", message=message)
    return Ack(ack.id, ack.attempt, JobState.RETRYABLE, delay=60.0, error=entry)
