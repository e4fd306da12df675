"""Observability: events, hooks, a live stream, JSON logs with the job on each line,
Prometheus metrics, an OpenTelemetry trace from the enqueue to the run, and health.

    python examples/observability.py      # SHIGOTO_DSN, or the embedded PostgreSQL

Needs the `prometheus` and `otel` extras, and opentelemetry-sdk for the exporter here
(`pip install 'shigoto[prometheus,otel]' opentelemetry-sdk`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import Counter

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest

from shigoto import Event, Job, Shigoto
from shigoto.contrib import opentelemetry, prometheus
from shigoto.logs import JobFields, JsonFormatter

app = Shigoto(schema="example_observability", poll_interval=0.2)

# Logs: one JSON object per line, with the job on the records made while it runs.
handler = logging.StreamHandler(sys.stdout)
handler.addFilter(JobFields())
handler.setFormatter(JsonFormatter())
log = logging.getLogger("example")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False

# Traces: an in-memory exporter here; an OTLP exporter in production.
spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
opentelemetry.instrument(app, tracer_provider=provider)

# Metrics: on a registry of our own here, prometheus_client's default one by default.
registry = CollectorRegistry()
metrics = prometheus.instrument(app, registry=registry)

seen: Counter[str] = Counter()


@app.on("job.*")
def count(event: Event) -> None:  # every job event of this process, at once
    seen[event.name] += 1


@app.on_job_stopped
def stopped(job: Job, will_retry: bool) -> None:
    print(f"stopped: job {job.id} ({job.worker}) is {job.state}, will_retry={will_retry}")


@app.worker(name="images.resize")
async def resize(path: str) -> str:
    log.info("resizing")  # this line carries job_id, worker, queue and attempt
    return f"resized {path}"


@app.worker(name="images.flaky", max_attempts=2, backoff=lambda attempt, error: 0)
async def flaky(path: str) -> None:
    log.warning("failing on purpose")
    raise RuntimeError("the image server is down")


async def main() -> None:
    await app.migrate()
    await app.start()
    async with app.events("job.*") as stream:  # a live stream of this process's events
        tracer = provider.get_tracer("example")
        with tracer.start_as_current_span("upload"):  # the request that enqueues
            await resize.enqueue({"path": "cat.png"})
            await flaky.enqueue({"path": "dog.png"})
        ended = 0
        async for event in stream:
            if event.name in ("job.completed", "job.discarded"):
                ended += 1
                print(f"event: {event.name} job {event.job_id} {dict(event.data)}")
            if ended == 2:
                break
    await app.bus.settle()  # the async subscribers have heard everything

    print("events seen:", dict(sorted(seen.items())))
    trace = {span.name: span for span in spans.get_finished_spans()}
    upload, run = trace["upload"], trace["process default"]
    assert run.context.trace_id == upload.context.trace_id  # the run joined the upload's trace
    print("spans:", sorted(trace), "- one trace:", f"{upload.context.trace_id:032x}")

    await metrics.refresh()
    text = generate_latest(registry).decode()
    for line in text.splitlines():
        if line.startswith(("shigoto_job_outcomes_total", "shigoto_jobs{")):
            print("metric:", line)

    health = await app.health()
    assert health.node is not None
    print(f"health: {health.status}, leader={health.node.leader}, counts={health.counts}")

    await app.stop()
    metrics.close()
    async with app.connection() as conn:  # leave nothing behind
        await conn.execute("DROP SCHEMA example_observability CASCADE")
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
