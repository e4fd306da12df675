"""Runs one job: finds its worker, calls `perform` under the timeout, turns what happened
into an `Ack` (the outcome the acker writes).

    executor = Executor(app.workers, threads=10, node_id="host-1-ab12")
    ack = await executor.execute(JobRun(job))

Outcomes: a value completes the job (stored as its
result); an exception fails the attempt (retried with backoff, discarded when no attempts
remain); `Snooze` reschedules without using an attempt; `Cancel` and `Discard` end it;
`RetryAfter` retries after exactly that delay. Outcomes may be returned or raised.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from shigoto import _json, _validate
from shigoto.config import DEFAULT_MAX_RESULT_BYTES
from shigoto.db import faults
from shigoto.db.execution import Ack
from shigoto.events import EventBus, job_event
from shigoto.job import Job, JobState
from shigoto.logs import job_fields
from shigoto.outcomes import (
    Cancel,
    Discard,
    InvalidJobError,
    Outcome,
    ResultNotStored,
    RetryAfter,
    Snooze,
    UnknownWorkerError,
)
from shigoto.pipeline import Chain, compose, start_outer
from shigoto.runtime import context
from shigoto.runtime.context import JobRun
from shigoto.worker import FunctionWorker, Worker, WorkerRegistry, default_backoff

logger = logging.getLogger("shigoto.executor")
logger.addFilter(faults.SCRUBBED)  # the workers' own hooks may fail with a database error

MAX_TRACEBACK = 16_000  # characters kept per error entry (the end, where the cause is)
MAX_MESSAGE = 4_000
# The alarm may ring a little before a deadline (the loop's clock resolution): a run due
# within this many seconds counts as due.
_ALARM_SLACK = 0.001


def _storable(text: str, limit: int) -> str:
    """Text jsonb accepts: no NUL, no lone surrogates, bounded."""
    text = text.replace("\x00", "\\x00")
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else "…" + text[-limit:]


def error_entry(
    attempt: int, error: BaseException | None, *, kind: str | None = None, message: str = ""
) -> dict[str, Any]:
    """One element of a job's `errors`: {attempt, at, error, message, traceback}."""
    trace = None
    if error is not None and error.__traceback__ is not None:
        # A database error is cut to its primary message: what the server adds to it may
        # quote the statement's parameters (job args, results).
        trace = faults.scrub("".join(traceback.format_exception(error)), error)
        trace = _storable(trace, MAX_TRACEBACK)
    if kind is None and error is not None:
        cls = type(error)
        kind = (
            cls.__qualname__
            if cls.__module__ == "builtins"
            else f"{cls.__module__}.{cls.__qualname__}"
        )
    return {
        "attempt": attempt,
        "at": datetime.now(UTC).isoformat(),
        "error": kind or "Error",
        "message": _storable(message or _message(error), MAX_MESSAGE),
        "traceback": trace,
    }


def _message(error: BaseException | None) -> str:
    return "" if error is None else faults.scrub(str(error), error)


def runs_in_thread(worker: type[Worker]) -> bool:
    """Plain (non-async) `perform` functions run in the thread pool, off the event loop."""
    if issubclass(worker, FunctionWorker):
        return not inspect.iscoroutinefunction(worker.func)
    return not inspect.iscoroutinefunction(worker.perform)


