"""Jobs as rows (`Job`), jobs about to be inserted (`JobSpec`), and their states."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shigoto import _validate as check
from shigoto.features.unique import Unique, as_unique
from shigoto.outcomes import InvalidJobError


class JobState(enum.StrEnum):
    """The life-cycle states of a job; also the values of the `state` column."""

    SCHEDULED = "scheduled"  # waiting for its scheduled_at
    AVAILABLE = "available"  # ready to be claimed
    EXECUTING = "executing"  # claimed by a node
    RETRYABLE = "retryable"  # failed, waiting out its backoff
    COMPLETED = "completed"
    DISCARDED = "discarded"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    WAITING = "waiting"  # on dependencies or sub-jobs

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.COMPLETED, JobState.DISCARDED, JobState.CANCELLED})


def job_states(value: object, field: str = "state") -> list[JobState]:
    """Accept one state or several, as `JobState` or its string value."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple | set | frozenset):
        raise InvalidJobError(field, "must be a job state or a list of job states")
    states = []
    for item in items:
        try:
            states.append(JobState(item))
        except ValueError:
            known = ", ".join(s.value for s in JobState)
            raise InvalidJobError(field, f"{item!r} is not a job state (one of {known})") from None
    return states


@dataclass(slots=True)
class Job:
    """One row of `shigoto.jobs`: a job as the database knows it, when it was read.

    job = await app.get_job(42)
    job.state, job.attempt, job.errors[-1]["message"]

    A snapshot: changing it changes nothing in the database. (Not a frozen dataclass: a
    busy node builds one per claimed job, and a frozen one costs nine times as much to
    build, 2.5 µs against 0.3 µs for its 28 fields.)
    """

    id: int
    state: JobState
    queue: str
    worker: str
    args: dict[str, Any]
    meta: dict[str, Any]
    tags: list[str]
    priority: int
    attempt: int
    max_attempts: int
    errors: list[dict[str, Any]]
    result: Any
    progress: float
    inserted_at: datetime
    scheduled_at: datetime
    attempted_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None
    discarded_at: datetime | None
    attempted_by: str | None
    heartbeat_at: datetime | None
    unique_key: str | None
    partition_key: str | None
    batch_id: int | None
    depends_on: list[int]
    parent_id: int | None
    origin: str | None
    conflict: bool = False  # True when a unique insert returned an existing job

    @classmethod
    def from_spec(
        cls,
        spec: JobSpec,
        id: int,
        state: JobState,
        inserted_at: datetime,
        scheduled_at: datetime,
        depends_on: list[int] | None = None,
    ) -> Job:
        """The job a spec becomes once inserted (the database fills in the rest)."""
        # Positional, in field order: a bulk insert builds tens of thousands of these, and
        # keyword arguments cost a quarter more.
        return cls(
            id,
            state,
            spec.queue,
            spec.worker,
            spec.args,
            spec.meta,
            spec.tags,
            spec.priority,
            0,  # attempt
            spec.max_attempts,
            [],  # errors
            None,  # result
            0.0,  # progress
            inserted_at,
            scheduled_at,
            None,  # attempted_at
            None,  # completed_at
            None,  # cancelled_at
            None,  # discarded_at
            None,  # attempted_by
            None,  # heartbeat_at
            None,  # unique_key
            spec.partition_key,
            None,  # batch_id
            depends_on or [],
            None,  # parent_id
            spec.origin,
        )


# The columns of shigoto.jobs a Job holds, in the order of its fields.
JOB_COLUMNS = tuple(name for name in Job.__dataclass_fields__ if name != "conflict")

# The state for a `state` column value: a dict lookup, several times cheaper than the enum's
# call, which runs for every job a claim or a bulk insert returns.
STATE_OF: dict[str, JobState] = {state.value: state for state in JobState}


DEFAULT_QUEUE = "default"  # a valid queue name: `build` takes this very string unchecked


