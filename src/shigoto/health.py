"""Health: is this app's database reachable, are jobs stuck, and is its node working?

    health = await app.health()          # or app.sync.health(); never raises
    health.status                        # "ok", "degraded" or "unhealthy"
    health.problems                      # what is wrong, one sentence each
    health.to_dict()                     # JSON values, as `shigoto health --json` prints

    probes = shigoto.health.asgi_app(app)  # GET /live and /ready, for Kubernetes probes

`unhealthy`: the database cannot be reached (or refuses the check: no schema, say).
`degraded`: it can, but something needs a look: jobs executing on a dead node (no node is
rescuing them), a pool with no free connection, or, where a node runs in this process, a
producer that is down (crashed, waiting to restart), a listener that is not connected where
it should listen, or a heartbeat older than half of `node_timeout`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from psycopg_pool.base import BasePool

from shigoto.admin import Status
from shigoto.db import faults
from shigoto.db import health as queries
from shigoto.db.health import StaleJobs
from shigoto.outcomes import PoolExhausted

if TYPE_CHECKING:
    from shigoto.config import Config
    from shigoto.db.database import Database, SyncDatabase
    from shigoto.db.queries import Queries
    from shigoto.runtime.node import Node

HealthStatus = Literal["ok", "degraded", "unhealthy"]
EXTRA_TIME = 2.0  # seconds a check may take beyond connect_timeout (its two statements)


@dataclass(frozen=True, slots=True)
class PoolHealth:
    """One connection pool: connections open (`size`), of which `idle`, and callers
    `waiting` for one."""

    size: int
    idle: int
    waiting: int
    max_size: int

    @classmethod
    def of(cls, pool: BasePool) -> PoolHealth:
        stats = pool.get_stats()
        return cls(
            stats.get("pool_size", 0),
            stats.get("pool_available", 0),
            stats.get("requests_waiting", 0),
            stats.get("pool_max", 0),
        )


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """The node running in this process.

    `producers`: queue -> whether its producer runs. `listener`: whether the LISTEN
    connection is up (None where the node does not listen). `leader`: whether this node
    holds the leader lease. `heartbeat_age`: seconds since its last heartbeat landed.
    """

    id: str
    producers: dict[str, bool]
    listener: bool | None
    leader: bool
    heartbeat_age: float | None


@dataclass(frozen=True, slots=True)
class Health:
    """What `app.health()` found; `status` sums it up, `problems` says why."""

    status: HealthStatus
    problems: tuple[str, ...]
    checked_at: datetime
    database: bool  # the check's statements ran
    pools: dict[str, PoolHealth] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # jobs by state, every queue
    stale_jobs: StaleJobs = field(default_factory=StaleJobs)
    node: NodeHealth | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON values (no job's args: ids and counts only)."""
        node = self.node
        return {
            "status": self.status,
            "problems": list(self.problems),
            "checked_at": self.checked_at.isoformat(),
            "database": self.database,
            "pools": {
                name: {
                    "size": p.size,
                    "idle": p.idle,
                    "waiting": p.waiting,
                    "max_size": p.max_size,
                }
                for name, p in self.pools.items()
            },
            "counts": dict(self.counts),
            "stale_jobs": {
                "count": self.stale_jobs.count,
                "oldest_age": self.stale_jobs.oldest_age,
                "sample": list(self.stale_jobs.sample),
            },
            "node": None
            if node is None
            else {
                "id": node.id,
                "producers": dict(node.producers),
                "listener": node.listener,
                "leader": node.leader,
                "heartbeat_age": node.heartbeat_age,
            },
        }


class _Facade(Protocol):
    @property
    def database(self) -> SyncDatabase: ...


class Checked(Protocol):
    """What a health check reads of its app (a `Shigoto`)."""

    @property
    def config(self) -> Config: ...
    @property
    def queries(self) -> Queries: ...
    @property
    def database(self) -> Database: ...
    @property
    def sync(self) -> _Facade: ...
    @property
    def node(self) -> Node | None: ...

    async def health(self, *, timeout: float | None = None) -> Health: ...


async def check_health(app: Checked, *, timeout: float | None = None) -> Health:
    """`app.health()`: the check, bounded by `timeout` seconds (default: `connect_timeout`
    plus 2 s); whatever goes wrong is reported in the result, never raised."""
    limit = app.config.connect_timeout + EXTRA_TIME if timeout is None else timeout
    operation = queries.snapshot(app.queries, node_timeout=app.config.node_timeout)
    found: tuple[Status, StaleJobs] | None = None
    error: BaseException | None = None
    try:
        async with asyncio.timeout(limit):
            found = await app.database.run(operation)
    except Exception as failure:  # a check reports, never raises
        error = failure
    return _assemble(app, found, error)


def check_health_sync(app: Checked) -> Health:
    """`app.sync.health()`: `check_health` for code that is not async, on the sync
    facade's connections."""
    operation = queries.snapshot(app.queries, node_timeout=app.config.node_timeout)
    found: tuple[Status, StaleJobs] | None = None
    error: BaseException | None = None
    try:
        found = app.sync.database.run(operation)
    except Exception as failure:  # a check reports, never raises
        error = failure
    return _assemble(app, found, error)


