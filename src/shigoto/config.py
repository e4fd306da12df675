"""Configuration: one frozen dataclass, set by keyword or by `SHIGOTO_*` environment variables.

    config = Config.from_env(queues={"default": 10})   # keywords win over the environment

| variable                      | field                 |
|-------------------------------|-----------------------|
| SHIGOTO_DSN                   | dsn                   |
| SHIGOTO_SCHEMA                | schema                |
| SHIGOTO_HOME                  | home                  |
| SHIGOTO_QUEUES                | queues ("default=10,emails=5") |
| SHIGOTO_PREFETCH              | prefetch              |
| SHIGOTO_POLL_INTERVAL         | poll_interval         |
| SHIGOTO_POOL_MIN_SIZE         | pool_min_size         |
| SHIGOTO_POOL_MAX_SIZE         | pool_max_size         |
| SHIGOTO_CONNECT_TIMEOUT       | connect_timeout       |
| SHIGOTO_PREPARED_STATEMENTS   | prepared_statements   |
| SHIGOTO_NOTIFIER              | notifier              |
| SHIGOTO_LISTEN_DSN            | listen_dsn            |
| SHIGOTO_HEARTBEAT_INTERVAL    | heartbeat_interval    |
| SHIGOTO_RESCUE_AFTER          | rescue_after          |
| SHIGOTO_WATCHDOG_THRESHOLD    | watchdog_threshold ("off" turns it off) |
| SHIGOTO_SHUTDOWN_TIMEOUT      | shutdown_timeout      |
| SHIGOTO_STAGE_INTERVAL        | stage_interval        |
| SHIGOTO_LEADER_LEASE          | leader_lease          |
| SHIGOTO_FAIR_QUEUES           | fair_queues ("tenants,imports") |
| SHIGOTO_PRUNE_AFTER           | prune_after           |
| SHIGOTO_ARCHIVE_RETENTION     | archive_retention     |
| SHIGOTO_VACUUM_AFTER          | vacuum_after          |
| SHIGOTO_MAX_RESULT_BYTES      | max_result_bytes      |
| SHIGOTO_PROBE_INTERVAL        | probe_interval        |
| SHIGOTO_SYNC_THREADS          | sync_threads          |
| SHIGOTO_SCHEDULE_TICK         | schedule_tick         |
| SHIGOTO_QUEUE_WEIGHTS         | queue_weights ("default=1,emails=3") |
| SHIGOTO_PRUNE_INTERVAL        | prune_interval        |
| SHIGOTO_VACUUM_INTERVAL       | vacuum_interval       |

Every field but `cron` has its variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shigoto import _validate
from shigoto.outcomes import ConfigurationError, InvalidJobError

# The most `max_result_bytes` may be: far below what one jsonb value holds (256 MiB), so
# that the acker's batches of outcomes always fit in a statement.
MAX_RESULT_BYTES = 64 << 20
DEFAULT_MAX_RESULT_BYTES = 1 << 20


def parse_queues(text: str) -> dict[str, int]:
    """Parse `"default=10,emails=5"` into `{"default": 10, "emails": 5}`."""
    queues: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, limit = item.partition("=")
        if not sep or not limit.strip().isdigit():
            raise ConfigurationError(f"queues: expected NAME=LIMIT, got {item!r}")
        queues[name.strip()] = int(limit)
    return queues


def _count_or_off(text: str) -> int | None:
    return None if text.strip().lower() in ("", "off", "none") else int(text)


def _seconds_or_off(text: str) -> float | None:
    return None if text.strip().lower() in ("", "off", "none") else float(text)


def _flag(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"expected a true/false value, got {text!r}")


_ENV: dict[str, tuple[str, Any]] = {
    "dsn": ("SHIGOTO_DSN", str),
    "schema": ("SHIGOTO_SCHEMA", str),
    "home": ("SHIGOTO_HOME", Path),
    "queues": ("SHIGOTO_QUEUES", parse_queues),
    "prefetch": ("SHIGOTO_PREFETCH", int),
    "poll_interval": ("SHIGOTO_POLL_INTERVAL", float),
    "pool_min_size": ("SHIGOTO_POOL_MIN_SIZE", int),
    "pool_max_size": ("SHIGOTO_POOL_MAX_SIZE", int),
    "connect_timeout": ("SHIGOTO_CONNECT_TIMEOUT", float),
    "prepared_statements": ("SHIGOTO_PREPARED_STATEMENTS", _flag),
    "notifier": ("SHIGOTO_NOTIFIER", _flag),
    "listen_dsn": ("SHIGOTO_LISTEN_DSN", str),
    "heartbeat_interval": ("SHIGOTO_HEARTBEAT_INTERVAL", float),
    "rescue_after": ("SHIGOTO_RESCUE_AFTER", float),
    "watchdog_threshold": ("SHIGOTO_WATCHDOG_THRESHOLD", _seconds_or_off),
    "shutdown_timeout": ("SHIGOTO_SHUTDOWN_TIMEOUT", float),
    "stage_interval": ("SHIGOTO_STAGE_INTERVAL", float),
    "leader_lease": ("SHIGOTO_LEADER_LEASE", float),
    "prune_after": ("SHIGOTO_PRUNE_AFTER", float),
    "archive_retention": ("SHIGOTO_ARCHIVE_RETENTION", float),
    "vacuum_after": ("SHIGOTO_VACUUM_AFTER", _count_or_off),
    "max_result_bytes": ("SHIGOTO_MAX_RESULT_BYTES", int),
    "fair_queues": ("SHIGOTO_FAIR_QUEUES", lambda text: tuple(filter(None, text.split(",")))),
    "probe_interval": ("SHIGOTO_PROBE_INTERVAL", float),
    "sync_threads": ("SHIGOTO_SYNC_THREADS", int),
    "schedule_tick": ("SHIGOTO_SCHEDULE_TICK", float),
    "queue_weights": ("SHIGOTO_QUEUE_WEIGHTS", parse_queues),
    "prune_interval": ("SHIGOTO_PRUNE_INTERVAL", float),
    "vacuum_interval": ("SHIGOTO_VACUUM_INTERVAL", float),
}


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a `Shigoto` app is configured with.

    dsn: PostgreSQL connection string; None starts the embedded server in `home`.
    schema: the schema holding shigoto's tables (validated: `[a-z_][a-z0-9_]*`).
    queues: queue name -> concurrency limit on this node.
    prefetch: jobs each queue claims beyond its free slots, to wait on this node for one
        (0). For many short jobs: fewer, bigger claims. A prefetched job is claimed
        (`executing`), so no other node takes it; it returns to the queue, its attempt
        unused, if this node stops or pauses first.
    pool_min_size, pool_max_size: the app's connection pool (the API's calls, and
        `app.connection()` for your own work and your jobs'); a node has connections of
        its own besides, so jobs that hold these never hold up its claims and outcomes.
    connect_timeout: the longest a call waits for a pooled connection (seconds, 5): then
        it raises `DatabaseUnavailable` naming the last connection error (the server is
        down or unreachable) or `PoolExhausted` (the server answers, but every connection
        of the pool stayed in use). Each attempt to connect is bounded by it too (in
        whole seconds, at least 2), unless the DSN sets its own `connect_timeout`.
    prepared_statements: turn off behind PgBouncer in transaction pooling mode. Off, `dsn`
        carries no session state: no prepared statements, no session time zone (the pools'
        connections keep the server's rather than set UTC), and no LISTEN (only
        `listen_dsn` is listened on; without it nodes and `wait_for` poll).
    notifier: LISTEN for new jobs, signals and finished jobs (`wait_for`); off, nodes poll
        every `poll_interval` and `wait_for` polls too.
    listen_dsn: a direct connection for LISTEN when `dsn` goes through PgBouncer.
    heartbeat_interval: seconds between a node's heartbeats.
    rescue_after: a node silent this long is dead and its jobs are rescued
        (default: three heartbeats). A node's heartbeat runs in a thread of its own, on a
        connection of its own: a job that blocks the event loop or holds every pooled
        connection does not silence it.
    watchdog_threshold: a job (or any code) that holds the node's event loop longer than
        this many seconds without awaiting is named in a warning under `shigoto.watchdog`
        (1.0); None turns the watchdog off.
    shutdown_timeout: seconds running jobs get to finish when a node stops; the stop
        ends within this plus 3 s, even when the database does not answer.
    stage_interval: how often due scheduled and retryable jobs are made available.
    probe_interval: how often the listener is proven alive by a NOTIFY round trip.
    sync_threads: threads for plain-function (sync) workers (default: the sum of queue
        limits, at least 4).
    cron: schedules declared with the app: `(name, schedule, worker, args[, options])`
        tuples, where schedule is a cron expression or a `Cron`/`Every`/`Daily`/`Weekly`,
        worker a registered worker (or its name) and options job options plus `catch_up`.
    leader_lease: seconds a leader's lease lasts; a dead leader is replaced within it.
    schedule_tick: the longest the scheduler sleeps between passes (new schedules are
        seen within it).
    queue_weights: queue name -> weight; a queue of weight 3 is polled three times as
        often as one of weight 1 (default 1).
    fair_queues: queues claimed fairly across `partition_key`s (round-robin).
    prune_after: seconds after it finished that a job moves to the archive (14 days);
        None turns pruning off.
    archive_retention: seconds an archived job is kept before it is deleted (30 days).
    prune_interval: seconds between the leader's pruning passes.
    vacuum_after: dead row versions in `jobs` (beyond 1% of its live rows) at which the
        leader vacuums it, rather than wait for autovacuum (5,000); None turns it off.
    vacuum_interval: seconds between the leader's looks at the dead row count.
    max_result_bytes: the largest result a job may return, as JSON (1 MiB; at most 64 MiB).
        A larger one fails the run ("result could not be stored"), on the node, before it
        reaches the database. Results live in the jobs table, read back by `get_job`,
        `wait_for` and dependent jobs: keep big outputs elsewhere and return their key.

    Every duration is a finite number of seconds of at most 100 years.
    """

    dsn: str | None = None
    schema: str = "shigoto"
    home: Path = Path(".shigoto")
    queues: Mapping[str, int] = field(default_factory=lambda: {"default": 10})
    prefetch: int = 0
    poll_interval: float = 1.0
    pool_min_size: int = 1
    pool_max_size: int = 10
    connect_timeout: float = 5.0
    prepared_statements: bool = True
    notifier: bool = True
    listen_dsn: str | None = None
    heartbeat_interval: float = 30.0
    rescue_after: float | None = None
    watchdog_threshold: float | None = 1.0
    shutdown_timeout: float = 15.0
    stage_interval: float = 1.0
    probe_interval: float = 60.0
    sync_threads: int | None = None
    cron: tuple[tuple[Any, ...], ...] = ()
    leader_lease: float = 15.0
    schedule_tick: float = 1.0
    queue_weights: Mapping[str, int] = field(default_factory=dict)
    fair_queues: tuple[str, ...] = ()
    prune_after: float | None = 14 * 24 * 3600.0
    archive_retention: float = 30 * 24 * 3600.0
    prune_interval: float = 60.0
    vacuum_after: int | None = 5_000
    vacuum_interval: float = 1.0
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES

    def __post_init__(self) -> None:
        _validate.schema_name(self.schema)
        try:
            for name, limit in self.queues.items():
                _validate.queue(name, "queues")
                _validate.integer(limit, f"queues[{name!r}]", (1, 10_000))
            _validate.integer(self.prefetch, "prefetch", (0, 10_000))
            _validate.seconds(self.poll_interval, "poll_interval", allow_zero=False)
            _validate.integer(self.pool_min_size, "pool_min_size", (0, 1000))
            _validate.integer(self.pool_max_size, "pool_max_size", (1, 1000))
            _validate.seconds(self.connect_timeout, "connect_timeout", allow_zero=False)
            if self.connect_timeout > 3600:
                raise InvalidJobError("connect_timeout", "must be at most 3600 seconds")
            for name in ("heartbeat_interval", "stage_interval", "probe_interval"):
                _validate.seconds(getattr(self, name), name, allow_zero=False)
            _validate.seconds(self.shutdown_timeout, "shutdown_timeout")
            if self.rescue_after is not None:
                _validate.seconds(self.rescue_after, "rescue_after", allow_zero=False)
            if self.watchdog_threshold is not None:
                _validate.seconds(self.watchdog_threshold, "watchdog_threshold", allow_zero=False)
            if self.sync_threads is not None:
                _validate.integer(self.sync_threads, "sync_threads", (1, 10_000))
            if self.prune_after is not None:
                _validate.seconds(self.prune_after, "prune_after")
            for name in (
                "leader_lease",
                "schedule_tick",
                "archive_retention",
                "prune_interval",
                "vacuum_interval",
            ):
                _validate.seconds(getattr(self, name), name, allow_zero=False)
            if self.vacuum_after is not None:
                _validate.integer(self.vacuum_after, "vacuum_after", (0, 2**62))
            _validate.integer(self.max_result_bytes, "max_result_bytes", (1, MAX_RESULT_BYTES))
            for name, weight in self.queue_weights.items():
                _validate.queue(name, "queue_weights")
                _validate.integer(weight, f"queue_weights[{name!r}]", (1, 1000))
            for name in self.fair_queues:
                _validate.queue(name, "fair_queues")
        except InvalidJobError as error:
            raise ConfigurationError(str(error)) from None
        if self.pool_min_size > self.pool_max_size:
            raise ConfigurationError("pool_min_size: must not exceed pool_max_size")
        if self.rescue_after is not None and self.rescue_after <= self.heartbeat_interval:
            raise ConfigurationError(
                "rescue_after: must be longer than heartbeat_interval, "
                "or live nodes would be declared dead"
            )
        object.__setattr__(self, "queues", dict(self.queues))
        object.__setattr__(self, "queue_weights", dict(self.queue_weights))
        object.__setattr__(self, "fair_queues", tuple(self.fair_queues))
        object.__setattr__(self, "cron", tuple(tuple(entry) for entry in self.cron))

    @property
    def listens(self) -> bool:
        """Whether shigoto LISTENs (a node's notifier, `wait_for`): with `notifier` on, on
        `listen_dsn`, or on `dsn` unless prepared statements are off. A transaction pooler
        would leave a LISTEN on a server connection that other clients get next."""
        return self.notifier and (bool(self.listen_dsn) or self.prepared_statements)

    @property
    def node_timeout(self) -> float:
        """Seconds of silence after which a node counts as dead."""
        return self.rescue_after or 3 * self.heartbeat_interval

    @property
    def claim_window(self) -> float:
        """A node claims only if its last heartbeat is younger than this: one heartbeat
        before others would declare it dead."""
        return max(self.node_timeout - self.heartbeat_interval, self.heartbeat_interval)

    @property
    def thread_count(self) -> int:
        return self.sync_threads or max(4, sum(self.queues.values()))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Read `SHIGOTO_*` variables; keyword arguments win over them, None included (it
        turns off `prune_after`, `vacuum_after` and `watchdog_threshold`), except `dsn=None`,
        which leaves `SHIGOTO_DSN` in force."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (variable, convert) in _ENV.items():
            if environ.get(variable):
                try:
                    values[name] = convert(environ[variable])
                except (ValueError, ConfigurationError) as error:
                    raise ConfigurationError(f"{variable}: {error}") from None
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigurationError(
                f"unknown configuration option(s): {', '.join(sorted(unknown))}"
            )
        values.update({k: v for k, v in overrides.items() if v is not None or k != "dsn"})
        return cls(**values)
