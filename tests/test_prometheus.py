"""Prometheus metrics: real jobs on a real node (and in drain_queue), scraped over HTTP
from prometheus_client's server thread and from the ASGI app on uvicorn, parsed with
prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from shigoto import Cancel, Discard, JobSpec, Shigoto, Snooze
from shigoto.contrib.prometheus import instrument
from shigoto.events import Event
from tests.conftest import FAST, ROOT, app_settings, wait_until

WORKER = [sys.executable, "-m", "shigoto.cli", "worker"]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """GET `url` and parse it: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def register_workers(app: Shigoto) -> dict[str, Any]:
    snoozed: list[int] = []

    @app.worker
    async def fine() -> str:
        return "ok"

    @app.worker(max_attempts=2, backoff=lambda attempt, error: 0)
    async def broken() -> None:
        raise RuntimeError("always")

    @app.worker
    async def sleepy() -> None:
        if not snoozed:
            snoozed.append(1)
            raise Snooze(0)

    @app.worker
    async def quits() -> None:
        raise Cancel("not needed")

    @app.worker
    async def hopeless() -> None:
        raise Discard("bad input")

    return {"fine": fine, "broken": broken, "sleepy": sleepy, "quits": quits, "hopeless": hopeless}


async def insert_the_mix(workers: dict[str, Any]) -> None:
    for _ in range(3):
        await workers["fine"].enqueue()
    for name in ("broken", "sleepy", "quits", "hopeless"):
        await workers[name].enqueue()


def outcome(samples: Samples, worker: str, kind: str) -> float | None:
    return value(
        samples, "shigoto_job_outcomes_total", queue="default", worker=worker, outcome=kind
    )