def _assemble(
    app: Checked, found: tuple[Status, StaleJobs] | None, error: BaseException | None
) -> Health:
    problems: list[str] = []
    unhealthy = False
    if isinstance(error, PoolExhausted):
        problems.append(f"no free connection in the app's pool: {error}")
    elif isinstance(error, TimeoutError):
        unhealthy = True
        problems.append("database: the check did not finish in time")
    elif error is not None:
        unhealthy = True
        problems.append(f"database: {faults.describe(error)}")
    counts: dict[str, int] = {}
    stale = StaleJobs()
    if found is not None:
        status, stale = found
        for queue in status.queues.values():
            for state, count in queue.counts.items():
                counts[state.value] = counts.get(state.value, 0) + count
        if stale.count:
            oldest = stale.oldest_age
            age = "" if oldest is None else f", the oldest claimed {oldest:.0f}s ago"
            problems.append(
                f"{stale.count} job(s) executing on a dead node{age}: no live node rescues them"
            )
    node = _node_health(app)
    if node is not None:
        problems.extend(_node_problems(app, node))
    return Health(
        status="unhealthy" if unhealthy else "degraded" if problems else "ok",
        problems=tuple(problems),
        checked_at=datetime.now(UTC),
        database=found is not None,
        pools=_pools(app),
        counts=counts,
        stale_jobs=stale,
        node=node,
    )


def _running_node(app: Checked) -> Node | None:
    node = app.node
    return node if node is not None and node.started else None


def _node_health(app: Checked) -> NodeHealth | None:
    node = _running_node(app)
    if node is None:
        return None
    notifier = node.notifier
    return NodeHealth(
        id=node.id,
        producers={
            queue: node.component_running(f"producer:{queue}") for queue in list(node.producers)
        },
        listener=None if notifier is None else notifier.connected.is_set(),
        leader=node.leader is not None and node.leader.is_leader,
        heartbeat_age=node.heartbeat_age,
    )


def _node_problems(app: Checked, node: NodeHealth) -> list[str]:
    problems = [
        f"the producer of queue {queue!r} is down (restarting after a crash)"
        for queue, alive in node.producers.items()
        if not alive
    ]
    if app.config.listens and not node.listener:
        problems.append("the listener is not connected: new jobs wait for a poll")
    half = app.config.node_timeout / 2
    if node.heartbeat_age is not None and node.heartbeat_age > half:
        problems.append(
            f"the last heartbeat landed {node.heartbeat_age:.1f}s ago (more than half of "
            f"node_timeout, {app.config.node_timeout:g}s)"
        )
    return problems


def _pools(app: Checked) -> dict[str, PoolHealth]:
    pools: dict[str, PoolHealth] = {}
    if app.database.opened_pool is not None:
        pools["app"] = PoolHealth.of(app.database.opened_pool)
    if app.sync.database.opened_pool is not None:
        pools["sync"] = PoolHealth.of(app.sync.database.opened_pool)
    node = _running_node(app)
    if node is not None and node._pool is not None:
        pools["node"] = PoolHealth.of(node._pool)
    return pools


# -- probes ---------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def asgi_app(app: Checked, *, ready_when_degraded: bool = True) -> ASGIApp:
    """A plain ASGI application answering liveness and readiness probes:

    GET /live    200 {"status": "ok"} whenever the process answers: it never asks the
                 database, so that an outage does not restart every worker at once
    GET /ready   the health check as JSON (`Health.to_dict()`): 200 when "ok" (and
                 "degraded", unless `ready_when_degraded=False`), 503 otherwise

    Serve it on the event loop of the app (`uvicorn.Server(uvicorn.Config(probes))`), or
    mount it in your web framework. Other paths answer 404.
    """

    async def probes(scope: Scope, send: Send) -> None:
        path = _path(scope)
        if path == "/live":
            await respond(send, 200, {"status": "ok"})
        elif path == "/ready":
            health = await app.health()
            ready = health.ok or (ready_when_degraded and health.status == "degraded")
            await respond(send, 200 if ready else 503, health.to_dict())
        else:
            await respond(send, 404, {"error": "not found: try /live or /ready"})

    return get_only(probes)


def get_only(answer: Callable[[Scope, Send], Awaitable[None]]) -> ASGIApp:
    """An ASGI app that answers a GET (or HEAD) with `answer(scope, send)`, any other
    method with 405, and an ASGI server's lifespan messages with nothing to do."""

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] != "http":
            return
        elif scope.get("method", "GET") not in ("GET", "HEAD"):
            await respond(send, 405, {"error": "GET only"})
        else:
            await answer(scope, send)

    return application


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI server's lifespan messages (nothing to start or stop)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _path(scope: Scope) -> str:
    """The path within the mount point (ASGI's `path` includes `root_path`)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def respond(
    send: Send,
    status: int,
    body: Mapping[str, Any] | bytes,
    content_type: bytes = b"application/json",
) -> None:
    """Send one whole HTTP response: a JSON document, or bytes as they are."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [(b"content-type", content_type), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


__all__ = ["Health", "NodeHealth", "PoolHealth", "asgi_app", "check_health", "check_health_sync"]
