"""OpenTelemetry traces for shigoto (the `otel` extra: `pip install 'shigoto[otel]'`).

    from shigoto.contrib.opentelemetry import instrument

    instrument(app)                      # the global tracer provider, or tracer_provider=

    with tracer.start_as_current_span("signup"):
        await send_email.enqueue({"to": to})   # span "send emails" (PRODUCER), in "signup"
    # ... later, on any node: span "process emails" (CONSUMER), a child of "send emails"

Each insert call (`insert`, `insert_all`, `insert_many`, `enqueue`, async or sync) gets a
producer span, "send <queue>", and each run of a job a consumer span, "process <queue>",
following OpenTelemetry's messaging conventions: `messaging.system` "shigoto",
`messaging.destination.name` the queue, `messaging.operation.type` "send" or "process",
`messaging.message.id` the job's id (a bulk insert has `messaging.batch.message_count`
instead), and `shigoto.job.worker`, `shigoto.job.attempt` on a run.

The producer span's context travels in the job's `meta`, under "otel" (W3C `traceparent`,
with `tracestate` and baggage if any, written by the global propagator), so a run joins
the trace that enqueued it, whichever node runs it, however much later. A run that raises
records the exception and ends in error; one that ends with an outcome (`Snooze`,
`Cancel`, `Discard`, `RetryAfter`) has it in `shigoto.job.outcome`, and `Discard` and
`RetryAfter` end in error too; an interrupted run (its timeout, a shutdown) ends in error
"interrupted". Jobs the database inserts by itself (a batch's callback, a schedule's
firing) have no producer span: their runs start a trace of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from shigoto._version import __version__
from shigoto.job import Job, JobSpec
from shigoto.outcomes import Discard, Outcome, RetryAfter

if TYPE_CHECKING:
    from shigoto.app import Shigoto
    from shigoto.commands import Inserting

META_KEY = "otel"  # where a job's meta carries the trace context of its producer span
SYSTEM = "shigoto"

_instrumented: weakref.WeakSet[Shigoto] = weakref.WeakSet()


def instrument(app: Shigoto, tracer_provider: TracerProvider | None = None) -> None:
    """Trace `app`'s inserts and runs (once per app: a second call changes nothing).
    Instrument before the node starts, so that its first runs are traced too."""
    if app in _instrumented:
        return
    _instrumented.add(app)
    tracer = trace.get_tracer("shigoto", __version__, tracer_provider=tracer_provider)
    app.commands.around_insert(_producer(tracer))
    app.middleware(_consumer(tracer))


def _producer(
    tracer: trace.Tracer,
) -> Callable[[Inserting], contextlib.AbstractContextManager[None]]:
    @contextlib.contextmanager
    def send(inserting: Inserting) -> Iterator[None]:
        specs = inserting.specs
        queues = {spec.queue for spec in specs}
        queue = queues.pop() if len(queues) == 1 else None
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
        }
        if queue is not None:
            attributes["messaging.destination.name"] = queue
        if inserting.count != 1:
            attributes["messaging.batch.message_count"] = inserting.count
        name = "send" if queue is None else f"send {queue}"
        with tracer.start_as_current_span(
            name, kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)  # this span's context: the runs' parent
            if carrier:
                inserting.specs = [_carrying(spec, carrier) for spec in specs]
            yield
            if inserting.count == 1 and len(inserting.ids) == 1:
                span.set_attribute("messaging.message.id", str(inserting.ids[0]))

    return send


def _carrying(spec: JobSpec, carrier: dict[str, str]) -> JobSpec:
    return dataclasses.replace(spec, meta={**spec.meta, META_KEY: dict(carrier)})


def parent_context(job: Job) -> Any:
    """The trace context a job's producer span left in its meta (None if there is none)."""
    carrier = job.meta.get(META_KEY) if isinstance(job.meta, dict) else None
    if not isinstance(carrier, dict):
        return None
    return propagate.extract({k: v for k, v in carrier.items() if isinstance(v, str)})


def _consumer(tracer: trace.Tracer) -> Callable[[Job, Callable[[], Any]], Any]:
    async def process(job: Job, call_next: Callable[[], Any]) -> object:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": str(job.id),
            "shigoto.job.worker": job.worker,
            "shigoto.job.attempt": job.attempt,
        }
        with tracer.start_as_current_span(
            f"process {job.queue}",
            context=parent_context(job),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await call_next()
            except Outcome as outcome:
                _ended_with(span, outcome)
                raise
            except asyncio.CancelledError:
                span.set_status(Status(StatusCode.ERROR, "interrupted"))
                raise
            except BaseException as error:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise
            if isinstance(result, Outcome):
                _ended_with(span, result)
            elif isinstance(result, BaseException):  # returned rather than raised: a failure
                span.record_exception(result)
                span.set_status(Status(StatusCode.ERROR, type(result).__name__))
            return result

    return process


def _ended_with(span: trace.Span, outcome: Outcome) -> None:
    kind = type(outcome).__name__
    span.set_attribute("shigoto.job.outcome", kind)
    if isinstance(outcome, Discard | RetryAfter):
        span.set_status(Status(StatusCode.ERROR, kind))


__all__ = ["META_KEY", "instrument", "parent_context"]
