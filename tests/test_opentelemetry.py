"""OpenTelemetry: producer spans around inserts, consumer spans around runs, one trace
from the enqueuing span to every run; real jobs on a real node and in drain_queue, spans
collected by the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shigoto import Discard, JobSpec, JobState, Shigoto, Snooze
from shigoto.contrib.opentelemetry import META_KEY, instrument
from shigoto.outcomes import DatabaseUnavailable
from shigoto.testing import inline
from tests.conftest import wait_until


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


async def test_a_run_on_a_node_joins_the_trace_that_enqueued_it(
    fast_app: Shigoto, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced
    tracer = provider.get_tracer("test")
    instrument(fast_app, tracer_provider=provider)

    @fast_app.worker(queue="mail")
    async def send_mail(to: str) -> str:
        with tracer.start_as_current_span("smtp"):
            return f"sent to {to}"

    @fast_app.worker(queue="mail")
    def resize(path: str) -> None:  # a plain function, in a thread
        with tracer.start_as_current_span("pillow"):
            pass

    with tracer.start_as_current_span("signup") as signup:
        mail = await send_mail.enqueue({"to": "ada@example.com"})
        image = await resize.enqueue({"path": "a.png"})
    assert set(mail.meta[META_KEY]) == {"traceparent"}
    await fast_app.start(queues={"mail": 2})
    for job in (mail, image):
        done = await fast_app.wait_for(job.id, timeout=30)
        assert done.state is JobState.COMPLETED

    async def spans_ended() -> bool:
        return len(named(exporter, "process mail")) == 2

    await wait_until(spans_ended)
    trace_id = signup.get_span_context().trace_id
    sends = named(exporter, "send mail")
    assert len(sends) == 2
    for send in sends:
        assert send.kind is SpanKind.PRODUCER
        assert send.context.trace_id == trace_id
        assert parent_id(send) == signup.get_span_context().span_id
    by_id = {send.attributes["messaging.message.id"]: send for send in sends}  # type: ignore[index]
    assert set(by_id) == {str(mail.id), str(image.id)}
    send_attributes = dict(by_id[str(mail.id)].attributes or {})
    assert send_attributes == {
        "messaging.system": "shigoto",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": "mail",
        "messaging.message.id": str(mail.id),
    }
    runs = {
        span.attributes["messaging.message.id"]: span for span in named(exporter, "process mail")
    }  # type: ignore[index]
    for job, inner in ((mail, "smtp"), (image, "pillow")):
        run = runs[str(job.id)]
        assert run.kind is SpanKind.CONSUMER
        assert run.context.trace_id == trace_id  # the enqueuer's trace
        assert parent_id(run) == by_id[str(job.id)].context.span_id
        assert run.status.status_code is StatusCode.UNSET
        assert dict(run.attributes or {}) == {
            "messaging.system": "shigoto",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": "mail",
            "messaging.message.id": str(job.id),
            "shigoto.job.worker": job.worker,
            "shigoto.job.attempt": 1,
        }
        (child,) = named(exporter, inner)  # the job's own span, async or in its thread
        assert parent_id(child) == run.context.span_id


async def test_failures_outcomes_and_interruptions_in_drain_queue(
    app: Shigoto, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced
    instrument(app, tracer_provider=provider)
    snoozed: list[int] = []

    @app.worker(max_attempts=2, backoff=lambda attempt, error: 0)
    async def broken() -> None:
        raise RuntimeError("always")

    @app.worker
    async def sleepy() -> None:
        if not snoozed:
            snoozed.append(1)
            raise Snooze(0)

    @app.worker
    async def hopeless() -> None:
        raise Discard("bad input")

    @app.worker(timeout=0.05, max_attempts=1)
    async def slow() -> None:
        await asyncio.sleep(5)

    jobs = {w.name: await w.enqueue() for w in (broken, sleepy, hopeless, slow)}
    await app.drain_queue(with_scheduled=True)
    runs: dict[str, list[ReadableSpan]] = {}
    for span in named(exporter, "process default"):
        runs.setdefault(str(span.attributes["shigoto.job.worker"]), []).append(span)  # type: ignore[index]
    sends = {s.attributes["messaging.message.id"]: s for s in named(exporter, "send default")}  # type: ignore[index]

    first, second = sorted(runs[broken.name], key=lambda s: s.attributes["shigoto.job.attempt"])  # type: ignore[arg-type, index]
    for run in (first, second):  # both attempts are children of the one producer span
        assert run.status.status_code is StatusCode.ERROR
        assert run.status.description == "RuntimeError"
        assert [e.name for e in run.events] == ["exception"]
        assert run.events[0].attributes["exception.message"] == "always"  # type: ignore[index]
        assert parent_id(run) == sends[str(jobs[broken.name].id)].context.span_id
    assert (first.attributes["shigoto.job.attempt"], second.attributes["shigoto.job.attempt"]) == (
        1,
        2,
    )  # type: ignore[index]

    snooze, rerun = runs[sleepy.name]
    assert snooze.attributes["shigoto.job.outcome"] == "Snooze"  # type: ignore[index]
    assert snooze.status.status_code is StatusCode.UNSET
    assert "shigoto.job.outcome" not in (rerun.attributes or {})

    (discarded,) = runs[hopeless.name]
    assert discarded.attributes["shigoto.job.outcome"] == "Discard"  # type: ignore[index]
    assert discarded.status.status_code is StatusCode.ERROR

    (timed_out,) = runs[slow.name]
    assert (timed_out.status.status_code, timed_out.status.description) == (
        StatusCode.ERROR,
        "interrupted",
    )
    assert (await app.get_job(jobs[slow.name].id)).state is JobState.DISCARDED  # type: ignore[union-attr]


async def test_bulk_and_sync_inserts_have_producer_spans(
    app: Shigoto, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced
    instrument(app, tracer_provider=provider)
    instrument(app, tracer_provider=provider)  # a second call changes nothing
    mixed = await app.insert_all(
        [JobSpec.build("a", queue="one"), JobSpec.build("b", queue="two"), JobSpec.build("c")]
    )
    ids = await app.insert_many(JobSpec.build("d", queue="bulk"), [{"n": 1}, {"n": 2}])
    alone = await asyncio.to_thread(app.sync.insert, JobSpec.build("e", queue="sync"))
    (several,) = named(exporter, "send")
    assert dict(several.attributes or {}) == {
        "messaging.system": "shigoto",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.batch.message_count": 3,
    }
    (bulk,) = named(exporter, "send bulk")
    assert bulk.attributes["messaging.batch.message_count"] == 2  # type: ignore[index]
    (one,) = named(exporter, "send sync")
    assert one.attributes["messaging.message.id"] == str(alone.id)  # type: ignore[index]
    # Every job carries its producer span's context, as stored.
    for job_id, span in [*((j.id, several) for j in mixed), *((i, bulk) for i in ids)]:
        stored = await app.get_job(job_id)
        assert stored is not None
        traceparent = stored.meta[META_KEY]["traceparent"]
        assert f"{span.context.span_id:016x}" in traceparent
        assert f"{span.context.trace_id:032x}" in traceparent


async def test_an_insert_that_fails_ends_its_span_in_error(
    schema: str, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced
    app = Shigoto(dsn="postgresql://postgres@127.0.0.1:9/nowhere", schema=schema, connect_timeout=1)
    instrument(app, tracer_provider=provider)
    try:
        with pytest.raises(DatabaseUnavailable):
            await app.insert(JobSpec.build("a"))
    finally:
        await app.close()
    (span,) = named(exporter, "send default")
    assert span.status.status_code is StatusCode.ERROR
    assert [e.attributes["exception.type"] for e in span.events] == [  # type: ignore[index]
        "shigoto.outcomes.DatabaseUnavailable"
    ]
    assert "messaging.message.id" not in (span.attributes or {})


async def test_a_job_enqueued_without_a_trace_starts_its_own(
    app: Shigoto, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced

    @app.worker
    async def plain() -> None:
        pass

    job = await plain.enqueue()  # before instrumenting: no context in its meta
    assert META_KEY not in job.meta
    instrument(app, tracer_provider=provider)
    await app.drain_queue()
    (run,) = named(exporter, "process default")
    assert run.parent is None
    assert run.attributes["messaging.message.id"] == str(job.id)  # type: ignore[index]


async def test_inline_mode_runs_the_job_inside_its_producer_span(
    app: Shigoto, traced: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = traced
    instrument(app, tracer_provider=provider)

    @app.worker
    async def hello() -> str:
        return "hi"

    with inline(app):
        job = await hello.enqueue()
    assert job.state is JobState.COMPLETED
    (send,) = named(exporter, "send default")
    (run,) = named(exporter, "process default")
    assert parent_id(run) == send.context.span_id
    assert send.attributes["messaging.message.id"] == str(job.id)  # type: ignore[index]
