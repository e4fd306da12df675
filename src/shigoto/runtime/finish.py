"""The one way a run of a job ends: its outcome is written, and once the write is known to
have applied, the worker's `on_discard` runs (for a discard) and the app's `on_job_stopped`
hooks are called (for every final state and every failed run, with `will_retry`).

    finisher = Finisher(on_discard=executor.on_discard, on_stopped=call_hooks)
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
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from shigoto.db.execution import Ack
from shigoto.job import Job, JobState
from shigoto.runtime.context import JobRun

# A job stopped: `hook(job, will_retry)`, sync or async.
StoppedHook = Callable[[Job, bool], object]


class Outlet(Protocol):
    """Where outcomes are written."""

    def post(self, ack: Ack) -> None:
        """Write `ack` soon; nobody waits for it."""

    async def write(self, ack: Ack) -> Ack | None:
        """Write `ack` and wait: the outcome that applied (`ack`, or the failure that
        replaced an outcome the database refused), None if the job was no longer this
        run's (cancelled or rescued meanwhile)."""


class Finisher:
    """Ends runs: writes each outcome, then calls what must know that it was written."""

    def __init__(
        self,
        *,
        on_discard: Callable[[Job], Awaitable[None]],
        on_stopped: Callable[[Job, bool], Awaitable[None]] | None = None,
    ) -> None:
        self._on_discard = on_discard
        self._on_stopped = on_stopped  # None without hooks: nothing to wait for

    def finish(self, run: JobRun, ack: Ack, outlet: Outlet) -> Coroutine[Any, Any, None] | None:
        """End `run` with `ack`; returns what is left to await, if anything. A run nobody
        needs to hear about (no hooks, not a discard, which most runs are) is handed to the
        outlet and done: no copy of the job, nothing to await."""
        if self._on_stopped is None and ack.state is not JobState.DISCARDED:
            outlet.post(ack)
            return None
        return self._written(run.job, ack, outlet)

    async def _written(self, job: Job, ack: Ack, outlet: Outlet) -> None:
        written = await outlet.write(ack)
        if written is not None:
            await self.stopped(stopped_job(job, written), ended_or_failed(written))

    async def stopped(self, job: Job, hooks: bool = True) -> None:
        """`job`'s outcome is written (by this node, or by a rescue): `on_discard` if it
        was discarded, then the hooks if `hooks` (a run that ended the job or failed)."""
        if job.state is JobState.DISCARDED:
            await self._on_discard(job)
        if hooks and self._on_stopped is not None:
            await self._on_stopped(job, not job.state.is_final)


def ended_or_failed(ack: Ack) -> bool:
    """Whether the run this outcome is of ended its job or failed (the hooks hear of
    those), rather than gave it back (a snooze, a stop, a pause)."""
    return ack.state.is_final or (ack.error is not None and not ack.refund)


def stopped_job(job: Job, ack: Ack) -> Job:
    """`job` as its row reads once `ack` is written (but for the times the server sets)."""
    errors = job.errors if ack.error is None else [*job.errors, ack.error]
    if ack.state is JobState.COMPLETED:
        return dataclasses.replace(
            job, state=ack.state, result=ack.result, progress=100, errors=errors
        )
    return dataclasses.replace(job, state=ack.state, errors=errors)


def with_will_retry(hook: Callable[..., object]) -> StoppedHook:
    """`hook` as a two-argument hook: one that takes a single argument is called with the
    job alone (so `def hook(job)` keeps working), one that takes two with `will_retry` too."""
    try:
        inspect.signature(hook).bind(None, None)
        return hook
    except (TypeError, ValueError):  # ValueError: no signature to read (some builtins)
        pass

    @functools.wraps(hook)  # logged under its own name if it fails
    def job_only(job: Job, will_retry: bool) -> object:
        return hook(job)

    return job_only


async def call_hook(hook: StoppedHook, job: Job, will_retry: bool) -> None:
    """Call a sync or async hook (errors are the caller's to handle)."""
    outcome = hook(job, will_retry)
    if inspect.isawaitable(outcome):
        await outcome