class Executor:
    """Runs jobs; shares one bounded thread pool among the sync workers of a node."""

    def __init__(
        self,
        workers: WorkerRegistry,
        *,
        threads: int,
        node_id: str,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        bus: EventBus | None = None,
    ) -> None:
        self.workers = workers
        self.node_id = node_id
        self.bus = bus or EventBus()
        self.max_result_bytes = max_result_bytes
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        # The runs under way, by id(run): their deadline (loop time) and task. One alarm,
        # set for the earliest deadline, stops those that overrun: a timer per job (what
        # `asyncio.timeout` costs) was a tenth of a busy node's time.
        # A run in a thread has no task to cancel (None), and no deadline (inf) until a
        # thread starts it.
        self._deadlines: dict[int, tuple[float, asyncio.Task[Any] | None, JobRun]] = {}
        self._waits_for_threads = True  # see abandon_threads
        self._alarm: asyncio.TimerHandle | None = None
        self._in_thread: dict[type[Worker], bool] = {}  # runs_in_thread, asked once per class
        # Each worker's middleware chain, composed at its first job (None: no middleware),
        # and the registry's middleware version it was composed for.
        self._chains: dict[type[Worker], tuple[int, Chain | None]] = {}

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="shigoto-sync")
        return self._pool

    def close(self) -> None:
        """Release the thread pool; threads still running a timed-out sync job finish alone."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def execute(self, run: JobRun) -> Ack | None:
        """Run the job; None when it was cancelled by a signal (its row says so already)."""
        job = run.job
        try:
            worker_cls = self.workers.get(job.worker)
        except UnknownWorkerError:
            known = ", ".join(sorted(self.workers)) or "none"
            message = (
                f"no worker named {job.worker!r} is registered on node {self.node_id} "
                f"(known: {known}); the job is retried, so a node that knows it can run it"
            )
            return self._failure(
                job, None, default_backoff(job.attempt), "UnknownWorkerError", message
            )
        worker = worker_cls()
        token = context.enter(run)
        task = asyncio.current_task()
        assert task is not None
        chain = self._chain(worker_cls)
        if chain is None:
            in_thread = self._in_thread.get(worker_cls)
            if in_thread is None:
                in_thread = self._in_thread[worker_cls] = runs_in_thread(worker_cls)
        else:  # with middleware on the event loop, the run is the loop's, cancellable
            in_thread = chain.in_thread and chain.plain
        if in_thread:
            # Not due yet: the deadline starts when a thread starts the function.
            self._deadlines[id(run)] = (math.inf, None, run)
        else:
            self._watch(run, task, worker_cls.timeout)
        bus = self.bus
        if bus.active and bus.wants("job.started"):
            bus.publish(job_event("job.started", job, node=self.node_id))
        started = time.monotonic()
        try:
            outcome = self._start(worker, run, task, chain, in_thread)
            if inspect.isawaitable(outcome):
                outcome = await outcome
                # A middleware may answer with an awaitable (a sync one's call_next()).
                while chain is not None and inspect.isawaitable(outcome):
                    outcome = await outcome
        except asyncio.CancelledError:
            return self._interrupted(run, worker, task)
        except Outcome as raised:  # returned or raised, an outcome is an outcome
            outcome = raised
        except Exception as error:
            outcome = error
        finally:
            run.duration = time.monotonic() - started
            # (The alarm stays set: jobs that finish at once, which is most of them on a
            # busy node, would otherwise cost a timer each again.)
            self._deadlines.pop(id(run), None)
            context.leave(token)
        if run.stop_reason is not None:
            # Interrupted, whatever the worker turned the cancellation into (an error raised
            # from its cleanup, say): an interruption is not the job's failure.
            return self._interrupted(run, worker, task)
        return self._ack(worker, run, outcome)

    def _chain(self, worker_cls: type[Worker]) -> Chain | None:
        """The worker's middleware chain (the app's, then its own), composed once."""
        version = self.workers.middleware_version
        cached = self._chains.get(worker_cls)
        if cached is not None and cached[0] == version:
            return cached[1]
        middleware = [*self.workers.middleware, *worker_cls.middleware]
        chain = compose(runs_in_thread(worker_cls), middleware) if middleware else None
        self._chains[worker_cls] = (version, chain)
        return chain

    def abandon_threads(self) -> None:
        """From now on, a plain-function run that is interrupted ends at once, its thread
        left to finish alone (a stopping node: its process is about to exit)."""
        self._waits_for_threads = False

    def _watch(self, run: JobRun, task: asyncio.Task[Any] | None, timeout: float) -> None:
        """Stop `run` `timeout` seconds from now: cancel its task, or for a run in a thread
        (`task` None), which cannot be interrupted, mark it timed out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._deadlines[id(run)] = (deadline, task, run)
        if self._alarm is None or deadline < self._alarm.when():
            if self._alarm is not None:
                self._alarm.cancel()
            self._alarm = loop.call_at(deadline, self._stop_overdue)

    def _thread_started(self, run: JobRun, timeout: float) -> None:
        entry = self._deadlines.get(id(run))
        if entry is not None and entry[2] is run:  # (still running: not given up meanwhile)
            self._watch(run, None, timeout)

    def _stop_overdue(self) -> None:
        """The alarm: stop the runs past their deadline; set it again for the next one."""
        loop = asyncio.get_running_loop()
        self._alarm = None
        now = loop.time() + _ALARM_SLACK
        upcoming = [d for d, _, _ in self._deadlines.values() if now < d < math.inf]
        for deadline, task, run in list(self._deadlines.values()):
            if deadline <= now and run.stop_reason is None:
                run.stop_reason = "timeout"
                if task is not None:
                    task.cancel()
                else:
                    logger.warning(
                        "job %s (%s) passed its timeout in a thread, which cannot be "
                        "interrupted: it fails once the function returns, and holds its "
                        "slot until then",
                        run.job.id,
                        run.job.worker,
                        extra=job_fields(run.job),
                    )
        if upcoming:
            self._alarm = loop.call_at(min(upcoming), self._stop_overdue)

    def _start(
        self,
        worker: Worker,
        run: JobRun,
        task: asyncio.Task[Any],
        chain: Chain | None,
        in_thread: bool,
    ) -> object:
        """The run's first step: what `perform`, through the worker's middleware, answered:
        a value, or an awaitable of it (a coroutine, a thread's future). The run awaits it
        in its own coroutine, whatever the path (no coroutine of ours in between)."""
        if chain is None:
            if in_thread:
                return self._call_in_thread(worker.perform, worker, run, task)
            return worker.perform(run.job)
        if chain.entry is not None:  # an async perform: the chain is one function
            return chain.entry(worker, run.job)

        # A plain function (and the sync middleware right around it) in a thread, inside
        # middleware on the event loop.
        def innermost() -> Any:
            return self._call_in_thread(
                lambda job: chain.inner(worker, job), worker, run, task, watch=chain.plain
            )

        return innermost() if chain.plain else start_outer(chain, run.job, innermost)

    async def _call_in_thread(
        self,
        function: Any,
        worker: Worker,
        run: JobRun,
        task: asyncio.Task[Any],
        *,
        watch: bool = True,
    ) -> object:
        """`function(job)` in the thread pool; what it raises is raised. A thread cannot be
        interrupted, so neither is the run once its thread has started: a cancel, a pause
        or a fence marks it (`run.stop_reason`) and it ends when the function returns,
        holding its slot and its job until then; one that had not started yet is dropped
        from the pool's queue. With `watch`, the job's timeout starts when the thread
        starts it (else it runs already, from the start of the run)."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        timeout = type(worker).timeout

        def in_thread() -> object:
            if watch:
                loop.call_soon_threadsafe(self._thread_started, run, timeout)
            return function(run.job)

        call = self.pool.submit(ctx.run, in_thread)
        while True:
            try:
                return await asyncio.wrap_future(call)
            except asyncio.CancelledError:
                if call.cancel() or not self._waits_for_threads:
                    raise  # never started (or given up on): the run ends now
                task.uncancel()  # it goes on until the function returns

    def _interrupted(self, run: JobRun, worker: Worker, task: asyncio.Task[Any]) -> Ack | None:
        job = run.job
        if run.stop_reason == "timeout":
            task.uncancel()  # our own cancellation, dealt with: the task goes on normally
            timeout = type(worker).timeout
            failure = TimeoutError(f"timed out after {timeout:g}s")
            run.error = failure
            return self._failure(
                job, None, self._backoff(worker, job, failure), "TimeoutError", str(failure)
            )
        if run.stop_reason == "cancelled":
            return None  # the row says cancelled already
        if run.stop_reason == "job-paused":  # pause_job on a running job
            return Ack(job.id, job.attempt, JobState.PAUSED, refund=True)
        if run.stop_reason == "fenced":
            # This node lost the database (or was declared dead): a failure, like a crash.
            # The run counts and says why, so a second run is explained.
            message = (
                f"node {self.node_id} lost touch with the database while running this job "
                "and stopped it, so that it can run elsewhere"
            )
            entry = error_entry(job.attempt, None, kind="NodeFenced", message=message)
            state = JobState.DISCARDED if job.attempt >= job.max_attempts else JobState.AVAILABLE
            return Ack(job.id, job.attempt, state, error=entry)
        # A graceful stop: back to the queue at once, the attempt refunded.
        return Ack(job.id, job.attempt, JobState.AVAILABLE, refund=True)

    def _ack(self, worker: Worker, run: JobRun, outcome: object) -> Ack:
        job = run.job
        if outcome is None:  # most jobs: nothing to check
            return Ack(job.id, job.attempt, JobState.COMPLETED, max_attempts=job.max_attempts)
        if isinstance(outcome, Snooze):
            state = JobState.SCHEDULED if outcome.seconds > 0 else JobState.AVAILABLE
            return Ack(job.id, job.attempt, state, refund=True, delay=outcome.seconds)
        if isinstance(outcome, Cancel):
            return self._ended(job, JobState.CANCELLED, "Cancel", outcome.reason)
        if isinstance(outcome, Discard):
            return self._ended(job, JobState.DISCARDED, "Discard", outcome.reason)
        if isinstance(outcome, RetryAfter):
            message = outcome.reason or f"retry after {outcome.seconds:g}s"
            return self._failure(job, None, outcome.seconds, "RetryAfter", message)
        if isinstance(outcome, BaseException):
            run.error = outcome
            return self._failure(job, outcome, self._backoff(worker, job, outcome))
        try:
            result, size = self._storable_result(outcome)
        except ResultNotStored as error:
            run.error = error
            return self._failure(job, error, self._backoff(worker, job, error))
        return Ack(
            job.id,
            job.attempt,
            JobState.COMPLETED,
            result=result,
            size=size,
            max_attempts=job.max_attempts,
        )

    def _storable_result(self, value: object) -> tuple[Any, int]:
        """`value` as the result to store, and its size as JSON in bytes; `ResultNotStored`
        if it is not JSON, does not read back as itself, or is over `max_result_bytes`."""
        limit = self.max_result_bytes
        if type(value) is str and len(value) > limit:  # refused without encoding it
            raise ResultNotStored(
                f"a string of {len(value):,} characters, more than max_result_bytes ({limit:,})"
            )
        try:
            result = _validate.json_value(value, "result")
            # What the acker will send: an integer too long for JSON, a mapping that is not
            # a dict, any object the checks let by fails here, on this job, not in a batch.
            text = _json.dumps(result)
        except InvalidJobError as error:
            raise ResultNotStored(str(error)) from error
        except (TypeError, ValueError, RecursionError) as error:
            raise ResultNotStored(f"it cannot be written as JSON ({error})") from error
        size = len(text) if text.isascii() else len(text.encode())
        if size > limit:
            raise ResultNotStored(
                f"it is {size:,} bytes as JSON, more than max_result_bytes ({limit:,})"
            )
        return result, size

    @staticmethod
    def _ended(job: Job, state: JobState, kind: str, reason: str) -> Ack:
        """The worker ended the job itself (`Cancel`, `Discard`); the reason is recorded."""
        message = reason or f"{state.value} by the worker"
        entry = error_entry(job.attempt, None, kind=kind, message=message)
        return Ack(job.id, job.attempt, state, error=entry, max_attempts=job.max_attempts)

    def _failure(
        self,
        job: Job,
        error: BaseException | None,
        delay: float,
        kind: str | None = None,
        message: str = "",
    ) -> Ack:
        entry = error_entry(job.attempt, error, kind=kind, message=message)
        if job.attempt >= job.max_attempts:
            return Ack(
                job.id, job.attempt, JobState.DISCARDED, error=entry, max_attempts=job.max_attempts
            )
        state = JobState.RETRYABLE if delay > 0 else JobState.AVAILABLE
        return Ack(
            job.id, job.attempt, state, delay=delay, error=entry, max_attempts=job.max_attempts
        )

    def _backoff(self, worker: Worker, job: Job, error: BaseException) -> float:
        """The worker's backoff for this attempt, or the default if it misbehaves."""
        try:
            delay = worker.backoff(job.attempt, error)
        except Exception:
            logger.exception(
                "backoff of %s failed; using the default", job.worker, extra=job_fields(job)
            )
            return default_backoff(job.attempt)
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not math.isfinite(delay)
            or delay < 0
        ):
            logger.error(
                "backoff of %s returned %r, not seconds; using the default",
                job.worker,
                delay,
                extra=job_fields(job),
            )
            return default_backoff(job.attempt)
        return float(delay)

    async def on_discard(self, job: Job) -> None:
        """The worker's `on_discard` hook; its failures are logged, never raised."""
        if job.worker not in self.workers:
            return
        worker = self.workers.get(job.worker)()
        try:
            await worker.on_discard(job)
        except Exception:
            logger.exception(
                "on_discard of %s failed for job %s", job.worker, job.id, extra=job_fields(job)
            )
