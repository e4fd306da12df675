"""The chain a job runs through: the app's middleware (outermost first, in the order they
were registered), then its worker's, then `perform`.

    @app.middleware
    async def timing(job: Job, call_next) -> object:
        started = time.monotonic()
        try:
            return await call_next()
        finally:
            metrics.observe(job.worker, time.monotonic() - started)

    @app.worker(middleware=[needs_feature_flag])
    async def send_email(to: str) -> None: ...

A middleware is `(job, call_next)`, sync or async. It sees the job (its args decoded), and
may call `call_next()` to run the rest of the chain, change nothing and return what it
returned, or short-circuit: return a result itself (the job completes with it) or raise
or return an outcome (`Snooze`, `Cancel`, `Discard`, `RetryAfter`, any exception). The
chain runs inside the job's timeout and its error handling, as `perform` does, on a node,
in `drain_queue` and in inline mode.

Where a middleware runs: an async one on the event loop. A sync one runs in the job's
thread when everything inside it is sync (a plain-function worker and sync middleware):
there `call_next()` returns the result. Around anything async it runs on the event loop,
and `call_next()` returns an awaitable, which it must return (it is awaited for it): it can
look at the job, set things up or short-circuit, but to act after the job or catch its
errors, write it `async`.

A chain is composed once per worker, when its first job runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shigoto.job import Job
from shigoto.outcomes import ConfigurationError


class Worker(Protocol):
    """What the chain needs of a worker (`shigoto.Worker` is one)."""

    def perform(self, job: Job) -> object: ...


# A middleware: `middleware(job, call_next)`; `call_next()` runs the rest of the chain.
Middleware = Callable[[Job, Callable[[], Any]], Any]


def check_middleware(middleware: object, where: str = "middleware") -> Middleware:
    """`middleware` if it can be called as `middleware(job, call_next)`, else a
    `ConfigurationError` saying what is wrong."""
    if not callable(middleware) or isinstance(middleware, type):
        raise ConfigurationError(
            f"{where}: expected a function (job, call_next), got {middleware!r}"
        )
    try:
        inspect.signature(middleware).bind(None, None)
    except TypeError:
        name = getattr(middleware, "__qualname__", repr(middleware))
        raise ConfigurationError(
            f"{where}: {name} must take two arguments (job, call_next)"
        ) from None
    except ValueError:  # no signature to read (some builtins): trust it
        pass
    return middleware


def check_chain(middleware: object, where: str = "middleware") -> tuple[Middleware, ...]:
    """A worker's `middleware=` option: a list of middleware."""
    if callable(middleware) or isinstance(middleware, str | bytes) or middleware is None:
        raise ConfigurationError(f"{where}: expected a list of middleware, got {middleware!r}")
    try:
        items = list(middleware)  # type: ignore[call-overload]
    except TypeError:
        raise ConfigurationError(
            f"{where}: expected a list of middleware, got {middleware!r}"
        ) from None
    return tuple(check_middleware(item, f"{where}[{i}]") for i, item in enumerate(items))


def _is_async(function: object) -> bool:
    call = vars(type(function)).get("__call__")
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)


@dataclass(frozen=True, slots=True)
class Chain:
    """A worker's composed chain: `outer` runs on the event loop around `inner`; `inner`
    runs in a thread (a plain-function `perform` and the sync middleware right around it)
    if `in_thread`, else it is the async `perform` itself."""

    outer: tuple[Middleware, ...]
    inner: Callable[[Worker, Job], object]
    in_thread: bool
    # Per layer of `outer`: whether the layer inside it is a sync middleware, whose answer
    # may be a plain value (the others' are always awaitable).
    sync_inside: tuple[bool, ...] = ()
    # Where `perform` is async: the whole chain as one function of (worker, job), whose
    # answer is awaited until it is a value.
    entry: Callable[[Worker, Job], object] | None = None

    @property
    def plain(self) -> bool:
        """No middleware on the event loop: the run is `inner` alone."""
        return not self.outer


def compose(perform_in_thread: bool, middleware: Sequence[Middleware]) -> Chain:
    """The chain of `middleware` (outermost first) around a worker's `perform`."""
    outer = list(middleware)
    inner: Callable[[Worker, Job], object] = _perform
    if perform_in_thread:
        # The sync middleware right around a plain function run with it, in its thread.
        while outer and not _is_async(outer[-1]):
            inner = _around(outer.pop(), inner)
    sync_inside = (*(not _is_async(layer) for layer in outer[1:]), False)[: len(outer)]
    entry = None
    if not perform_in_thread:
        entry = inner
        for layer, settle in reversed(list(zip(outer, sync_inside, strict=True))):
            entry = _layer(layer, entry, settle)
    return Chain(tuple(outer), inner, perform_in_thread, sync_inside, entry)


def _layer(
    middleware: Middleware, inner: Callable[[Worker, Job], object], settle: bool
) -> Callable[[Worker, Job], object]:
    """`middleware` around `inner` on the event loop; `settle` where `inner` is a sync
    middleware, whose answer may be a plain value (`call_next()` must give an awaitable)."""
    if settle:

        def settled(worker: Worker, job: Job) -> object:
            return middleware(job, lambda: _settled(inner(worker, job)))

        return settled

    def call(worker: Worker, job: Job) -> object:
        return middleware(job, lambda: inner(worker, job))

    return call


def _perform(worker: Worker, job: Job) -> object:
    return worker.perform(job)


def _around(
    middleware: Middleware, inner: Callable[[Worker, Job], object]
) -> Callable[[Worker, Job], object]:
    def call(worker: Worker, job: Job) -> object:
        return middleware(job, lambda: inner(worker, job))

    return call


def start_outer(chain: Chain, job: Job, innermost: Callable[[], Any]) -> Any:
    """Start `chain.outer` around `innermost()` (the inner part, awaited or in a thread):
    the outermost layer's answer, a value or an awaitable (the caller awaits it until it
    is a value). On the event loop `call_next()` always returns an awaitable, whatever the
    layer inside returned (a sync middleware's short-circuit is a plain value)."""
    outer, sync_inside, last = chain.outer, chain.sync_inside, len(chain.outer)

    def call(i: int) -> Any:
        if i == last:
            return innermost()
        if sync_inside[i]:
            return outer[i](job, lambda: _settled(call(i + 1)))
        return outer[i](job, lambda: call(i + 1))

    return call(0)


async def _settled(result: Any) -> object:
    """`result`, awaited until it is a value (a sync middleware returns an awaitable)."""
    while inspect.isawaitable(result):
        result = await result
    return result
