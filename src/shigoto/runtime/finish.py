"""The one way a run of a job ends: its outcome is written, and once the write is known to
have applied, the worker's `on_discard` runs (for a discard) and the outcome's events are
published (job.completed, job.failed, job.snoozed, job.discarded, job.cancelled), which is
how hooks (`on_job_stopped`, `on_job_complete`, ...) and telemetry hear of it.

    finisher = Finisher(bus, node_id, on_discard=executor.on_discard)
    pending = finisher.finish(run, ack, outlet)
    if pending is not None:
        await pending

A node's producers, `drain_queue` and inline mode all end their runs here; what differs is
the outlet that writes: a producer's (outcomes ride with its next claim, or go to the
acker), the acker alone (`drain_queue`), or nothing at all (inline mode has no database).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, Protocol

from shigoto.db.execution import Ack
from shigoto.events import EventBus, about_job, job_event
from shigoto.job import Job, JobState
from shigoto.runtime.context import JobRun

# The events a run's outcome may publish.
OUTCOME_EVENTS = ("job.completed", "job.failed", "job.snoozed", "job.discarded", "job.cancelled")


class Waiter(Protocol):
    """Told what was written for an outcome: an `asyncio.Future`, or a `Telling`."""

    def done(self) -> bool: ...

    def set_result(self, result: Ack | None, /) -> None: ...


class Outlet(Protocol):
    """Where outcomes are written."""

    # Outcomes whose events wait for their write, by job id, where the outlet can tell a
    # `Telling` when an outcome is written (a producer); None where it cannot.
    untold: dict[int, Telling] | None

    def post(self, ack: Ack, told: Waiter | None = None) -> None:
        """Write `ack` soon; `told`, if given, is told what was written once it was."""

    async def write(self, ack: Ack) -> Ack | None:
        """Write `ack` and wait: the outcome that applied (`ack`, or the failure that
        replaced an outcome the database refused), None if the job was no longer this
        run's (cancelled or rescued meanwhile)."""


class Finisher:
    """Ends runs: writes each outcome, then tells what must know that it was written."""

    def __init__(
        self,
        bus: EventBus,
        node: str | None = None,
        *,
        on_discard: Callable[[Job], Awaitable[None]],
    ) -> None:
        self._bus = bus
        self._node = node
        self._on_discard = on_discard

    def _heard(self) -> bool:
        """Whether anything subscribes to an outcome's events."""
        return self._bus.wants_any(OUTCOME_EVENTS)

    def finish(self, run: JobRun, ack: Ack, outlet: Outlet) -> Coroutine[Any, Any, None] | None:
        """End `run` with `ack`; returns what is left to await, if anything. A run nobody
        needs to hear about (no subscriber, not a discard, which most runs are) is handed
        to the outlet and done. One whose events are wanted is handed over with a
        `Telling`, which publishes them once the write applied, from the outlet, with
        nothing to await (on a node); where the outlet cannot tell (drain_queue, inline),
        and for a discard (its worker's `on_discard` is awaited), the run waits for the
        write, then tells."""
        if ack.state is not JobState.DISCARDED:
            if not self._heard():
                outlet.post(ack)
                return None
            if outlet.untold is not None:
                outlet.post(ack, Telling(self, run))
                return None
        return self._written(run, ack, outlet)

    async def _written(self, run: JobRun, ack: Ack, outlet: Outlet) -> None:
        written = await outlet.write(ack)
        if written is None:
            return
        if written.state is JobState.DISCARDED:
            job = stopped_job(run.job, written)
            await self._on_discard(job)
            self._publish(job, written, run, job)
        else:  # the job as its row now reads is made only if a handler asks for it
            self._publish(run.job, written, run)

    async def rescued(self, job: Job) -> None:
        """`job`'s run here was lost with its node, and a rescue wrote that (`job` is the
        row as the rescue left it): `on_discard` if it was discarded, then its events."""
        if job.state is JobState.DISCARDED:
            await self._on_discard(job)
        self._publish(job, None, None, job)

    def _publish(
        self, job: Job, ack: Ack | None, run: JobRun | None, final: Job | None = None
    ) -> None:
        """The events of `job`'s run ending with `ack` (written), or of a rescue (no ack:
        `job` is the row already); `final` is the job as the row reads now, if made."""
        bus = self._bus
        if not bus.active:
            return
        node = self._node
        state = job.state if ack is None else ack.state
        if state is JobState.COMPLETED and not (ack is not None and ack.refund):
            # Most runs: the event is built here, directly.
            if bus.wants("job.completed"):
                job_of = (
                    None if final is not None or ack is None else partial(stopped_job, job, ack)
                )
                bus.publish(
                    about_job("job.completed", job, node, _measured(job, run), None, final, job_of)
                )
            return
        made: dict[str, Any] = {}
        if final is not None:
            made["final"] = final
        elif ack is not None:
            made["job_of"] = partial(stopped_job, job, ack)
        if ack is not None:
            entry = ack.error
            if ack.refund:
                if ack.delay is not None and bus.wants("job.snoozed"):  # a snooze, not a stop
                    bus.publish(job_event("job.snoozed", job, node=node, seconds=ack.delay, **made))
                return
        else:
            entry = job.errors[-1] if job.errors else None
        if state is JobState.CANCELLED:
            if bus.wants("job.cancelled"):
                bus.publish(job_event("job.cancelled", job, node=node, by="worker", **made))
            return
        kind = None if entry is None else entry.get("error")
        error = None if run is None else run.error
        if kind is not None and kind != "Discard" and bus.wants("job.failed"):
            bus.publish(
                job_event(
                    "job.failed",
                    job,
                    node=node,
                    error=error,
                    kind=kind,
                    will_retry=not state.is_final,
                    **made,
                    **_measured(job, run),
                )
            )
        if state is JobState.DISCARDED and bus.wants("job.discarded"):
            bus.publish(job_event("job.discarded", job, node=node, error=error, kind=kind, **made))