async def test_a_nodes_jobs_are_counted_and_scraped_from_the_server_thread(
    fast_app: Shigoto,
) -> None:
    workers = register_workers(fast_app)
    metrics = instrument(fast_app, registry=CollectorRegistry(), status_interval=0)
    server = metrics.start_http_server(0, "127.0.0.1")
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        await insert_the_mix(workers)
        await fast_app.start()
        w = {name: worker.name for name, worker in workers.items()}

        async def all_ended() -> Samples | None:
            samples = await asyncio.to_thread(scrape, url)
            done = outcome(samples, w["hopeless"], "discarded") and outcome(
                samples, w["broken"], "discarded"
            )
            ends = [
                outcome(samples, w["fine"], "completed"),
                outcome(samples, w["sleepy"], "completed"),
            ]
            return (
                samples
                if done and ends == [3, 1] and outcome(samples, w["quits"], "cancelled")
                else None
            )

        samples = await wait_until(all_ended)
        assert isinstance(samples, dict)
    finally:
        server.shutdown()
    inserted = "shigoto_jobs_inserted_total"
    assert value(samples, inserted, queue="default", worker=w["fine"]) == 3
    assert value(samples, inserted, queue="default", worker=w["broken"]) == 1
    # The failing worker: one failed run retried, the last one failed, then discarded.
    assert outcome(samples, w["broken"], "retried") == 1
    assert outcome(samples, w["broken"], "failed") == 1
    assert outcome(samples, w["sleepy"], "snoozed") == 1
    assert outcome(samples, w["hopeless"], "failed") is None
    # Every run that completed or failed has its duration; every claim its queue wait.
    duration = "shigoto_job_duration_seconds_count"
    assert value(samples, duration, queue="default", worker=w["fine"]) == 3
    assert value(samples, duration, queue="default", worker=w["broken"]) == 2
    waits = "shigoto_job_queue_wait_seconds_count"
    assert value(samples, waits, queue="default", worker=w["broken"]) == 2
    assert value(samples, waits, queue="default", worker=w["sleepy"]) == 2
    # The database's counts, read at the scrape, and the node.
    assert value(samples, "shigoto_database_up") == 1
    assert value(samples, "shigoto_jobs", queue="default", state="completed") == 4
    assert value(samples, "shigoto_jobs", queue="default", state="discarded") == 2
    assert value(samples, "shigoto_jobs", queue="default", state="cancelled") == 1
    node = fast_app.node
    assert node is not None
    info = [k for k in samples if k[0] == "shigoto_node_info"]
    assert len(info) == 1 and ("node", node.id) in info[0][1]
    assert ("schema", fast_app.config.schema) in info[0][1]
    assert value(samples, "shigoto_node_queue_limit", queue="default") == 10
    assert value(samples, "shigoto_node_running_jobs", queue="default") == 0
    assert value(samples, "shigoto_node_heartbeat_age_seconds") is not None


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    """`await serve(asgi)`: the base URL of uvicorn serving `asgi` on this test's loop."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(asgi: Any) -> str:
        config = uvicorn.Config(asgi, host="127.0.0.1", port=0, lifespan="on", log_level="error")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())

        async def started() -> bool:
            return server.started

        await wait_until(started)
        servers.append((server, task))
        return f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


async def test_drain_queue_is_counted_and_served_by_the_asgi_app(app: Shigoto, serve: Any) -> None:
    workers = register_workers(app)
    metrics = instrument(app, registry=CollectorRegistry(), status_interval=0)
    base = await serve(metrics.asgi_app())
    await insert_the_mix(workers)
    before = await asyncio.to_thread(scrape, f"{base}/metrics")
    assert value(before, "shigoto_jobs", queue="default", state="available") == 7
    assert value(before, "shigoto_node_leader") is None  # no node runs in this process
    await app.drain_queue(with_scheduled=True)
    # An event nobody publishes in a test otherwise: a crash of a component.
    app.bus.publish(Event("component.crashed", 0.0, data={"component": "producer:default"}))
    samples = await asyncio.to_thread(scrape, f"{base}/metrics")
    w = {name: worker.name for name, worker in workers.items()}
    assert outcome(samples, w["fine"], "completed") == 3
    assert outcome(samples, w["broken"], "retried") == 1
    assert outcome(samples, w["broken"], "discarded") == 1
    assert outcome(samples, w["quits"], "cancelled") == 1
    assert value(samples, "shigoto_jobs", queue="default", state="available") is None
    assert value(samples, "shigoto_jobs", queue="default", state="completed") == 4
    crashes = "shigoto_component_crashes_total"
    assert value(samples, crashes, component="producer:default") == 1
    metrics.close()  # off the bus and the registry
    await workers["fine"].enqueue()
    await app.drain_queue()
    assert outcome(samples, w["fine"], "completed") == 3


async def test_the_status_is_read_at_most_once_per_interval(app: Shigoto, serve: Any) -> None:
    metrics = instrument(app, registry=CollectorRegistry(), status_interval=3600)
    base = await serve(metrics.asgi_app())
    await app.insert(JobSpec.build("elsewhere"))
    first = await asyncio.to_thread(scrape, f"{base}/metrics")
    await app.insert(JobSpec.build("elsewhere"))
    second = await asyncio.to_thread(scrape, f"{base}/metrics")
    assert value(first, "shigoto_jobs", queue="default", state="available") == 1
    assert value(second, "shigoto_jobs", queue="default", state="available") == 1  # cached


async def test_a_database_that_cannot_be_reached_is_database_up_0(schema: str, serve: Any) -> None:
    app = Shigoto(dsn="postgresql://postgres@127.0.0.1:9/nowhere", schema=schema, connect_timeout=1)
    try:
        metrics = instrument(app, registry=CollectorRegistry(), status_interval=0)
        base = await serve(metrics.asgi_app())
        samples = await asyncio.to_thread(scrape, f"{base}/metrics")
        assert value(samples, "shigoto_database_up") == 0
        assert not [k for k in samples if k[0] == "shigoto_jobs"]
    finally:
        await app.close()


async def test_shigoto_worker_serves_metrics_on_its_port(
    dsn: str, schema: str, app: Shigoto, ledger: Any
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {**FAST, **app_settings(dsn), "schema": schema}
    environment = {
        **os.environ,
        **{f"SHIGOTO_{k.upper()}": str(v) for k, v in settings.items()},
        # This checkout's sources first, when the tests run with PYTHONPATH=src.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [*WORKER, "tests.nodeapp:app", "--metrics-port", str(port)],
        env=environment,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        job = await app.insert(JobSpec.build("ledger.noop"))
        await app.wait_for(job.id, timeout=30)

        async def counted() -> Samples | None:
            try:
                samples = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
            except OSError:
                return None
            completed = outcome(samples, "ledger.noop", "completed")
            return samples if completed == 1 else None

        samples = await wait_until(counted, timeout=30)
        assert isinstance(samples, dict)
        assert [k for k in samples if k[0] == "shigoto_node_info"]
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors.decode()
