"""Middleware, and the one path every job takes: each outcome ends the same way on a node,
in `drain_queue` and in inline mode, with the same events and hooks, middleware included."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from shigoto import (
    Cancel,
    ConfigurationError,
    Discard,
    Event,
    Job,
    JobState,
    RetryAfter,
    Shigoto,
    Snooze,
    Worker,
)
from shigoto.runtime.finish import OUTCOME_EVENTS
from shigoto.testing import InlineJobFailed, inline

# -- one path: each outcome, the same three ways ------------------------------------------------

# worker -> (state after its one run, its outcome events, on_job_stopped's will_retry calls)
PARITY: dict[str, tuple[JobState, list[str], list[bool]]] = {
    "completes": (JobState.COMPLETED, ["job.completed"], [False]),
    "fails": (JobState.RETRYABLE, ["job.failed"], [True]),
    "fails_last": (JobState.DISCARDED, ["job.failed", "job.discarded"], [False]),
    "discards": (JobState.DISCARDED, ["job.discarded"], [False]),
    "cancels": (JobState.CANCELLED, ["job.cancelled"], [False]),
    "snoozes": (JobState.SCHEDULED, ["job.snoozed"], []),
    "retries_after": (JobState.RETRYABLE, ["job.failed"], [True]),
    "times_out": (JobState.RETRYABLE, ["job.failed"], [True]),
    "middleware_answers": (JobState.COMPLETED, ["job.completed"], [False]),
    "middleware_snoozes": (JobState.SCHEDULED, ["job.snoozed"], []),
    "sync_completes": (JobState.COMPLETED, ["job.completed"], [False]),
    "sync_fails": (JobState.RETRYABLE, ["job.failed"], [True]),
}
RESULTS = {"completes": 1, "middleware_answers": "from middleware", "sync_completes": 2}


class Trace:
    """What the middleware, the events and the hooks saw, per job id."""

    def __init__(self, app: Shigoto) -> None:
        self.middleware: list[tuple[str, str, Any]] = []  # (layer, worker, args)
        self.events: list[Event] = []
        self.stopped: list[tuple[int, bool]] = []
        self.ended = asyncio.Event()
        app.bus.subscribe("*", self._event)

        @app.on_job_stopped
        def stopped(job: Job, will_retry: bool) -> None:
            self.stopped.append((job.id, will_retry))

    def _event(self, event: Event) -> None:
        self.events.append(event)
        if event.name in OUTCOME_EVENTS:
            self.ended.set()

    def outcome(self, job_id: int) -> list[str]:
        return [e.name for e in self.events if e.job_id == job_id and e.name in OUTCOME_EVENTS]


def _parity_app(app: Shigoto) -> Trace:
    trace = Trace(app)
    answers = {"middleware_answers": "from middleware"}

    @app.middleware
    async def outer(job: Job, call_next: Callable[[], Any]) -> object:
        trace.middleware.append(("outer", job.worker, job.args))
        if job.worker in answers:
            return answers[job.worker]
        if job.worker == "middleware_snoozes":
            raise Snooze(60)
        return await call_next()

    def inner(job: Job, call_next: Callable[[], Any]) -> object:
        trace.middleware.append(("inner", job.worker, job.args))
        return call_next()

    options: dict[str, Any] = {"middleware": [inner], "backoff": lambda attempt, error: 60}

    @app.worker(name="completes", **options)
    async def completes(n: int) -> int:
        return n

    @app.worker(name="fails", max_attempts=2, **options)
    async def fails(n: int) -> None:
        raise RuntimeError("no")

    @app.worker(name="fails_last", max_attempts=1, **options)
    async def fails_last(n: int) -> None:
        raise RuntimeError("no")

    @app.worker(name="discards", **options)
    async def discards(n: int) -> None:
        raise Discard("hopeless")

    @app.worker(name="cancels", **options)
    async def cancels(n: int) -> object:
        return Cancel("unwanted")

    @app.worker(name="snoozes", **options)
    async def snoozes(n: int) -> object:
        return Snooze(60)

    @app.worker(name="retries_after", **options)
    async def retries_after(n: int) -> object:
        raise RetryAfter(60)

    @app.worker(name="times_out", timeout=0.05, **options)
    async def times_out(n: int) -> None:
        await asyncio.sleep(10)

    for name in ("middleware_answers", "middleware_snoozes"):
        app.worker(name=name, **options)(lambda n: None)

    @app.worker(name="sync_completes", **options)
    def sync_completes(n: int) -> int:
        return n * 2

    @app.worker(name="sync_fails", max_attempts=2, **options)
    def sync_fails(n: int) -> None:
        raise RuntimeError("no")

    return trace


def _check_parity(trace: Trace, jobs: dict[str, Job]) -> None:
    for name, (state, events, stopped) in PARITY.items():
        job = jobs[name]
        assert job.state is state, name
        assert trace.outcome(job.id) == events, name
        assert [w for i, w in trace.stopped if i == job.id] == stopped, name
        if name in RESULTS:
            assert job.result == RESULTS[name], name
        layers = [(layer, args) for layer, worker, args in trace.middleware if worker == name]
        expected = [("outer", {"n": 1})]
        if not name.startswith("middleware_"):
            expected.append(("inner", {"n": 1}))
        assert layers == expected, name  # each saw the decoded args, outermost first


async def test_each_outcome_on_a_node(fast_app: Shigoto) -> None:
    trace = _parity_app(fast_app)
    ids = {name: (await fast_app.enqueue(name, {"n": 1})).id for name in PARITY}
    await fast_app.start()
    async with asyncio.timeout(20):
        while not all(trace.outcome(i) == PARITY[n][1] for n, i in ids.items()):
            trace.ended.clear()
            await trace.ended.wait()
    await fast_app.stop()
    await fast_app.bus.settle()
    jobs = {name: await fast_app.get_job(i) for name, i in ids.items()}
    _check_parity(trace, jobs)  # type: ignore[arg-type]


async def test_each_outcome_in_drain_queue(app: Shigoto) -> None:
    trace = _parity_app(app)
    ids = {name: (await app.enqueue(name, {"n": 1})).id for name in PARITY}
    counts = await app.drain_queue()
    assert counts == {
        "completed": 3,
        "retryable": 4,
        "discarded": 2,
        "cancelled": 1,
        "snoozed": 2,
    }
    jobs = {name: await app.get_job(i) for name, i in ids.items()}
    _check_parity(trace, jobs)  # type: ignore[arg-type]


async def test_each_outcome_inline(app: Shigoto) -> None:
    trace = _parity_app(app)
    jobs: dict[str, Job] = {}
    with inline(app):
        for name in PARITY:
            try:
                jobs[name] = await app.enqueue(name, {"n": 1})
            except InlineJobFailed as failed:  # a failure is raised where it is enqueued
                jobs[name] = failed.job
    # Inline, a job that would run again is reported as it stands after its one run.
    _check_parity(trace, jobs)


# -- middleware ---------------------------------------------------------------------------------


async def test_global_middleware_is_outermost_in_registration_order(app: Shigoto) -> None:
    order: list[str] = []

    def layer(name: str, is_async: bool) -> Callable[..., Any]:
        if is_async:

            async def asynchronous(job: Job, call_next: Callable[[], Any]) -> object:
                order.append(f"{name}>")
                result = await call_next()
                order.append(f"<{name}")
                return result

            return asynchronous

        def synchronous(job: Job, call_next: Callable[[], Any]) -> object:
            order.append(f"{name}>")
            result = call_next()
            order.append(f"<{name}")
            return result

        return synchronous

    app.middleware(layer("g1", True))
    app.middleware(layer("g2", False))

    @app.worker(name="async_job", middleware=[layer("w1", True), layer("w2", False)])
    async def async_job() -> str:
        order.append("perform")
        return "a"

    @app.worker(name="sync_job", middleware=[layer("w1", False), layer("w2", False)])
    def sync_job() -> str:
        order.append("perform")
        return "s"

    await app.enqueue("async_job")
    assert (await app.drain_queue())["completed"] == 1
    # A sync layer around async code gets an awaitable from call_next: it returns it
    # before the code inside runs (see shigoto.pipeline), so its "after" comes first.
    assert order == ["g1>", "g2>", "<g2", "w1>", "w2>", "<w2", "perform", "<w1", "<g1"]
    order.clear()
    await app.enqueue("sync_job")
    assert (await app.drain_queue())["completed"] == 1
    # Around a plain function the sync layers (the app's g2 too: all inside it is sync)
    # run with it, in its thread, each around the next.
    assert order == ["g1>", "g2>", "w1>", "w2>", "perform", "<w2", "<w1", "<g2", "<g1"]


async def test_sync_middleware_around_a_plain_function_runs_in_its_thread(app: Shigoto) -> None:
    threads: dict[str, str] = {}

    def where(job: Job, call_next: Callable[[], Any]) -> object:
        threads["middleware"] = threading.current_thread().name
        return call_next()

    @app.worker(name="plain", middleware=[where])
    def plain() -> None:
        threads["perform"] = threading.current_thread().name

    await app.enqueue("plain")
    await app.drain_queue()
    assert threads["middleware"] == threads["perform"] != threading.current_thread().name


async def test_middleware_runs_inside_the_timeout_and_error_handling(app: Shigoto) -> None:
    async def slow(job: Job, call_next: Callable[[], Any]) -> object:
        await asyncio.sleep(10)
        return await call_next()

    def broken(job: Job, call_next: Callable[[], Any]) -> object:
        raise LookupError("middleware bug")

    @app.worker(name="slowed", timeout=0.05, max_attempts=1, middleware=[slow])
    async def slowed() -> None:
        pass

    @app.worker(name="broken", max_attempts=1, middleware=[broken])
    async def broken_job() -> None:
        pass

    a = await app.enqueue("slowed")
    b = await app.enqueue("broken")
    assert (await app.drain_queue())["discarded"] == 2
    timed_out, failed = await app.get_job(a.id), await app.get_job(b.id)
    assert timed_out is not None and timed_out.errors[-1]["error"] == "TimeoutError"
    assert failed is not None and failed.errors[-1]["error"] == "LookupError"
    assert failed.errors[-1]["message"] == "middleware bug"


async def test_a_sync_middleware_may_short_circuit_around_async_code(app: Shigoto) -> None:
    def cached(job: Job, call_next: Callable[[], Any]) -> object:
        return {"cached": True} if job.args.get("cached") else call_next()

    calls: list[int] = []

    @app.worker(name="fetch", middleware=[cached])
    async def fetch(cached: bool) -> object:
        calls.append(1)
        return {"cached": False}

    hit = await app.enqueue("fetch", {"cached": True})
    miss = await app.enqueue("fetch", {"cached": False})
    await app.drain_queue()
    assert (await app.get_job(hit.id)).result == {"cached": True}  # type: ignore[union-attr]
    assert (await app.get_job(miss.id)).result == {"cached": False}  # type: ignore[union-attr]
    assert calls == [1]


async def test_class_workers_take_middleware_as_a_class_attribute(app: Shigoto) -> None:
    seen: list[str] = []

    async def note(job: Job, call_next: Callable[[], Any]) -> object:
        seen.append(job.worker)
        return await call_next()

    @app.worker(name="classy")
    class Classy(Worker):
        middleware = [note]

        async def perform(self, job: Job) -> None:
            pass

    await app.enqueue("classy")
    await app.drain_queue()
    assert seen == ["classy"]
    assert Classy.middleware == (note,)


async def test_middleware_added_after_jobs_ran_applies_to_the_next(app: Shigoto) -> None:
    @app.worker(name="ok")
    async def ok() -> str:
        return "perform"

    first = await app.enqueue("ok")
    await app.drain_queue()

    @app.middleware
    async def replace(job: Job, call_next: Callable[[], Any]) -> object:
        await call_next()
        return "middleware"

    second = await app.enqueue("ok")
    await app.drain_queue()
    assert (await app.get_job(first.id)).result == "perform"  # type: ignore[union-attr]
    assert (await app.get_job(second.id)).result == "middleware"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("middleware", "message"),
    [
        ("not a function", "expected a function"),
        (lambda job: None, "must take two arguments"),
        (Worker, "expected a function"),
    ],
)
def test_bad_middleware_is_refused_at_registration(
    app: Shigoto, middleware: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        app.middleware(middleware)
    with pytest.raises(ConfigurationError, match=message):
        app.worker(name="w", middleware=[middleware])(lambda: None)


def test_a_worker_middleware_option_must_be_a_list(app: Shigoto) -> None:
    with pytest.raises(ConfigurationError, match="list of middleware"):
        app.worker(name="w", middleware=lambda job, call_next: None)(lambda: None)
