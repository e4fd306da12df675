"""Prometheus metrics for shigoto (the `prometheus` extra: `pip install 'shigoto[prometheus]'`).

    from shigoto.contrib.prometheus import instrument

    metrics = instrument(app)            # on prometheus_client's default registry
    app_routes.mount("/metrics", metrics.asgi_app())   # an ASGI app, on the app's loop
    metrics.start_http_server(9100)      # or a server thread of its own

    shigoto worker myapp:app --metrics-port 9100       # the same, from the command line

What happens to jobs is counted as it happens, from the app's events (a sync subscriber:
a few dictionary look-ups per event, on the node's loop):

    shigoto_jobs_inserted_total{queue, worker}
    shigoto_job_outcomes_total{queue, worker, outcome}   completed, failed, retried,
        snoozed, discarded, cancelled, rescued (a failed run that will run again counts
        as "retried", one that will not as "failed"; a discarded job counts as "discarded"
        too, whether it failed for the last time or was discarded by its worker)
    shigoto_job_duration_seconds{queue, worker}          a histogram of run times
    shigoto_job_queue_wait_seconds{queue, worker}        from due to claimed, per claim
    shigoto_component_crashes_total{component}

What the database holds is read at scrape time, at most once per `status_interval`
seconds (one `status()` query: every node reports the same numbers, so aggregate them
with `max`), and what this process's node is doing, if one runs:

    shigoto_jobs{queue, state}                  jobs by queue and state
    shigoto_queue_oldest_available_seconds{queue}
    shigoto_database_up                         1 if the last status query succeeded
    shigoto_node_info{node, version, schema}    1 while a node runs in this process
    shigoto_node_running_jobs{queue}, shigoto_node_queue_limit{queue}
    shigoto_node_leader                         1 if this node holds the leader lease
    shigoto_node_heartbeat_age_seconds

The status query runs where the scrape does: through the app's async pool when the
scrape comes through `asgi_app()` (serve it on the event loop of the app), through the
sync facade's pool from a server thread (`start_http_server`, or your own exposition of
the registry off the event loop). A scrape on the event loop that did not come through
`asgi_app()` never blocks it: it shows the last numbers and refreshes them behind.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shigoto._version import __version__
from shigoto.admin import Status
from shigoto.events import Event, EventBus
from shigoto.health import ASGIApp, Scope, Send, get_only, respond

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from shigoto.app import Shigoto

logger = logging.getLogger("shigoto.prometheus")

# Run times and waits of background jobs: from milliseconds to an hour.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# The events counted; a subscription to each name, not to "*": the runtime builds no event
# that nobody subscribes to.
COUNTED = (
    "job.inserted",
    "job.claimed",
    "job.completed",
    "job.failed",
    "job.snoozed",
    "job.discarded",
    "job.cancelled",
    "job.rescued",
    "component.crashed",
)


class Metrics:
    """The metrics of one app, on `registry`; made by `instrument(app)`."""

    def __init__(
        self,
        app: Shigoto,
        *,
        registry: CollectorRegistry = REGISTRY,
        namespace: str = "shigoto",
        status_interval: float | None = 15.0,
        buckets: tuple[float, ...] = BUCKETS,
        bus: EventBus | None = None,
    ) -> None:
        self.app = app
        self.registry = registry
        self.status_interval = status_interval
        self._bus = app.bus if bus is None else bus
        labels = ("queue", "worker")
        self.inserted = Counter(
            "jobs_inserted", "Jobs inserted.", labels, namespace=namespace, registry=registry
        )
        self.outcomes = Counter(
            "job_outcomes",
            "Runs ended and jobs stopped, by outcome.",
            (*labels, "outcome"),
            namespace=namespace,
            registry=registry,
        )
        self.duration = Histogram(
            "job_duration_seconds",
            "How long runs took.",
            labels,
            namespace=namespace,
            registry=registry,
            buckets=buckets,
        )
        self.queue_wait = Histogram(
            "job_queue_wait_seconds",
            "How long jobs waited from due to claimed.",
            labels,
            namespace=namespace,
            registry=registry,
            buckets=buckets,
        )
        self.crashes = Counter(
            "component_crashes",
            "Crashes of a node's components (each restarted).",
            ("component",),
            namespace=namespace,
            registry=registry,
        )
        # Label children by label values: `.labels()` costs a lock and a check per call.
        self._children: dict[tuple[Any, ...], Any] = {}
        self._state = _StatusCollector(self, namespace)
        registry.register(self._state)
        for name in COUNTED:
            self._bus.subscribe(name, self._on_event)

    # -- events --------------------------------------------------------------------------------

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def _on_event(self, event: Event) -> None:
        name = event.name
        if name == "component.crashed":
            self._child(self.crashes, str(event.data.get("component", ""))).inc()
            return
        queue, worker = event.queue or "", event.worker or ""
        data = event.data
        if name == "job.inserted":
            self._child(self.inserted, queue, worker).inc()
            return
        if name == "job.claimed":
            wait = data.get("queue_wait")
            if wait is not None:
                self._child(self.queue_wait, queue, worker).observe(wait)
            return
        outcome = name[4:]  # "job.completed" -> "completed"
        if name == "job.failed" and data.get("will_retry"):
            outcome = "retried"
        self._child(self.outcomes, queue, worker, outcome).inc()
        duration = data.get("duration")
        if duration is not None:
            self._child(self.duration, queue, worker).observe(duration)

    def close(self) -> None:
        """Stop counting and take the metrics off the registry."""
        self._bus.unsubscribe(self._on_event)
        for metric in (
            self.inserted,
            self.outcomes,
            self.duration,
            self.queue_wait,
            self.crashes,
            self._state,
        ):
            self.registry.unregister(metric)

    # -- exposition ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the status now through the app's async pool, if it is older than
        `status_interval` (what `asgi_app()` does before each scrape)."""
        await self._state.refresh_async()

    def asgi_app(self) -> ASGIApp:
        """A plain ASGI app answering every GET with the registry in Prometheus' text
        format, its status read through the app's pool first: serve it on the app's loop."""
        registry = self.registry

        async def metrics(scope: Scope, send: Send) -> None:
            await self.refresh()
            body = generate_latest(registry)  # quick; on the loop, so no query blocks it
            await respond(send, 200, body, CONTENT_TYPE_LATEST.encode())

        return get_only(metrics)

    def start_http_server(self, port: int, addr: str = "0.0.0.0") -> WSGIServer:
        """Serve the registry on `addr:port` from a daemon thread (prometheus_client's
        server), every path; returns the server (`.server_port`, `.shutdown()`)."""
        from prometheus_client import start_http_server

        server, _ = start_http_server(port, addr, registry=self.registry)
        return server