@dataclass(slots=True)
class JobSpec:
    """A job ready to insert: made by `Worker.new`, checked when made.

    spec = send_email.new({"to": "a@b.c"}, priority=10, scheduled_in=60)
    job = await app.insert(spec)

    Treat it as a value: for another job, make another spec with `Worker.new` (which
    checks it) rather than changing this one's fields (which checks nothing). (Not a frozen
    dataclass: a frozen one sets each field through `object.__setattr__`, which cost more
    than all of `build`'s checks together: 20,000 instructions against 3,000 for a plain
    one, for every job inserted one by one.)
    """

    worker: str
    args: dict[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_attempts: int = 3
    scheduled_at: datetime | None = None
    tags: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    partition_key: str | None = None
    origin: str | None = None
    unique: Unique | None = None
    # Existing job ids, and in `insert_all` other specs of the same call (the spec itself or
    # `Ref(position)`): the job waits until all of them complete.
    depends_on: tuple[int | JobSpec | Ref, ...] = ()
    on_dependency_failure: str = "cancel"  # or "run": run even if a dependency failed

    @classmethod
    def build(
        cls,
        worker: str,
        args: object = None,
        *,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int = 3,
        scheduled_at: datetime | None = None,
        scheduled_in: float | timedelta | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
        meta: Mapping[str, Any] | None = None,
        partition_key: str | None = None,
        origin: str | None = None,
        unique: Unique | bool | None = None,
        depends_on: Iterable[int | JobSpec | Ref] | None = None,
        on_dependency_failure: str = "cancel",
    ) -> JobSpec:
        """Validate every field and return the spec; raises `InvalidJobError` on bad input."""
        if scheduled_at is not None and scheduled_in is not None:
            raise InvalidJobError("scheduled_at", "give scheduled_at or scheduled_in, not both")
        when: datetime | None = None
        if scheduled_at is not None:
            when = check.aware_datetime(scheduled_at, "scheduled_at")
        elif scheduled_in is not None:
            when = datetime.now(UTC) + timedelta(
                seconds=check.seconds(scheduled_in, "scheduled_in")
            )
        # Positional, in field order: cheaper than keyword arguments.
        return cls(
            check.worker_name(worker),
            check.json_object({} if args is None else args, "args"),
            queue if queue is DEFAULT_QUEUE else check.queue(queue),
            check.priority(priority),
            check.max_attempts(max_attempts),
            when,
            check.tags(tags) if tags else [],
            {} if meta is None else check.json_object(meta, "meta"),
            None
            if partition_key is None
            else check.text(partition_key, "partition_key", max_length=check.MAX_NAME_LENGTH),
            None
            if origin is None
            else check.text(origin, "origin", max_length=check.MAX_NAME_LENGTH),
            None if unique is None else as_unique(unique),
            () if depends_on is None else _dependencies(depends_on),
            "cancel"
            if on_dependency_failure == "cancel"
            else _dependency_policy(on_dependency_failure),
        )


@dataclass(frozen=True, slots=True)
class Ref:
    """In `insert_all`, the job at this position of the same call: `depends_on=[Ref(0)]`."""

    position: int

    def __post_init__(self) -> None:
        check.integer(self.position, "depends_on", (0, 10_000_000))


def _dependencies(value: Iterable[int | JobSpec | Ref] | None) -> tuple[int | JobSpec | Ref, ...]:
    if value is None:
        return ()
    if isinstance(value, int | JobSpec | Ref | str):
        raise InvalidJobError("depends_on", "expected a list of job ids, specs or Refs")
    items = tuple(value)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | JobSpec | Ref):
            raise InvalidJobError(
                "depends_on", f"expected job ids, specs or Refs, got {check.shown(item)}"
            )
        if isinstance(item, int) and not check.JOB_ID_RANGE[0] <= item <= check.JOB_ID_RANGE[1]:
            raise InvalidJobError("depends_on", f"{check.shown(item)} is not a job id")
    return tuple(dict.fromkeys(items)) if all(isinstance(i, int) for i in items) else items


def _dependency_policy(value: object) -> str:
    if value not in ("cancel", "run"):
        raise InvalidJobError("on_dependency_failure", f"expected 'cancel' or 'run', got {value!r}")
    return str(value)
