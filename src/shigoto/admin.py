"""The shapes of admin queries: filters in, pages and status out.

app.list_jobs(state="retryable", queue="emails")        # keywords of `ListWhere`
app.cancel_by(tags=["import-42"], states=["scheduled"])  # keywords of `BulkWhere`
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict, Unpack, get_type_hints

from shigoto import _validate as check
from shigoto.job import FINAL_STATES, Job, JobState, job_states
from shigoto.outcomes import InvalidJobError

CANCELLABLE_STATES = tuple(s for s in JobState if s not in FINAL_STATES)
RETRYABLE_STATES = (
    JobState.SCHEDULED,
    JobState.RETRYABLE,
    JobState.COMPLETED,
    JobState.DISCARDED,
    JobState.CANCELLED,
)

StrOrList = str | Iterable[str] | None
StateOrList = JobState | str | Iterable[JobState | str] | None


def _names(value: StrOrList, field: str, check_one: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [check_one(value, field)]
    if not isinstance(value, Iterable):
        raise InvalidJobError(
            field, f"must be a name or a list of names, got {type(value).__name__}"
        )
    return [check_one(item, field) for item in value]


class _Where(TypedDict, total=False):
    queue: StrOrList
    worker: StrOrList
    tags: Iterable[str] | None
    since: datetime | None
    until: datetime | None


class ListWhere(_Where, total=False):
    """The filter keywords of `list_jobs`, each optional: `state` (one or several),
    `queue` and `worker` (one name or several), `tags` (jobs carrying all of them),
    `since`/`until` (bounds on `inserted_at`)."""

    state: StateOrList


class BulkWhere(_Where, total=False):
    """The filter keywords of `cancel_by`, `retry_by` and `delete_by`: `queue`, `worker`,
    `tags`, `since`, `until` as in `ListWhere`, and `states`, the states to act on."""

    states: Iterable[JobState | str] | None


LIST_KEYWORDS = tuple(get_type_hints(ListWhere))
BULK_KEYWORDS = tuple(get_type_hints(BulkWhere))


def _known(where: _Where, keywords: tuple[str, ...]) -> None:
    """Refuse a keyword that is not one of `keywords`: `**where` takes any at run time,
    and a misspelt filter must not quietly match more jobs than meant."""
    for name in where:
        if name not in keywords:
            raise InvalidJobError(name, f"not a filter; the filters are {', '.join(keywords)}")


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs an admin call applies to; every criterion is optional.

    queue/worker accept one name or several; tags match jobs carrying all of them.
    """

    states: list[JobState] | None = None
    queues: list[str] | None = None
    workers: list[str] | None = None
    tags: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def build(cls, **where: Unpack[ListWhere]) -> JobFilter:
        """The filter of `list_jobs`'s keywords, each checked."""
        _known(where, LIST_KEYWORDS)
        return cls._of(where.get("state"), where)

    @classmethod
    def bulk(
        cls, allowed: Iterable[JobState], default: Iterable[JobState], /, **where: Unpack[BulkWhere]
    ) -> JobFilter:
        """The filter of a bulk call's keywords (`cancel_by`, `retry_by`, `delete_by`), each
        checked: at least one given, `states` among `allowed` (`default` when unset)."""
        _known(where, BULK_KEYWORDS)
        filter_ = cls._of(where.get("states"), where)
        if filter_.is_empty():
            *most, last = BULK_KEYWORDS
            raise InvalidJobError("filter", f"give at least one of {', '.join(most)} or {last}")
        return filter_.only_states(allowed, default)

    @classmethod
    def _of(cls, state: StateOrList, where: _Where) -> JobFilter:
        tags, since, until = where.get("tags"), where.get("since"), where.get("until")
        return cls(
            states=None if state is None else job_states(state),
            queues=_names(where.get("queue"), "queue", check.queue),
            workers=_names(where.get("worker"), "worker", check.worker_name),
            tags=None if tags is None else check.tags(tags),
            since=None if since is None else check.aware_datetime(since, "since"),
            until=None if until is None else check.aware_datetime(until, "until"),
        )

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))

    def only_states(self, allowed: Iterable[JobState], default: Iterable[JobState]) -> JobFilter:
        """This filter with its states checked against `allowed`, or `default` when unset."""
        allowed = tuple(allowed)
        if self.states is None:
            return dataclasses.replace(self, states=list(default))
        wrong = [s.value for s in self.states if s not in allowed]
        if wrong:
            names = ", ".join(s.value for s in allowed)
            raise InvalidJobError("states", f"{', '.join(wrong)} not allowed here (only {names})")
        return self

    def params(self) -> dict[str, Any]:
        return {
            "states": None if self.states is None else [s.value for s in self.states],
            "queues": self.queues,
            "workers": self.workers,
            "tags": self.tags,
            "since": self.since,
            "until": self.until,
        }


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of `list_jobs`, newest first; pass `next_cursor` as `after` for the next."""

    jobs: list[Job]
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class QueueStatus:
    name: str
    counts: dict[JobState, int] = field(default_factory=dict)
    oldest_available_age: float | None = None  # seconds the oldest due job has waited

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class Status:
    """Job counts by queue and state: `(await app.status()).queues["default"].counts`."""

    queues: dict[str, QueueStatus]

    def count(self, state: JobState | str, queue: str | None = None) -> int:
        state = JobState(state)
        chosen = self.queues.values() if queue is None else [self.queues.get(queue)]
        return sum(q.counts.get(state, 0) for q in chosen if q is not None)