class _StatusCollector(Collector):
    """The scrape-time metrics: jobs by queue and state (cached for `status_interval`) and
    this process's node."""

    def __init__(self, metrics: Metrics, namespace: str) -> None:
        self._metrics = metrics
        self._app = metrics.app
        self._ns = namespace
        self._status: Status | None = None
        self._read_at = -float("inf")  # monotonic time of the last attempt
        self._up = 0.0
        self._lock = threading.Lock()
        self._behind: asyncio.Task[None] | None = None

    def _due(self) -> bool:
        interval = self._metrics.status_interval
        return interval is not None and time.monotonic() - self._read_at >= interval

    def _store(self, status: Status | None) -> None:
        self._read_at = time.monotonic()
        self._status = status
        self._up = 0.0 if status is None else 1.0

    async def refresh_async(self) -> None:
        if not self._due():
            return
        self._read_at = time.monotonic()  # one query at a time, even while it runs
        try:
            status = await self._app.status()
        except Exception as error:
            logger.warning("metrics: the status query failed: %s", error)
            status = None
        self._store(status)

    def _refresh_here(self) -> None:
        """Called by a scrape: block for the query off the event loop; on it, start it
        behind and show what there is."""
        if not self._due():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            if self._behind is None or self._behind.done():
                self._behind = loop.create_task(self.refresh_async())
            return
        with self._lock:
            if not self._due():
                return
            try:
                status = self._app.sync.status()
            except Exception as error:
                logger.warning("metrics: the status query failed: %s", error)
                status = None
            self._store(status)

    def describe(self) -> Iterator[Metric]:
        """The metrics' names, for the registry (which would call `collect` without it, and
        so query the database as the collector is registered)."""
        ns = self._ns
        if self._metrics.status_interval is not None:
            for name in ("database_up", "jobs", "queue_oldest_available_seconds"):
                yield GaugeMetricFamily(f"{ns}_{name}", "")
        for name in (
            "node_info",
            "node_running_jobs",
            "node_queue_limit",
            "node_leader",
            "node_heartbeat_age_seconds",
        ):
            yield GaugeMetricFamily(f"{ns}_{name}", "")

    def collect(self) -> Iterator[Metric]:
        ns = self._ns
        if self._metrics.status_interval is not None:
            self._refresh_here()
            yield from self._status_metrics(ns)
        yield from self._node_metrics(ns)

    def _status_metrics(self, ns: str) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{ns}_database_up", "1 if the last status query succeeded.")
        up.add_metric([], self._up)
        yield up
        jobs = GaugeMetricFamily(
            f"{ns}_jobs", "Jobs by queue and state.", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            f"{ns}_queue_oldest_available_seconds",
            "Age of each queue's oldest available job.",
            labels=["queue"],
        )
        status = self._status
        if status is not None:
            for name, queue in sorted(status.queues.items()):
                for state, count in queue.counts.items():
                    jobs.add_metric([name, state.value], count)
                if queue.oldest_available_age is not None:
                    oldest.add_metric([name], queue.oldest_available_age)
        yield jobs
        yield oldest

    def _node_metrics(self, ns: str) -> Iterator[Metric]:
        node = self._app.node
        if node is None or not node.started:
            return
        info = GaugeMetricFamily(
            f"{ns}_node_info",
            "The node running in this process.",
            labels=["node", "version", "schema"],
        )
        info.add_metric([node.id, __version__, self._app.config.schema], 1)
        yield info
        producers: Mapping[str, Any] = dict(node.producers)
        running = GaugeMetricFamily(
            f"{ns}_node_running_jobs", "Jobs this node runs now.", labels=["queue"]
        )
        limit = GaugeMetricFamily(
            f"{ns}_node_queue_limit", "This node's concurrency limit.", labels=["queue"]
        )
        for name, producer in sorted(producers.items()):
            running.add_metric([name], len(producer.running))
            limit.add_metric([name], producer.limit)
        yield running
        yield limit
        leader = GaugeMetricFamily(f"{ns}_node_leader", "1 if this node holds the leader lease.")
        leader.add_metric([], 1 if node.leader is not None and node.leader.is_leader else 0)
        yield leader
        age = node.heartbeat_age
        if age is not None:
            beat = GaugeMetricFamily(
                f"{ns}_node_heartbeat_age_seconds", "Seconds since this node's last heartbeat."
            )
            beat.add_metric([], age)
            yield beat


def instrument(
    app: Shigoto,
    *,
    registry: CollectorRegistry = REGISTRY,
    namespace: str = "shigoto",
    status_interval: float | None = 15.0,
    buckets: tuple[float, ...] = BUCKETS,
) -> Metrics:
    """Count `app`'s jobs on `registry` (prometheus_client's default one unless given);
    `status_interval=None` leaves out the job counts read from the database."""
    return Metrics(
        app,
        registry=registry,
        namespace=namespace,
        status_interval=status_interval,
        buckets=buckets,
    )


__all__ = ["BUCKETS", "Metrics", "instrument"]
