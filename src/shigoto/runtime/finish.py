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

import dataclasses
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from shigoto.db.execution import Ack
from shigoto.events import EventBus, job_event
from shigoto.job import Job, JobState
from shigoto.runtime.context import JobRun

# The events a run's outcome may publish.
OUTCOME_EVENTS = ("job.completed", "job.failed", "job.snoozed", "job.discarded", "job.cancelled")


class Outlet(Protocol):
    """Where outcomes are written."""

    def post(self, ack: Ack) -> None:
        """Write `ack` soon; nobody waits for it."""

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
        to the outlet and done: no copy of the job, nothing to await."""
        if ack.state is not JobState.DISCARDED and not self._heard():
            outlet.post(ack)
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
        made: dict[str, Any] = {}
        if final is not None:
            made["final"] = final
        elif ack is not None:
            made["job_of"] = functools.partial(stopped_job, job, ack)
        if ack is not None:
            state = ack.state
            entry = ack.error
            if ack.refund:
                if ack.delay is not None and bus.wants("job.snoozed"):  # a snooze, not a stop
                    bus.publish(job_event("job.snoozed", job, node=node, seconds=ack.delay, **made))
                return
        else:
            state = job.state
            entry = job.errors[-1] if job.errors else None
        if state is JobState.COMPLETED:
            if bus.wants("job.completed"):
                bus.publish(
                    job_event("job.completed", job, node=node, **made, **_measured(job, run))
                )
            return
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
