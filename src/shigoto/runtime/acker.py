"""Writes job outcomes in batches: one statement for every outcome waiting, not one per job.

    acker.add(ack)                     # fire and forget; written with the next batch
    written = await acker.write(ack)   # wait for it: the outcome that applied, or None

While a batch is being written, new outcomes gather for the next one, so the batch size
follows the load with no added delay. A batch that cannot be written because the database
is unreachable is kept and retried with backoff, never dropped. A batch the database
refuses (an error about the data, never retried as such) is split until the outcome it
refuses is found; that one is replaced by a failure that says why ("result could not be
stored: ..."), and every other is written. Progress reports ride along.

What waits here is bounded: past `MAX_PENDING` outcomes or `MAX_PENDING_BYTES` of results,
`has_room` is False and producers wait (`await acker.room()`) before they claim more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from shigoto.db import execution
from shigoto.db.execution import Ack
from shigoto.db.faults import describe
from shigoto.db.operations import Operation
from shigoto.db.queries import Queries
from shigoto.events import EventBus, job_event
from shigoto.job import Job, JobState
from shigoto.outcomes import DatabaseUnavailable
from shigoto.runtime.executor import error_entry
from shigoto.runtime.finish import Waiter
from shigoto.runtime.retrying import TRANSIENT, Backoff
from shigoto.worker import default_backoff

logger = logging.getLogger("shigoto.acker")

Database = Callable[[Operation[Any]], Awaitable[Any]]

BATCH = 1_000  # outcomes per statement, at most
BATCH_BYTES = 16 << 20  # results per statement, at most (but always one outcome)
MAX_PENDING = 10_000  # outcomes waiting, beyond which producers stop claiming
MAX_PENDING_BYTES = 64 << 20  # the same, in bytes of results


class Acker:
    """One per node; `run()` is its supervised loop."""

    def __init__(
        self,
        db: Database,
        queries: Queries,
        node_id: str,
        on_follow_up: Callable[[], None] = lambda: None,
        bus: EventBus | None = None,
    ) -> None:
        self._db = db
        self._bus = bus
        self._on_follow_up = on_follow_up  # jobs just finished may release others or end a batch
        self._q = queries
        self._node = node_id
        self._pending: list[tuple[Ack, Waiter | None]] = []
        self._bytes = 0  # the results' size in `_pending`
        self._progress: dict[tuple[int, int], float] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()
        self._room.set()
        self._loop = asyncio.get_running_loop()

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def has_room(self) -> bool:
        """False while too many outcomes wait: claim no more jobs until `room()`."""
        return self._room.is_set()

    async def room(self) -> None:
        """Wait until the outcomes waiting are back under the bounds."""
        await self._room.wait()

    def add(self, ack: Ack, done: Waiter | None = None) -> None:
        """Queue `ack`; `done`, if given, gets what `write` returns."""
        self._pending.append((ack, done))
        self._bytes += ack.size
        if len(self._pending) >= MAX_PENDING or self._bytes >= MAX_PENDING_BYTES:
            self._room.clear()
        self._idle.clear()
        self._wake.set()

    async def write(self, ack: Ack) -> Ack | None:
        """Queue `ack` and wait until it is written: the outcome that applied (`ack`, or
        the failure that replaced it if the database refused it), None if the job was no
        longer this run's (cancelled or rescued meanwhile)."""
        done: asyncio.Future[Ack | None] = self._loop.create_future()
        self.add(ack, done)
        return await done

    def report_progress(self, job: Job, percent: float) -> None:
        """Thread-safe: sync workers report from their threads."""
        try:
            running_here = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            running_here = False
        if running_here:
            self._record_progress(job, percent)
        else:
            self._loop.call_soon_threadsafe(self._record_progress, job, percent)

    def _record_progress(self, job: Job, percent: float) -> None:
        self._progress[(job.id, job.attempt)] = percent
        self._idle.clear()
        self._wake.set()
        bus = self._bus
        if bus is not None and bus.active and bus.wants("job.progress"):
            bus.publish(job_event("job.progress", job, node=self._node, progress=percent))

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
        batch = self._next_batch()
        written: dict[int, Ack] = {}  # by job id, as each part of the batch is written
        complete = False
        try:
            await self._write_split([ack for ack, _ in batch], written, first=True)
            complete = True
        finally:
            self._settle(batch, written, complete)

    def _next_batch(self) -> list[tuple[Ack, Waiter | None]]:
        size = 0
        for count, (ack, _) in enumerate(self._pending[:BATCH]):
            size += ack.size
            if size > BATCH_BYTES and count > 0:
                return self._pending[:count]
        return self._pending[:BATCH]

    def _settle(
        self, batch: list[tuple[Ack, Waiter | None]], written: dict[int, Ack], complete: bool
    ) -> None:
        """Take `batch` (the head of the queue) off the queue and tell whoever waits; if an
        outage cut it short, keep what was not written yet (what was is done with: written
        again, it would read as not applied)."""
        del self._pending[: len(batch)]
        kept = []
        for entry in batch:
            ack, waiter = entry
            if not complete and ack.id not in written:
                kept.append(entry)
                continue
            self._bytes -= ack.size
            if waiter is not None and not waiter.done():
                waiter.set_result(written.get(ack.id))
        self._pending[:0] = kept
        if len(self._pending) < MAX_PENDING and self._bytes < MAX_PENDING_BYTES:
            self._room.set()

    async def _write_split(self, acks: list[Ack], written: dict[int, Ack], first: bool) -> None:
        try:
            applied = await self._write(acks)
        except TRANSIENT:
            raise
        except Exception as error:
            if not refused(error):
                raise
            if len(acks) == 1:
                await self._refused(acks[0], error, written)
                return
            if first:
                logger.error(
                    "a batch of %d outcomes was refused (%s); looking for the one at fault",
                    len(acks),
                    describe(error),
                )
            half = len(acks) // 2
            await self._write_split(acks[:half], written, first=False)
            await self._write_split(acks[half:], written, first=False)
            return
        written.update((ack.id, ack) for ack in acks if ack.id in applied)

    async def _refused(self, ack: Ack, error: Exception, written: dict[int, Ack]) -> None:
        why = describe(error)  # never the detail or context: they may quote the outcome
        logger.error(
            "the outcome of job %s could not be stored: %s", ack.id, why, extra={"job_id": ack.id}
        )
        fallback = _fallback(ack, why)
        try:
            applied = await self._write([fallback])
        except TRANSIENT:
            raise
        except Exception as again:
            if not refused(again):
                raise
            # The failure is our own few words: if it is refused too, the database refuses
            # every write (read-only after a failover, its schema gone), whatever the
            # outcome. Waited out as an outage: everything stays queued, tried again later.
            raise DatabaseUnavailable(
                f"the database refuses every outcome: {describe(again)}"
            ) from again
        if fallback.id in applied:
            written[fallback.id] = fallback

    async def _write(self, acks: list[Ack]) -> set[int]:
        settled: execution.Settled = await self._db(execution.ack(self._q, acks, node=self._node))
        if settled.follow_up:
            self._on_follow_up()
        return settled.applied