class Telling:
    """The events of a run's outcome, published when its outlet is told the outcome was
    written (`set_result`, as a future's). While it waits on an acker's batch, its outlet
    lists it in `untold` under its job's id, so that a later run of the job can wait for it
    (`wait`): a job's events keep their order. (An outcome riding with a claim is told
    before that claim starts anything.)"""

    __slots__ = ("_done", "_finisher", "_run", "_untold", "_waiting")

    def __init__(self, finisher: Finisher, run: JobRun) -> None:
        self._finisher = finisher
        self._run = run
        self._done = False
        self._waiting: list[asyncio.Future[None]] | None = None
        self._untold: dict[int, Telling] | None = None

    def listed_in(self, untold: dict[int, Telling]) -> None:
        self._untold = untold
        untold[self._run.job.id] = self

    def done(self) -> bool:
        return self._done

    def set_result(self, written: Ack | None, /) -> None:
        """`written` is what applied (None: the job was no longer this run's)."""
        self._done = True
        job = self._run.job
        untold = self._untold
        if untold is not None and untold.get(job.id) is self:
            del untold[job.id]
        if written is not None:
            self._finisher._publish(job, written, self._run)
        if self._waiting is not None:
            for waiter in self._waiting:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait(self) -> None:
        """Return once the events are published (or the outcome is known not written)."""
        if not self._done:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting = [*(self._waiting or ()), waiter]
            await waiter


def _measured(job: Job, run: JobRun | None) -> dict[str, Any]:
    """A run's measurements: `queue_wait`, and `duration` once it ran."""
    if run is None or run.duration is None:
        return {"queue_wait": queue_wait(job)}
    return {"queue_wait": queue_wait(job), "duration": run.duration}


def queue_wait(job: Job) -> float | None:
    """Seconds from when the job was due to when this attempt was claimed."""
    if job.attempted_at is None:
        return None
    return max(0.0, (job.attempted_at - job.scheduled_at).total_seconds())


def stopped_job(job: Job, ack: Ack) -> Job:
    """`job` as its row reads once `ack` is written (but for the times the server sets)."""
    errors = job.errors if ack.error is None else [*job.errors, ack.error]
    if ack.state is JobState.COMPLETED:
        return dataclasses.replace(
            job, state=ack.state, result=ack.result, progress=100, errors=errors
        )
    return dataclasses.replace(job, state=ack.state, errors=errors)
