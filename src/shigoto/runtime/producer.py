"""One producer per queue: claims as many jobs as it has free slots and starts them.

The producer claims when it is told there may be work (an insert notification, a staged
job, a poll tick) or when a slot frees up after a claim that filled every slot (there may
be more). It never runs more jobs at once than its limit.

With a `prefetch`, a claim also takes that many jobs beyond the free slots; they wait on
this node (already claimed: `executing` in the table) for a slot, and the next claim comes
when a slot has nothing left to run. Fewer, bigger claims for many short jobs; a job that
waits here is not available to other nodes, and goes back to the queue, its attempt
refunded, if this node stops or pauses before starting it.

While it expects to claim again soon, the outcomes of its finished jobs wait in its outbox
and ride with the next claim: one statement and one commit for both, which is what a busy
node spends most of its database time on. Whenever it will not claim, it hands them to the
acker instead, so an outcome never waits for work that may not come. Each run ends through
the finisher (`runtime.finish`), for which the producer is the outlet that writes.

While the acker has too many outcomes waiting (the database is slow or away), the producer
claims nothing until it has room again: outcomes cannot pile up without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shigoto.db import execution, faults
from shigoto.db.execution import Ack
from shigoto.db.operations import Operation
from shigoto.db.queries import Queries
from shigoto.events import EventBus, job_event
from shigoto.job import Job, JobState
from shigoto.logs import job_fields
from shigoto.runtime.acker import Acker, refused
from shigoto.runtime.context import JobRun
from shigoto.runtime.executor import Executor
from shigoto.runtime.finish import Finisher, Telling, Waiter, queue_wait
from shigoto.runtime.retrying import TRANSIENT, Backoff
from shigoto.runtime.slots import Slots

logger = logging.getLogger("shigoto.producer")
logger.addFilter(faults.SCRUBBED)  # a database error from the executor

# Results riding with one claim, at most: a claim stays a small statement; bigger results
# go to the acker, which bounds its batches by size.
OUTBOX_BYTES = 1 << 20


class Producer:
    """Claims and runs the jobs of one queue on this node, at most `limit` at a time."""

    def __init__(
        self,
        queue: str,
        limit: int,
        *,
        db: Callable[[Operation[Any]], Awaitable[Any]],
        queries: Queries,
        node_id: str,
        executor: Executor,
        acker: Acker,
        poll_interval: float,
        fresh_for: float,
        may_claim: Callable[[], bool] = lambda: True,
        fair: bool = False,
        on_follow_up: Callable[[], None] = lambda: None,
        finisher: Finisher | None = None,
        prefetch: int = 0,
        bus: EventBus | None = None,
    ) -> None:
        self.queue = queue
        self.limit = limit
        self.prefetch = prefetch
        self._slots = Slots(limit)
        self._db = db
        self._q = queries
        self._node = node_id
        self._executor = executor
        self._acker = acker
        self._poll_interval = poll_interval
        self._may_claim = may_claim
        self._fresh_for = fresh_for
        self._fair = fair
        self._last: Job | None = None  # a fair queue's next claim starts after its partition
        self._bus = bus or executor.bus
        self._finisher = finisher or Finisher(self._bus, node_id, on_discard=executor.on_discard)
        self._on_follow_up = on_follow_up  # jobs just finished may release others or end a batch
        # Claimed jobs, running or waiting for a slot (`_held`, with a prefetch). Keyed by
        # (job id, attempt): after a rescue this node may claim a job again while its old
        # run (no longer its own) is still being stopped.
        self.running: dict[tuple[int, int], tuple[asyncio.Task[None], JobRun]] = {}
        self._held: set[tuple[int, int]] = set()
        self._wake = asyncio.Event()
        self._more = True  # there may be claimable jobs: claim at the first free slot
        self._woken = False  # told of new jobs since the last claim began
        self._claiming = True
        # No claim on its way (cleared while one is): a stop waits for it, since what it
        # takes must go back to the queue rather than be lost with a cancelled statement.
        self._claim_settled = asyncio.Event()
        self._claim_settled.set()
        self._outbox: list[Ack] = []  # outcomes to write with the next claim
        self._outbox_bytes = 0  # their results' size
        # Who waits for an outcome riding with the next claim to be written: by id(ack).
        self._waiters: dict[int, Waiter] = {}
        # Outcomes whose events wait for their write, by job id (see `runtime.finish`).
        self.untold: dict[int, Telling] | None = {}
        # Runs that have performed and now only wait for their write and its events, by
        # job id: they are no longer `running` (they hold no slot), and a later run of
        # their job, claimed meanwhile, waits for them, so that a job's events keep their
        # order (attempt 1's job.failed before attempt 2's job.claimed).
        self._finishing: dict[int, asyncio.Task[None]] = {}

    @property
    def free(self) -> int:
        """How many jobs to claim: none while every slot has a job (running or held), else
        enough for the free slots and the prefetch."""
        busy = len(self.running)
        if busy >= self.limit:
            return 0
        return self.limit + self.prefetch - busy

    def wake(self) -> None:
        """There may be new jobs (an insert, a staged or rescued job, a reconnect)."""
        self._more = True
        self._woken = True
        self._wake.set()

    def scale(self, limit: int) -> None:
        self.limit = limit
        self._slots.resize(limit)
        self.wake()

    def _will_claim(self) -> bool:
        return self._claiming and self._more and self.free > 0 and self._may_claim()

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            if self._will_claim():
                if not self._acker.has_room:
                    # Too many outcomes wait to be written: claim no more until they are.
                    self._hand_over()
                    await self._acker.room()
                    continue
                try:
                    await self._claim()
                    backoff.reset()
                except TRANSIENT as error:
                    delay = backoff.next()
                    logger.warning(
                        "queue %s: claim failed, retrying in %.2fs: %s", self.queue, delay, error
                    )
                    await asyncio.sleep(delay)
                    continue
                if self._outbox and self._will_claim():
                    continue  # jobs finished while claiming: claim for their slots now
            self._hand_over()
            try:
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                self._more = True  # the poll: a fallback for missed notifications
            self._wake.clear()

    async def _claim(self) -> None:
        self._claim_settled.clear()
        try:
            await self._claim_once()
        finally:
            self._claim_settled.set()

    async def _claim_once(self) -> None:
        wanted = self.free
        acks, self._outbox, self._outbox_bytes = self._outbox, [], 0
        self._woken = False
        try:
            settled = await self._db(
                execution.settle_and_claim(
                    self._q,
                    acks,
                    node=self._node,
                    queue=self.queue,
                    limit=wanted,
                    fresh_for=self._fresh_for,
                    fair=self._fair,
                    after=self._last,
                )
            )
        except BaseException as error:
            # Written or not, the acker writes them again (an outcome applies only once).
            for ack in acks:
                self._to_acker(ack, self._waiters.pop(id(ack), None))
            if acks and refused(error):
                # Perhaps one of the outcomes: the acker finds it; claim alone next time.
                logger.warning(
                    "queue %s: claim with outcomes refused: %s", self.queue, faults.describe(error)
                )
                return
            raise
        if settled.follow_up:
            self._on_follow_up()
        if self._waiters:
            for ack in acks:
                waiter = self._waiters.pop(id(ack), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(ack if ack.id in settled.applied else None)
        if settled.claimed and self._fair:
            self._last = settled.claimed[-1]
        if self._bus.active:
            self._claimed(settled.claimed, wanted)
        # More may wait if the claim filled every slot, or if new jobs were announced
        # while it ran: they may have been committed after its snapshot (a claim that
        # took fewer than it wanted must not put that news to sleep until the next poll).
        self._more = len(settled.claimed) == wanted or self._woken
        if not (self._claiming and self._may_claim()):
            # Paused or stopping while the claim ran: what it took goes back unstarted,
            # its attempt refunded (a paused node starts nothing after `pause` returns).
            for job in settled.claimed:
                self._acker.add(_given_back(job))
            return
        for job in settled.claimed:
            self._start(job)

    def _claimed(self, jobs: list[Job], wanted: int) -> None:
        """The claim's queue.poll (each job's job.claimed comes from its run: `_execute`)."""
        bus = self._bus
        if bus.wants("queue.poll"):
            bus.emit(
                "queue.poll",
                queue=self.queue,
                node=self._node,
                data={"claimed": len(jobs), "wanted": wanted},
            )

    def _hand_over(self) -> None:
        """Outcomes must not wait for a claim that is not coming: give them to the acker."""
        acks, self._outbox, self._outbox_bytes = self._outbox, [], 0
        for ack in acks:
            self._to_acker(ack, self._waiters.pop(id(ack), None))

    # -- the outlet of the finisher ------------------------------------------------------------

    def post(self, ack: Ack, told: Waiter | None = None) -> None:
        """Write `ack` with the next claim if one is coming (`_finished` wakes the loop,
        which claims with it), else through the acker; `told` hears what was written."""
        if self._rides(ack):
            self._outbox.append(ack)
            self._outbox_bytes += ack.size
            if told is not None:
                self._waiters[id(ack)] = told
        else:
            self._to_acker(ack, told)

    def _to_acker(self, ack: Ack, told: Waiter | None = None) -> None:
        """Have the acker write `ack`. Its events wait for the acker's answer, which may
        come after a claim that took the job again: list them as untold till then."""
        if isinstance(told, Telling) and self.untold is not None:
            told.listed_in(self.untold)
        self._acker.add(ack, told)

    async def write(self, ack: Ack) -> Ack | None:
        """Write `ack` as `post` does, and wait for it (its run no longer counts against
        the queue's limit: a claim may come for its slot now)."""
        waiter: asyncio.Future[Ack | None] = asyncio.get_running_loop().create_future()
        if self._rides(ack):
            self._outbox.append(ack)
            self._outbox_bytes += ack.size
            self._waiters[id(ack)] = waiter
        else:
            self._acker.add(ack, waiter)
        self._wake.set()
        return await waiter

    def _rides(self, ack: Ack) -> bool:
        """Whether `ack` goes with the next claim: one is coming, and the outbox is small
        enough for it (big results take the acker's batches)."""
        return self._claiming and self._more and self._outbox_bytes + ack.size <= OUTBOX_BYTES

    def _start(self, job: Job) -> None:
        # A run of an earlier attempt still here lost its job to a rescue: stop it.
        self.cancel_job(job.id, "cancelled")
        run = JobRun(job, report=self._acker.report_progress, results=self._results)
        task = asyncio.create_task(self._execute(run), name=f"shigoto-job-{job.id}")
        key = (job.id, job.attempt)
        self.running[key] = (task, run)
        task.add_done_callback(lambda _: self._finished(key, task, run))

    async def _results(self, ids: list[int]) -> dict[int, Any]:
        found: dict[int, Any] = await self._db(execution.results_of(self._q, ids))
        return found

    def _finished(self, key: tuple[int, int], task: asyncio.Task[None], run: JobRun) -> None:
        self._leave(key, task)
        if task.cancelled() and not run.performed:
            # Cancelled before its first step (a stop or a pause right after the claim):
            # `_execute` never ran, so its job goes back from here, unstarted.
            ack = _unstarted(run.job, run.stop_reason)
            if ack is not None:
                self._acker.add(ack)
        if self._more:
            self._wake.set()

    def _leave(self, key: tuple[int, int], task: asyncio.Task[None] | None) -> None:
        """`task`'s run is no longer running (a later run of its job, after a snooze
        refunded the attempt, may have the same key: that one stays)."""
        entry = self.running.get(key)
        if entry is not None and entry[0] is task:
            del self.running[key]

    async def _execute(self, run: JobRun) -> None:
        job = run.job
        # Its previous run here may still be telling of its outcome: that comes first.
        earlier = self._finishing.get(job.id)
        if earlier is not None:
            await asyncio.wait([earlier])
        untold = self.untold.get(job.id) if self.untold else None
        if untold is not None:
            await untold.wait()
        bus = self._bus
        if bus.active and bus.wants("job.claimed"):
            bus.publish(job_event("job.claimed", job, node=self._node, queue_wait=queue_wait(job)))
        if await self._slot_for(run):
            try:
                ack = await self._executor.execute(run)
            except Exception:  # a bug of ours; the job is rescued or retried, never lost
                logger.exception(
                    "job %s: the executor failed", run.job.id, extra=job_fields(run.job)
                )
                return
            finally:
                self._slots.give_back()
        else:
            ack = _unstarted(run.job, run.stop_reason)
        run.performed = True
        if ack is None:  # stopped because the job is no longer ours (cancelled, rescued)
            return
        pending = self._finisher.finish(run, ack, self)
        if pending is not None:
            task = asyncio.current_task()
            assert task is not None
            self._leave((job.id, job.attempt), task)  # its slot is free for a claim
            self._finishing[job.id] = task
            try:
                await pending
            finally:
                if self._finishing.get(job.id) is task:
                    del self._finishing[job.id]

    async def _slot_for(self, run: JobRun) -> bool:
        """Wait for a slot (a prefetched job); False if the job was stopped meanwhile."""
        if self._slots.try_take():
            return True
        key = (run.job.id, run.job.attempt)
        self._held.add(key)
        try:
            await self._slots.take()
            return True
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]  # dealt with here
            return False
        finally:
            self._held.discard(key)

    def release_held(self, reason: str) -> None:
        """Give back the claimed jobs that wait for a slot (they return to the queue)."""
        for job_id, attempt in list(self._held):
            self.cancel_job(job_id, reason, attempt)

    def cancel_job(self, job_id: int, reason: str, attempt: int | None = None) -> bool:
        """Interrupt the runs of a job (of one attempt, if given); False if none runs here.

        A cancel (or the audit, which finds the job no longer executing) leaves alone a run
        whose job has already performed: its outcome is being written and its hooks called
        (`on_discard`, `on_job_stopped`), and the row is no longer executing precisely
        because that outcome was just written."""
        found = False
        for (running_id, running_attempt), (task, run) in list(self.running.items()):
            if run.performed and reason in ("cancelled", "job-paused"):
                continue
            if running_id == job_id and attempt in (None, running_attempt):
                run.stop_reason = run.stop_reason or reason
                task.cancel()
                found = True
        return found

    def interrupt_all(self, reason: str) -> list[asyncio.Task[None]]:
        """Interrupt every running job (their outcomes say why); returns their tasks."""
        tasks = []
        for (job_id, attempt), (task, _) in list(self.running.items()):
            self.cancel_job(job_id, reason, attempt)
            tasks.append(task)
        return tasks

    async def stop(
        self, timeout: float, hurry: asyncio.Event | None = None, deadline: float | None = None
    ) -> None:
        """Stop claiming; give running jobs `timeout` seconds (cut short when `hurry` is
        set), then interrupt the rest, which go back to the queue at once without using an
        attempt. A claim on its way is waited for until `deadline` (loop time; default
        `timeout` from now) and what it took goes back unstarted."""
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + timeout
        self._claiming = False
        self._hand_over()  # no claim is coming for the outcomes waiting for one
        self.release_held("shutdown")
        jobs = [task for task, _ in self.running.values()] + list(self._finishing.values())
        if jobs and timeout > 0:
            waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(asyncio.wait(jobs))]
            if hurry is not None:
                waiters.append(asyncio.ensure_future(hurry.wait()))
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        left = self.interrupt_all("shutdown")
        self._hand_over()
        if left:
            logger.info(
                "queue %s: returning %d unfinished job(s) to the queue", self.queue, len(left)
            )
        # Runs still telling of their outcomes finish once the acker has written them.
        left += self._finishing.values()
        if left:
            # A job that will not end when interrupted must not hold the stop up for ever.
            await asyncio.wait(left, timeout=max(deadline - loop.time(), 0.1))
        try:
            async with asyncio.timeout_at(deadline):
                await self._claim_settled.wait()
        except TimeoutError:
            logger.error(
                "queue %s: a claim was still waiting for the database at the stop's deadline; "
                "whatever it took stays claimed by this node until it is rescued",
                self.queue,
            )
        self._hand_over()


def _unstarted(job: Job, reason: str | None) -> Ack | None:
    """The outcome of a claimed job given back before it ran (a held one stopped, or a
    claim that returned after a pause): back where it was, its attempt unused."""
    if reason == "cancelled":
        return None  # the row says cancelled already
    return _given_back(job, JobState.PAUSED if reason == "job-paused" else JobState.AVAILABLE)


def _given_back(job: Job, state: JobState = JobState.AVAILABLE) -> Ack:
    """A claimed job returned before it ran, its attempt unused."""
    return Ack(job.id, job.attempt, state, refund=True)