def refused(error: BaseException) -> bool:
    """Whether `error` is about the outcomes themselves: the server refused the statement
    (any error with a SQLSTATE that is not a connection fault, which arrive here as
    `DatabaseUnavailable`; a value over one of its limits is an `OperationalError` too), or
    an outcome could not even be encoded. Retrying those would fail the same way for ever."""
    if isinstance(error, psycopg.Error):
        return error.sqlstate is not None
    return isinstance(error, TypeError | ValueError)


def _fallback(ack: Ack, why: str) -> Ack:
    """A failed attempt in place of an outcome the database refused, saying why; retried
    after the default backoff, or discarded on the job's last attempt."""
    if ack.state is JobState.COMPLETED:
        kind, message = "ResultNotStored", f"result could not be stored: {why}"
    else:
        kind, message = (
            "OutcomeNotStored",
            f"the outcome ({ack.state.value}) could not be stored: {why}",
        )
    entry = error_entry(ack.attempt, None, kind=kind, message=message)
    if ack.max_attempts is not None and ack.attempt >= ack.max_attempts:
        return Ack(ack.id, ack.attempt, JobState.DISCARDED, error=entry)
    delay = default_backoff(ack.attempt)
    return Ack(ack.id, ack.attempt, JobState.RETRYABLE, delay=delay, error=entry)
